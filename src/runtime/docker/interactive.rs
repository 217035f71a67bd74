//! The Docker backend's attached exec (`jetship exec -i -t`) and log following: what the Engine's API offers
//! for both, wired to this process. An attached exec copies this process's stdin to the exec's hijacked
//! connection and its output to stdout/stderr; with a terminal, this one is set raw ([`RawTerminal`]) and its
//! size passed to the exec at start and on every SIGWINCH. Logs are followed with the Engine's own `follow`.

use std::io::{Read, Write};
use std::os::fd::AsFd;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{LogsOptionsBuilder, ResizeExecOptionsBuilder};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{container_err, log_lines, DockerBackend};
use crate::runtime::attach::{self, ExecIo, RawTerminal};
use crate::runtime::{Error, LogSink, Result};

/// How long the output already written is still read once following was asked to stop.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The Engine's exec of `cmd` in `id`, attached as `io` says; the command's exit code.
pub(super) async fn exec_attached(backend: &DockerBackend, id: &str, cmd: &[String], io: ExecIo) -> Result<i32> {
    if cmd.is_empty() {
        return Err(Error::Container { id: id.to_owned(), message: "exec needs a command".into() });
    }
    let stdin_tty = attach::is_terminal(std::io::stdin().as_fd());
    if io.tty && !attach::has_terminal() {
        return Err(attach::no_terminal(id));
    }
    let options = CreateExecOptions::<String> {
        cmd: Some(cmd.to_vec()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: Some(io.stdin),
        tty: Some(io.tty),
        privileged: Some(false),
        ..Default::default()
    };
    let docker = &backend.docker;
    let exec = docker.create_exec(id, options).await.map_err(|e| container_err(id, e))?;
    let long = docker.clone().with_timeout(std::time::Duration::from_secs(86_400));
    let start = StartExecOptions { detach: false, tty: io.tty, output_capacity: None };
    let StartExecResults::Attached { mut output, mut input } =
        long.start_exec(&exec.id, Some(start)).await.map_err(|e| container_err(id, e))?
    else {
        return Err(Error::Container { id: id.to_owned(), message: "the Engine did not attach the exec".into() });
    };
    // Raw only when keys come from a terminal; restored when this returns.
    let _raw = (io.tty && io.stdin && stdin_tty).then(RawTerminal::stdin).flatten();
    let resize = |size: Option<(u16, u16)>| {
        let (docker, exec_id) = (docker.clone(), exec.id.clone());
        async move {
            if let Some((rows, cols)) = size {
                let options = ResizeExecOptionsBuilder::new().h(rows.into()).w(cols.into()).build();
                let _ = docker.resize_exec(&exec_id, options).await;
            }
        }
    };
    let size = || attach::window_size(std::io::stdout().as_fd()).or(attach::window_size(std::io::stdin().as_fd()));
    if io.tty {
        resize(size()).await;
    }
    // Stdin is read on its own thread (a read of a terminal or pipe blocks), chunk by chunk.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    if io.stdin {
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        drop(tx);
    }
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|e| Error::Container { id: id.to_owned(), message: format!("watching the window size: {e}") })?;
    let mut stdin_open = io.stdin;
    let timeout = io.timeout.map(|t| tokio::time::Instant::now() + t);
    let deadline = async {
        match timeout {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            item = output.next() => match item {
                None => break,
                Some(item) => {
                    let (out, err) = (std::io::stdout(), std::io::stderr());
                    match item.map_err(|e| container_err(id, e))? {
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            let mut out = out.lock();
                            let _ = out.write_all(&message).and_then(|_| out.flush());
                        }
                        LogOutput::StdErr { message } => {
                            let _ = err.lock().write_all(&message);
                        }
                        LogOutput::StdIn { .. } => {}
                    }
                }
            },
            chunk = rx.recv(), if stdin_open => match chunk {
                Some(bytes) => {
                    if input.write_all(&bytes).await.is_err() {
                        stdin_open = false;
                    }
                }
                // End of stdin: the command sees end of file too.
                None => {
                    stdin_open = false;
                    let _ = input.shutdown().await;
                }
            },
            _ = winch.recv(), if io.tty => resize(size()).await,
            _ = &mut deadline => {
                let inspect = docker.inspect_exec(&exec.id).await.map_err(|e| container_err(id, e))?;
                if let Some(pid) = inspect.pid.filter(|p| *p > 1 && inspect.running == Some(true)) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
                }
                return Err(crate::runtime::exec::timed_out(id, io.timeout.unwrap_or_default()));
            }
        }
    }
    let inspect = docker.inspect_exec(&exec.id).await.map_err(|e| container_err(id, e))?;
    Ok(inspect.exit_code.map_or(-1, |c| c as i32))
}

/// The Engine's `logs?follow=1` into `sink` until the container stops or `stop` (then what is already written).
pub(super) async fn follow_logs(
    backend: &DockerBackend,
    id: &str,
    tail: Option<usize>,
    sink: LogSink,
    stop: CancellationToken,
) -> Result<()> {
    let tail = tail.map_or_else(|| "all".to_owned(), |n| n.to_string());
    let options = LogsOptionsBuilder::new().stdout(true).stderr(true).timestamps(true).follow(true).tail(&tail).build();
    let long = backend.docker.clone().with_timeout(std::time::Duration::from_secs(86_400));
    let mut stream = long.logs(id, Some(options));
    let hand = |item: std::result::Result<LogOutput, bollard::errors::Error>| -> Result<()> {
        let lines = match item.map_err(|e| container_err(id, e))? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => log_lines("stdout", &message),
            LogOutput::StdErr { message } => log_lines("stderr", &message),
            LogOutput::StdIn { .. } => Vec::new(),
        };
        lines.iter().for_each(|l| sink(l));
        Ok(())
    };
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(item) => hand(item)?,
                None => return Ok(()),
            },
            _ = stop.cancelled() => break,
        }
    }
    while let Ok(Some(item)) = tokio::time::timeout(DRAIN, stream.next()).await {
        hand(item)?;
    }
    Ok(())
}
