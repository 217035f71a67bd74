//! Container supervision with conmon (the monitor podman and CRI-O use) over runc or crun.
//!
//! conmon double-forks away from the agent, so containers outlive an agent restart or upgrade; it records the
//! exit code in an exit dir, an OOM kill in a persist dir, and the container's stdout/stderr in a k8s-format log
//! file. This module owns each container's directory under `<state_dir>/containers/<id>/` and the OCI runtime's
//! state root under the run dir; it never builds bundles or root file systems (the caller hands in a bundle).
//! All calls block (they run external programs): async callers use `spawn_blocking`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::os::exec;
use crate::os::fsutil;

/// How long `create` waits for conmon to report the container's pid.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors supervising containers. Each names the container and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container id `{0}` is invalid: use 1-128 of [A-Za-z0-9_.-], starting with a letter or digit")]
    BadId(String),
    #[error("no OCI runtime found: install crun or runc (apt-get install runc), or set runtime.backend = \"docker\"")]
    NoRuntime,
    #[error("OCI runtime `{0}` does not exist or is not executable: fix runtime.oci_runtime")]
    RuntimeMissing(PathBuf),
    #[error("conmon not found: install it (apt-get install conmon), or set runtime.backend = \"docker\"")]
    NoConmon,
    #[error("container {id} already exists: remove it first")]
    Exists { id: String },
    #[error("container {id} does not exist")]
    NotFound { id: String },
    #[error("container {id} failed to start: {message}")]
    Create { id: String, message: String },
    #[error("container {id}: {context}: {source}")]
    Io {
        id: String,
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Exec(#[from] exec::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Whether `id` can name a container (runc's rules, and safe as a file name).
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An OCI runtime binary (runc or crun).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRuntime {
    pub path: PathBuf,
    /// `runc`, `crun` or the file name of a custom runtime; names its state root.
    pub name: String,
}

impl OciRuntime {
    /// Picks the runtime for `setting` (`auto`, `crun`, `runc` or a path). `auto` prefers crun on a unified
    /// cgroup v2 host (JetPack 6) and runc elsewhere: crun refuses hybrid cgroup layouts.
    pub fn choose(setting: &str) -> Result<Self> {
        let root = Path::new("/");
        let found = |name: &str| exec::find_program(root, name, exec::BIN_DIRS);
        let make = |path: PathBuf| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "oci".into());
            OciRuntime { path, name }
        };
        match setting {
            "auto" => {
                let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
                let order: [&str; 2] = if v2 { ["crun", "runc"] } else { ["runc", "crun"] };
                order.iter().find_map(|n| found(n)).map(make).ok_or(Error::NoRuntime)
            }
            "crun" | "runc" => found(setting).map(make).ok_or(Error::NoRuntime),
            path => {
                let p = PathBuf::from(path);
                if p.is_file() {
                    Ok(make(p))
                } else {
                    Err(Error::RuntimeMissing(p))
                }
            }
        }
    }
}

/// Where the supervisor keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `<state_dir>/containers`: one directory per container (metadata, logs, exit codes). Persistent.
    pub containers: PathBuf,
    /// A tmpfs directory such as `/run/jetship`: the OCI runtime's state and conmon's sockets, which must not
    /// outlive a reboot (the processes they describe do not).
    pub run: PathBuf,
}

/// What jetship records about a container it owns; written before the container is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub bundle: PathBuf,
    /// Ownership labels (deployment, spec hash, agent id).
    pub labels: BTreeMap<String, String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The SHA-256 of the bundle's `config.json` when the container was created: what the runtime was told, so
    /// a damaged spec is found before the container is created again from it. Absent in an older agent's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
}

/// The most a container record may hold (its labels are bounded far below this).
const META_LIMIT: u64 = 1 << 20;

