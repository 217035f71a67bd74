//! The one wrapper through which jetship runs external programs (runc, crun, conmon, ...). Its error carries the
//! program, its arguments and the trimmed stderr, so a failure is readable without a debugger.
//!
//! Owns nothing else: callers decide what to run and what a failure means.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Most stderr kept in an error message.
const STDERR_KEEP: usize = 2000;

/// An external program failed to start or exited non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run `{program} {args}`: {source}")]
    Spawn {
        program: PathBuf,
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program} {args}` failed ({status}): {stderr}")]
    Failed { program: PathBuf, args: String, status: String, stderr: String },
    #[error("`{program} {args}` did not finish within {limit:?} and was killed")]
    TimedOut { program: PathBuf, args: String, limit: std::time::Duration },
}

pub type Result<T> = std::result::Result<T, Error>;

fn render_args<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

/// Trims a program's stderr to its last lines, the part that says what went wrong.
pub(crate) fn trim_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.len() <= STDERR_KEEP {
        return text.to_owned();
    }
    let mut cut = text.len() - STDERR_KEEP;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("...{}", &text[cut..])
}

/// Runs `program args...` to completion with no stdin and returns its output; a non-zero exit is an error.
pub fn run<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> Result<Output> {
    let output = Command::new(program).args(args).stdin(Stdio::null()).output().map_err(|source| Error::Spawn {
        program: program.to_path_buf(),
        args: render_args(args),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Failed {
            program: program.to_path_buf(),
            args: render_args(args),
            status: output.status.to_string(),
            stderr: trim_stderr(&output.stderr),
        })
    }
}

/// [`run`] for async callers, bounded in time: the program (and its stdin, /dev/null) gets `limit`, then it is
/// killed. Its output is read whole: use it for programs that print a few lines.
pub(crate) async fn run_limited<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    limit: std::time::Duration,
) -> Result<Output> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let output = match tokio::time::timeout(limit, cmd.output()).await {
        Err(_) => return Err(Error::TimedOut { program: program.to_path_buf(), args: render_args(args), limit }),
        Ok(r) => {
            r.map_err(|source| Error::Spawn { program: program.to_path_buf(), args: render_args(args), source })?
        }
    };
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Failed {
            program: program.to_path_buf(),
            args: render_args(args),
            status: output.status.to_string(),
            stderr: trim_stderr(if output.stderr.is_empty() { &output.stdout } else { &output.stderr }),
        })
    }
}

/// Binary directories searched for runtimes and tools, in order.
pub(crate) const BIN_DIRS: &[&str] = &["/usr/bin", "/usr/local/bin", "/usr/sbin"];

/// The first executable regular file called `name` in `dirs` under `root`, as a host path (not prefixed by the
/// root): what the host would run.
pub(crate) fn find_program(root: &Path, name: &str, dirs: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter().map(|d| Path::new(d).join(name)).find(|p| {
        std::fs::metadata(crate::os::fsutil::under_root(root, &p.to_string_lossy()))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_program_args_and_stderr() {
        let err = run(Path::new("/bin/sh"), &["-c", "echo boom >&2; exit 3"]).unwrap_err().to_string();
        assert!(err.contains("/bin/sh -c") && err.contains("boom") && err.contains("3"), "{err}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(Path::new("/nonexistent/prog"), &["x"]).unwrap_err().to_string();
        assert!(err.contains("cannot run `/nonexistent/prog x`"), "{err}");
    }

    #[tokio::test]
    async fn limited_runs_are_killed_at_the_limit() {
        let started = std::time::Instant::now();
        let err = run_limited(Path::new("/bin/sh"), &["-c", "sleep 30"], std::time::Duration::from_millis(200))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not finish within") && err.contains("sleep 30"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let out =
            run_limited(Path::new("/bin/sh"), &["-c", "echo ok"], std::time::Duration::from_secs(10)).await.unwrap();
        assert_eq!(out.stdout, b"ok\n");
        let failed =
            run_limited(Path::new("/bin/sh"), &["-c", "echo NVPM ERROR; exit 1"], std::time::Duration::from_secs(10))
                .await
                .unwrap_err()
                .to_string();
        assert!(failed.contains("NVPM ERROR"), "a program that writes its error on stdout: {failed}");
    }

    #[test]
    fn long_stderr_keeps_the_end() {
        let long = "a".repeat(5000) + "the real error";
        let t = trim_stderr(long.as_bytes());
        assert!(t.ends_with("the real error") && t.len() < 2100);
    }
}
