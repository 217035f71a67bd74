//! Running a command inside a container through the OCI runtime's `exec` (built by the native backend from
//! the container's own process spec): streaming its output to an [`ExecSink`], and on a time limit killing
//! the container process itself (the pid the runtime wrote), not only the runtime that waits for it. Also
//! [`Capture`], a sink that keeps a bounded prefix of the output (what a health check reports).
//!
//! Decides nothing about what runs: callers build the command.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{Error, ExecSink, ExecStream, Result};

/// Most bytes of the runtime's own error output kept for the error when the command never started.
const RUNTIME_ERROR_KEEP: usize = 2000;

/// Spawns `command` (a runtime's `exec ... --pid-file pid_file`), streams its output to `sink` and returns the
/// exit code. After `timeout` the process in the container is killed (SIGKILL to the pid in `pid_file`) and
/// the call fails. When the runtime exits without ever starting the process (no pid file), its error output is
/// the error.
pub async fn run(
    id: &str,
    command: std::process::Command,
    pid_file: &Path,
    timeout: Option<Duration>,
    sink: ExecSink,
) -> Result<i32> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut command = tokio::process::Command::from(command);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| Error::Container { id: id.to_owned(), message: format!("cannot run {program} exec: {e}") })?;
    let tail = Arc::new(Mutex::new(Vec::new()));
    let out = pump(child.stdout.take(), ExecStream::Stdout, sink.clone(), None);
    let err = pump(child.stderr.take(), ExecStream::Stderr, sink, Some(tail.clone()));
    let waited = async {
        let (_, _, status) = tokio::join!(out, err, child.wait());
        status
    };
    let status = match timeout {
        None => waited.await,
        Some(limit) => match tokio::time::timeout(limit, waited).await {
            Ok(status) => status,
            Err(_) => {
                kill_from_pid_file(pid_file);
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                return Err(timed_out(id, limit));
            }
        },
    };
    let status =
        status.map_err(|e| Error::Container { id: id.to_owned(), message: format!("waiting for exec: {e}") })?;
    if !pid_file.exists() {
        let stderr = tail.lock().unwrap_or_else(|e| e.into_inner()).clone();
        return Err(Error::Container {
            id: id.to_owned(),
            message: format!("{program} exec failed ({status}): {}", crate::os::exec::trim_stderr(&stderr)),
        });
    }
    Ok(exit_code(status))
}

/// The error of an exec'd command killed at its time limit.
pub(super) fn timed_out(id: &str, limit: Duration) -> Error {
    Error::Container {
        id: id.to_owned(),
        message: format!("the exec'd command did not finish within {} s and was killed", limit.as_secs_f64()),
    }
}

/// The exit code of a finished runtime exec: the command's, or 128+signal.
pub(super) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

async fn pump(
    reader: Option<impl tokio::io::AsyncRead + Unpin>,
    stream: ExecStream,
    sink: ExecSink,
    tail: Option<Arc<Mutex<Vec<u8>>>>,
) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                sink(stream, &buf[..n]);
                if let Some(t) = &tail {
                    let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
                    t.extend_from_slice(&buf[..n]);
                    let over = t.len().saturating_sub(RUNTIME_ERROR_KEEP);
                    t.drain(..over);
                }
            }
        }
    }
}

pub(super) fn kill_from_pid_file(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()).filter(|p| *p > 1);
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// A sink keeping the first `limit` bytes of both streams, in arrival order, and whether more came.
#[derive(Debug, Clone)]
pub struct Capture {
    inner: Arc<Mutex<(Vec<u8>, bool)>>,
    limit: usize,
}

impl Capture {
    /// A capture of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { inner: Arc::new(Mutex::new((Vec::new(), false))), limit }
    }

    /// The sink that fills it.
    pub fn sink(&self) -> ExecSink {
        let (inner, limit) = (self.inner.clone(), self.limit);
        Arc::new(move |_, bytes: &[u8]| {
            let mut g = inner.lock().unwrap_or_else(|e| e.into_inner());
            let room = limit.saturating_sub(g.0.len());
            if bytes.len() > room {
                g.1 = true;
            }
            g.0.extend_from_slice(&bytes[..bytes.len().min(room)]);
        })
    }

    /// What was kept, as trimmed text, with `...` when output was cut.
    pub fn text(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = String::from_utf8_lossy(&g.0).trim().to_owned();
        if g.1 {
            t.push_str(" ...");
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_a_bounded_prefix_and_says_when_it_cut() {
        let c = Capture::new(8);
        let sink = c.sink();
        sink(ExecStream::Stdout, b"hello ");
        sink(ExecStream::Stderr, b"world, and much more");
        assert_eq!(c.text(), "hello wo ...");
        let small = Capture::new(100);
        small.sink()(ExecStream::Stdout, b" ok\n");
        assert_eq!(small.text(), "ok");
    }

    #[tokio::test]
    async fn a_command_that_runs_too_long_is_killed_and_its_exit_code_and_output_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("pid");
        // A stand-in for `runc exec --pid-file`: writes its own pid, then runs the command.
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(format!("echo $$ > {}; echo out; echo err >&2; exit 3", pid.display()));
        let cap = Capture::new(100);
        assert_eq!(run("c", cmd, &pid, Some(Duration::from_secs(10)), cap.sink()).await.unwrap(), 3);
        assert!(cap.text().contains("out") && cap.text().contains("err"), "{}", cap.text());

        std::fs::remove_file(&pid).unwrap();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(format!("echo $$ > {}; exec sleep 30", pid.display()));
        let t = std::time::Instant::now();
        let err = run("c", cmd, &pid, Some(Duration::from_millis(300)), Capture::new(10).sink()).await.unwrap_err();
        assert!(err.to_string().contains("killed") && t.elapsed() < Duration::from_secs(5), "{err}");

        std::fs::remove_file(&pid).unwrap();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c").arg("echo 'container is not running' >&2; exit 1");
        let err = run("c", cmd, &pid, None, Capture::new(10).sink()).await.unwrap_err().to_string();
        assert!(err.contains("exec failed") && err.contains("not running"), "{err}");
    }
}