impl Meta {
    /// Reads `<dir>/meta.json`, sealed with a checksum (`Meta::write`): `Ok(None)` when there is none, `Err`
    /// with why when it is cut short, damaged or not a record. Unsealed, a flipped bit that still parses would
    /// pass with another deployment's labels or another bundle.
    pub fn read(dir: &Path) -> std::result::Result<Option<Meta>, String> {
        let Some(bytes) = fsutil::read_sealed(&dir.join("meta.json"), META_LIMIT)? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("it is not a container record ({e})"))
    }

    /// A record an older agent wrote without a checksum, when it is whole (a JSON object cut short never parses):
    /// the repair seals it again.
    pub(crate) fn read_unsealed(dir: &Path) -> Option<Meta> {
        serde_json::from_str(&fsutil::read_small(&dir.join("meta.json"), META_LIMIT).ok()?).ok()
    }

    /// Writes `<dir>/meta.json` sealed, atomically and durably.
    pub(crate) fn write(&self, dir: &Path) -> std::io::Result<()> {
        fsutil::write_sealed(&dir.join("meta.json"), &serde_json::to_vec_pretty(self).expect("metadata serializes"))
    }
}

/// The runtime's view of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
    /// jetship has a record but the runtime does not know the container (e.g. after a reboot).
    Missing,
}

/// A container's state as seen now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    pub pid: Option<i32>,
    /// The exit code conmon recorded (128+signal for a signal).
    pub exit_code: Option<i32>,
    /// Whether the kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// When the runtime created the container: just before its start, also for a start of a stopped container
    /// (which [`Supervisor::start`] creates anew). `None` when the runtime does not know it.
    #[serde(default)]
    pub created: Option<chrono::DateTime<chrono::Utc>>,
}

/// A container jetship owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Owned {
    pub meta: Meta,
    pub state: State,
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub ts: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub text: String,
}

/// Runs and watches containers with conmon and an OCI runtime.
#[derive(Debug, Clone)]
pub struct Supervisor {
    conmon: PathBuf,
    runtime: OciRuntime,
    paths: Paths,
    /// Size at which a container's log is rotated (one previous file kept).
    log_max_bytes: u64,
}

impl Supervisor {
    /// A supervisor using `conmon` (found on PATH-like dirs when `None`) and `runtime`.
    pub fn new(conmon: Option<PathBuf>, runtime: OciRuntime, paths: Paths, log_max_bytes: u64) -> Result<Self> {
        let conmon = match conmon {
            Some(p) => p,
            None => {
                exec::find_program(Path::new("/"), "conmon", &["/usr/bin", "/usr/local/bin", "/usr/libexec/podman"])
                    .ok_or(Error::NoConmon)?
            }
        };
        Ok(Self { conmon, runtime, paths, log_max_bytes: log_max_bytes.max(4096) })
    }

    /// The OCI runtime in use.
    pub fn runtime(&self) -> &OciRuntime {
        &self.runtime
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.paths.containers.join(id)
    }

    fn runtime_root(&self) -> PathBuf {
        self.paths.run.join(&self.runtime.name)
    }

