//! `jetship exec -i -t`: a command in a container attached to this process's own terminal and stdin. What the
//! caller asks for is [`ExecIo`]; the native backend hands its stdio to the OCI runtime's foreground exec (runc
//! and crun then allocate the container's terminal, set this one raw, copy both ways and pass on window size
//! changes themselves), the Docker backend copies between this process and the Engine's exec, with
//! [`RawTerminal`] and [`window_size`] from here.
//!
//! Decides nothing about what runs; only the CLI calls this (the agent never attaches).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{Error, Result};

/// How an attached exec is wired to this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecIo {
    /// This process's stdin goes to the command (`-i`); without it the command's stdin is empty.
    pub stdin: bool,
    /// The command gets a terminal (`-t`): this process's stdin, stdout or stderr must be one.
    pub tty: bool,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
}

/// Whether `fd` is a terminal.
pub(crate) fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

/// The error when `-t` is asked for without a terminal to attach it to.
pub(crate) fn no_terminal(id: &str) -> Error {
    Error::Container {
        id: id.to_owned(),
        message: "-t needs a terminal, and none of stdin, stdout or stderr is one: run it from a terminal, or drop \
                  -t (and keep -i to pipe stdin)"
            .into(),
    }
}

/// Whether any of this process's stdin, stdout, stderr is a terminal (what runc's foreground `--tty` needs).
pub(crate) fn has_terminal() -> bool {
    [std::io::stdin().as_raw_fd(), std::io::stdout().as_raw_fd(), std::io::stderr().as_raw_fd()]
        .into_iter()
        // SAFETY: the standard descriptors stay open for the life of the process.
        .any(|fd| is_terminal(unsafe { BorrowedFd::borrow_raw(fd) }))
}

/// Rows and columns of the terminal on `fd`, if it is one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct given.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// This process's terminal in raw mode (keys go to the container as typed: Ctrl-C included) until dropped,
/// when its settings are restored.
pub struct RawTerminal {
    fd: i32,
    saved: libc::termios,
}

impl RawTerminal {
    /// Sets the terminal on stdin raw; `None` when stdin is no terminal.
    pub fn stdin() -> Option<Self> {
        let fd = std::io::stdin().as_raw_fd();
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr/tcsetattr read and write one termios for a descriptor that stays open.
        unsafe {
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return None;
            }
        }
        Some(Self { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: as in `stdin`.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// Runs `command` (a runtime's foreground `exec ... --pid-file pid_file` whose process spec asks for a terminal
/// when `io.tty`) with this process's stdout and stderr, and its stdin when `io.stdin`; returns the command's exit
/// code. After `io.timeout` the process in the container is killed. When the runtime exits without starting the
/// process (no pid file; its error went to stderr), the call fails.
pub async fn run(id: &str, command: std::process::Command, pid_file: &Path, io: ExecIo) -> Result<i32> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut command = tokio::process::Command::from(command);
    // Without -i the command reads an empty stdin, with a terminal too (runc then copies nothing into it).
    let stdin = if io.stdin { Stdio::inherit() } else { Stdio::null() };
    command.stdin(stdin).stdout(Stdio::inherit()).stderr(Stdio::inherit()).kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| Error::Container { id: id.to_owned(), message: format!("cannot run {program} exec: {e}") })?;
    let status = match io.timeout {
        None => child.wait().await,
        Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                super::exec::kill_from_pid_file(pid_file);
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                return Err(super::exec::timed_out(id, limit));
            }
        },
    };
    let status =
        status.map_err(|e| Error::Container { id: id.to_owned(), message: format!("waiting for exec: {e}") })?;
    if !pid_file.exists() {
        return Err(Error::Container { id: id.to_owned(), message: format!("{program} exec failed ({status})") });
    }
    Ok(super::exec::exit_code(status))
}