    /// Log file of a container (k8s-file format: `<rfc3339> <stream> <F|P> <text>`).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("ctr.log")
    }

    fn io<'a>(id: &'a str, context: &'static str) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |source| Error::Io { id: id.to_owned(), context, source }
    }

    fn runtime_cmd(&self, args: &[&str]) -> exec::Result<std::process::Output> {
        let root = format!("--root={}", self.runtime_root().display());
        let mut all = vec![root.as_str()];
        all.extend_from_slice(args);
        exec::run(&self.runtime.path, &all)
    }

    /// The runtime's `exec` of the process described by `process_file` (an OCI `process` object) in container
    /// `id`, writing the new process's host pid to `pid_file`: what runs a command inside the container with
    /// the container's own confinement (the caller spawns and waits for it).
    pub(crate) fn exec_command(&self, id: &str, process_file: &Path, pid_file: &Path) -> Command {
        let mut cmd = Command::new(&self.runtime.path);
        cmd.arg(format!("--root={}", self.runtime_root().display()))
            .arg("exec")
            .arg("--process")
            .arg(process_file)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id);
        cmd
    }

    /// The container's record ([`Meta::read`]).
    fn meta(&self, id: &str) -> Result<Meta> {
        match Meta::read(&self.dir(id)) {
            Ok(Some(meta)) => Ok(meta),
            Ok(None) => Err(Error::NotFound { id: id.to_owned() }),
            Err(e) => Err(Error::Create { id: id.into(), message: format!("its record meta.json is unusable: {e}") }),
        }
    }

    /// The container's directory (metadata, logs, exit codes).
    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.dir(id)
    }

    /// Creates the container from `bundle` (config.json + rootfs) under conmon; it is left in `created` state
    /// until [`Supervisor::start`]. The metadata is written first, so a crash in between leaves a record that
    /// [`Supervisor::list`] reports and [`Supervisor::remove`] cleans up, never an unknown container.
    pub fn create(&self, id: &str, bundle: &Path, labels: BTreeMap<String, String>) -> Result<()> {
        if !valid_id(id) {
            return Err(Error::BadId(id.to_owned()));
        }
        let dir = self.dir(id);
        if dir.join("meta.json").exists() {
            return Err(Error::Exists { id: id.to_owned() });
        }
        for sub in ["exit", "persist"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(Self::io(id, "creating the container directory"))?;
        }
        std::fs::create_dir_all(self.paths.run.join("sock")).map_err(Self::io(id, "creating the run directory"))?;
        let config_sha256 = std::fs::read(bundle.join("config.json")).ok().map(|b| fsutil::sha256_hex(&b));
        let meta = Meta {
            id: id.to_owned(),
            bundle: bundle.to_path_buf(),
            labels,
            created_at: chrono::Utc::now(),
            config_sha256,
        };
        meta.write(&dir).map_err(Self::io(id, "writing meta.json"))?;

        self.spawn_conmon(id, bundle)
    }

    /// Runs conmon for container `id` from `bundle` and waits for it to report the container's pid (or the
    /// runtime's error) on the sync pipe.
    fn spawn_conmon(&self, id: &str, bundle: &Path) -> Result<()> {
        let dir = self.dir(id);
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Io {
            id: id.into(),
            context: "creating the sync pipe",
            source: e.into(),
        })?;
        let fd = write_end.as_raw_fd();
        let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let args: Vec<String> = vec![
            "--api-version".into(),
            "1".into(),
            "-c".into(),
            id.into(),
            "-u".into(),
            id.into(),
            "-n".into(),
            id.into(),
            "-r".into(),
            self.runtime.path.to_string_lossy().into_owned(),
            "-b".into(),
            bundle.to_string_lossy().into_owned(),
            "-p".into(),
            p("ctr.pid"),
            "-P".into(),
            p("conmon.pid"),
            "--exit-dir".into(),
            p("exit"),
            "-0".into(),
            p("persist"),
            "-l".into(),
            format!("k8s-file:{}", p("ctr.log")),
            // conmon's own limit is a backstop at twice the rotation size; the agent rotates before it.
            "--log-size-max".into(),
            (self.log_max_bytes * 2).to_string(),
            "--socket-dir-path".into(),
            self.paths.run.join("sock").to_string_lossy().into_owned(),
            "--runtime-arg".into(),
            format!("--root={}", self.runtime_root().display()),
            "--log-level".into(),
            "error".into(),
        ];
        let mut cmd = Command::new(&self.conmon);
        cmd.args(&args)
            .env("_OCI_SYNCPIPE", fd.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe fcntl between fork and exec, to let conmon inherit the write end.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| exec::Error::Spawn {
            program: self.conmon.clone(),
            args: args.join(" "),
            source,
        })?;
        drop(write_end);
        crate::os::crashpoint::hit("conmon-spawned");
        let reply = read_sync_pipe(read_end, CREATE_TIMEOUT);
        let output = child.wait_with_output().map_err(Self::io(id, "waiting for conmon"))?;
        let failure = |message: String| {
            let _ = self.runtime_cmd(&["delete", "--force", id]);
            Error::Create { id: id.to_owned(), message }
        };
        match reply {
            Ok(SyncReply { pid, message }) if pid > 0 && message.is_none() => Ok(()),
            Ok(SyncReply { message, .. }) => Err(failure(clean_runtime_message(message.as_deref().unwrap_or("")))),
            Err(e) => {
                let stderr = exec::trim_stderr(&output.stderr);
                Err(failure(format!("{e}; conmon said: {stderr}")))
            }
        }
    }

    /// Starts a created container. A stopped one is first created anew from its bundle (runc starts a
    /// container only once); its writable layer, logs and metadata are kept, as `docker start` keeps them.
    pub fn start(&self, id: &str) -> Result<()> {
        if self.state(id)?.status == Status::Stopped {
            self.recreate(id)?;
        }
        self.runtime_cmd(&["start", id])?;
        Ok(())
    }

    /// Deletes the container from the runtime (killing its process if it still runs) and creates it again from
    /// its bundle under a new conmon, left `created`: for a stopped container before a start, and for one whose
    /// conmon is gone. The writable layer, logs and metadata are kept.
    pub(crate) fn recreate(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        let meta = self.meta(id)?;
        match self.runtime_cmd(&["delete", "--force", id]) {
            Ok(_) => {}
            Err(exec::Error::Failed { stderr, .. }) if stderr.contains("does not exist") => {}
            Err(e) => return Err(e.into()),
        }
        for stale in [dir.join("exit").join(id), dir.join("persist/oom")] {
            match std::fs::remove_file(&stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Self::io(id, "clearing the previous exit record")(e)),
            }
        }
        self.spawn_conmon(id, &meta.bundle)
    }

    /// The container's state: runtime status plus the exit code and OOM flag conmon recorded.
    pub fn state(&self, id: &str) -> Result<State> {
        let dir = self.dir(id);
        if !dir.join("meta.json").exists() {
            return Err(Error::NotFound { id: id.to_owned() });
        }
        // conmon writes the exit file and then exits: asked in this order, a dead conmon means the file (if any)
        // is complete, and a live one may still be writing it.
        let conmon_alive = self.conmon_alive(id);
        let exit_code = std::fs::read_to_string(dir.join("exit").join(id)).ok().and_then(|s| s.trim().parse().ok());
        let oom_killed = dir.join("persist/oom").exists();
        let (status, pid, created) = match self.runtime_cmd(&["state", id]) {
            Ok(out) => {
                #[derive(Deserialize)]
                struct RuntimeState {
                    status: String,
                    pid: Option<i32>,
                    #[serde(default)]
                    created: Option<chrono::DateTime<chrono::Utc>>,
                }
                let s: RuntimeState = serde_json::from_slice(&out.stdout)
                    .map_err(|e| Error::Create { id: id.into(), message: format!("unreadable runtime state: {e}") })?;
                let status = match s.status.as_str() {
                    "created" | "creating" => Status::Created,
                    "running" => Status::Running,
                    "paused" | "pausing" => Status::Paused,
                    _ => Status::Stopped,
                };
                (status, s.pid.filter(|p| *p > 0 && status != Status::Stopped), s.created)
            }
            Err(exec::Error::Failed { stderr, .. }) if stderr.contains("does not exist") => {
                (Status::Missing, None, None)
            }
            Err(e) => return Err(e.into()),
        };
        // conmon writes the exit file just after the process ends: trust it over a racing runtime status either
        // way. Stopped with no exit file while conmon still runs means the exit is being recorded right now.
        let status = match (status, exit_code) {
            (Status::Running, Some(_)) => Status::Stopped,
            (Status::Stopped, None) if conmon_alive => Status::Running,
            (s, _) => s,
        };
        Ok(State { status, pid, exit_code, oom_killed, created })
    }

    /// Whether the container's conmon still runs (a zombie does not).
    pub(crate) fn monitor_alive(&self, id: &str) -> bool {
        self.conmon_alive(id)
    }

    fn conmon_alive(&self, id: &str) -> bool {
        std::fs::read_to_string(self.dir(id).join("conmon.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            // A zombie (state Z) is dead: only its parent has not reaped it yet. A pid reused by another program
            // after conmon died is not conmon.
            .is_some_and(|stat| {
                let comm = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map(|(c, _)| c);
                comm.is_some_and(|c| c.starts_with("conmon"))
                    && stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z")
            })
    }

    /// Stops a container: SIGTERM, then SIGKILL once `grace` has passed. Returns the exit code.
    pub fn stop(&self, id: &str, grace: Duration) -> Result<Option<i32>> {
        let running = |s: &State| matches!(s.status, Status::Running | Status::Created | Status::Paused);
        let state = self.state(id)?;
        if !running(&state) {
            return Ok(state.exit_code);
        }
        if state.status == Status::Created {
            // Never started: nothing to signal gracefully.
            let _ = self.runtime_cmd(&["kill", id, "KILL"]);
        } else {
            let _ = self.runtime_cmd(&["kill", id, "TERM"]);
        }
        let deadline = Instant::now() + grace;
        loop {
            let s = self.state(id)?;
            if !running(&s) && s.exit_code.is_some() {
                return Ok(s.exit_code);
            }
            if !running(&s) && s.status == Status::Missing {
                return Ok(s.exit_code);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.runtime_cmd(&["kill", id, "KILL"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.state(id)?;
            if (!running(&s) && s.exit_code.is_some()) || s.status == Status::Missing || Instant::now() >= deadline {
                return Ok(s.exit_code);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes a stopped container: the runtime's state and jetship's directory (logs included). The bundle's
    /// root file system must be unmounted by its owner first.
    pub fn remove(&self, id: &str) -> Result<()> {
        if !valid_id(id) {
            return Err(Error::BadId(id.to_owned()));
        }
        match self.runtime_cmd(&["delete", "--force", id]) {
            Ok(_) => {}
            Err(exec::Error::Failed { stderr, .. }) if stderr.contains("does not exist") => {}
            Err(e) => return Err(e.into()),
        }
        match std::fs::remove_dir_all(self.dir(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(id, "removing the container directory")(e)),
        }
    }

    /// Every container jetship owns, with its state: what the agent adopts after a restart.
    pub fn list(&self) -> Result<Vec<Owned>> {
        let entries = match std::fs::read_dir(&self.paths.containers) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io("-", "listing containers")(e)),
        };
        let mut owned = Vec::new();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !valid_id(&id) {
                continue;
            }
            let meta = match Meta::read(&entry.path()) {
                Ok(Some(meta)) => meta,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(container = %id, %err, "unusable meta.json; leaving the container to the repair");
                    continue;
                }
            };
            let state = self.state(&id)?;
            owned.push(Owned { meta, state });
        }
        owned.sort_by(|a, b| a.meta.id.cmp(&b.meta.id));
        Ok(owned)
    }

    /// Rotates the container's log when it has grown past the limit: the current file becomes `ctr.log.1`
    /// (replacing the previous one) and conmon is told to reopen its log. Returns whether it rotated.
    pub fn rotate_logs(&self, id: &str) -> Result<bool> {
        let log = self.log_path(id);
        let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        if size < self.log_max_bytes {
            return Ok(false);
        }
        std::fs::rename(&log, log.with_extension("log.1")).map_err(Self::io(id, "rotating the log"))?;
        let meta = self.meta(id)?;
        // conmon's control FIFO: message type 2 reopens the log files.
        let ctl = meta.bundle.join("ctl");
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&ctl)
            .map_err(Self::io(id, "opening conmon's control fifo"))?;
        fifo.write_all(b"2 0 0\n").map_err(Self::io(id, "asking conmon to reopen the log"))?;
        Ok(true)
    }

    /// The container's output, oldest first, across the rotated and the current log; the last `tail` lines
    /// when given. Partial lines (`P`) are joined with their continuation.
    pub fn logs(&self, id: &str, tail: Option<usize>) -> Result<Vec<LogLine>> {
        let log = self.log_path(id);
        let mut lines = Vec::new();
        for path in [log.with_extension("log.1"), log] {
            match std::fs::File::open(&path) {
                Ok(f) => parse_k8s_log(BufReader::new(f), &mut lines),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Self::io(id, "reading the log")(e)),
            }
        }
        if let Some(n) = tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        Ok(lines)
    }
}

/// Parses conmon's k8s-file lines (`<ts> <stream> <F|P> <text>`) into `out`, joining partial lines
/// ([`super::follow::LineJoiner`]).
pub(crate) fn parse_k8s_log(reader: impl BufRead, out: &mut Vec<LogLine>) {
    let mut joiner = super::follow::LineJoiner::default();
    let mut push = |l: LogLine| out.push(l);
    for line in reader.split(b'\n').map_while(|l| l.ok()) {
        joiner.feed(&line, &mut push);
    }
    joiner.finish(&mut push);
}

struct SyncReply {
    pid: i64,
    message: Option<String>,
}

#[derive(Deserialize)]
struct SyncMsg {
    data: i64,
    message: Option<String>,
}

/// Reads conmon's first sync-pipe message (`{"data": <pid or -1>, "message": ...}`) within `timeout`. conmon
/// keeps the pipe open while it monitors a started container, so this stops at the first complete message.
fn read_sync_pipe(fd: OwnedFd, timeout: Duration) -> std::result::Result<SyncReply, String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut file = std::fs::File::from(fd);
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..end]);
            let msg: SyncMsg =
                serde_json::from_str(&line).map_err(|e| format!("unreadable sync message {line:?}: {e}"))?;
            let message = msg.message.filter(|m| !m.trim().is_empty() || msg.data < 0);
            return Ok(SyncReply { pid: msg.data, message });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("conmon did not report within {}s", timeout.as_secs()));
        }
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(&file), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("polling conmon's sync pipe: {e}")),
        }
        let mut chunk = [0u8; 4096];
        match file.read(&mut chunk) {
            Ok(0) => {
                return Err(format!("conmon exited without reporting a pid ({:?})", String::from_utf8_lossy(&buf)))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading conmon's sync pipe: {e}")),
        }
        if buf.len() > 1 << 20 {
            return Err("conmon's sync pipe sent over 1 MiB without a newline".into());
        }
    }
}

/// Turns runc's logrus line (`time="..." level=error msg="..."`) into its message.
fn clean_runtime_message(raw: &str) -> String {
    let raw = raw.trim();
    if let Some(start) = raw.find("msg=\"") {
        let rest = &raw[start + 5..];
        let end = rest.rfind('"').unwrap_or(rest.len());
        return rest[..end].replace("\\\"", "\"");
    }
    raw.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_with_a_flipped_bit_that_still_parses_is_refused_and_an_unsealed_whole_one_is_read_for_resealing() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta {
            id: "app-1".into(),
            bundle: "/var/lib/jetship/bundles/app-1".into(),
            labels: BTreeMap::from([("jetship.deployment".to_owned(), "app".to_owned())]),
            created_at: chrono::Utc::now(),
            config_sha256: Some("ab".repeat(32)),
        };
        meta.write(dir.path()).unwrap();
        assert_eq!(Meta::read(dir.path()).unwrap(), Some(meta.clone()));
        let path = dir.path().join("meta.json");
        let sealed = std::fs::read(&path).unwrap();
        // "app" -> "aqp": still JSON, still a record, another deployment's.
        let at = sealed.windows(5).position(|w| w == b"\"app\"").unwrap() + 2;
        let mut flipped = sealed.clone();
        flipped[at] ^= 0x01;
        std::fs::write(&path, &flipped).unwrap();
        let err = Meta::read(dir.path()).unwrap_err();
        assert!(err.contains("does not match its checksum"), "{err}");
        assert!(Meta::read_unsealed(dir.path()).is_none(), "the seal is trailing data for a plain reader");
        // An older agent's record: whole, unsealed.
        std::fs::write(&path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
        assert!(Meta::read(dir.path()).unwrap_err().contains("cut short"));
        assert_eq!(Meta::read_unsealed(dir.path()), Some(meta.clone()));
        // Cut inside its content: neither.
        std::fs::write(&path, &sealed[..sealed.len() / 2]).unwrap();
        assert!(Meta::read(dir.path()).is_err() && Meta::read_unsealed(dir.path()).is_none());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(Meta::read(dir.path()), Ok(None));
    }

    #[test]
    fn ids_are_safe_file_names() {
        assert!(valid_id("yolo-1.2_a"));
        for bad in ["", ".hidden", "-x", "a/b", "a b", "..", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn k8s_log_lines_parse_and_partials_join() {
        let text = "2026-01-01T00:00:00Z stdout F hello\n2026-01-01T00:00:01Z stderr P par\n2026-01-01T00:00:01Z stderr F tial\n2026-01-01T00:00:02Z stdout F \nbroken\n";
        let mut out = Vec::new();
        parse_k8s_log(text.as_bytes(), &mut out);
        let got: Vec<_> = out.iter().map(|l| (l.stream.as_str(), l.text.as_str())).collect();
        assert_eq!(got, [("stdout", "hello"), ("stderr", "partial"), ("stdout", "")]);
    }

    #[test]
    fn runc_error_message_is_extracted() {
        let raw = "time=\"2026-11-22T05:06:38Z\" level=error msg=\"runc create failed: exec: \\\"/bin/x\\\": no such file\"\n";
        assert_eq!(clean_runtime_message(raw), "runc create failed: exec: \"/bin/x\": no such file");
    }
}
