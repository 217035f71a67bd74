//! The embedded MQTT broker (rumqttd): lets a single device, or a small lab, run with no other server. Plain
//! MQTT 3.1.1 on one TCP listener, no TLS, so it listens on loopback unless told otherwise. Fleets move to
//! Mosquitto/EMQX/HiveMQ (docs/protocol.md, "Choosing a broker").
//!
//! Whoever can publish to a device's topics controls it, so the broker authenticates by default: the agent's
//! embedded broker takes one user, [`EMBEDDED_USER`], whose random password the agent creates at first start in
//! `<state_dir>/broker-password` (0600; the state dir is 0700 root), and which root's CLI on the same device
//! reads too. `jetship broker` takes a password file of `user:password` lines, or runs open only when told so
//! explicitly ([`Auth::Anonymous`], warned about).
//!
//! It owns only the broker's threads and its password files; it must not touch the agent's other state, config
//! or spool.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{error, info, warn};

use crate::os::fsutil;

/// The user the agent and the local CLI authenticate as to the embedded broker.
pub const EMBEDDED_USER: &str = "jetship";
/// The embedded broker's password file in the state dir: one line, the password of [`EMBEDDED_USER`].
pub(crate) const EMBEDDED_PASSWORD_FILE: &str = "broker-password";
/// Largest password file read.
const PASSWORD_FILE_LIMIT: u64 = 1 << 20;

/// Errors starting the broker or reading its credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("embedded broker cannot listen on {addr}: {source} (another broker running there? set mqtt.url to use it, or mqtt.embedded_listen / --listen to move)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the embedded broker thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("broker password file {path}: {message}")]
    Credentials { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Who may connect.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// Clients must log in with one of these usernames and its password.
    Passwords(HashMap<String, String>),
    /// Anyone who reaches the listener may connect, publish and subscribe (`jetship broker --allow-anonymous`).
    Anonymous,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Passwords(p) => write!(f, "Passwords({} users, <hidden>)", p.len()),
            Auth::Anonymous => f.write_str("Anonymous"),
        }
    }
}

/// Largest payload the broker accepts (the protocol's own limit on incoming documents is 1 MiB).
const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

fn config(listen: SocketAddr, auth: &Auth) -> rumqttd::Config {
    let server = rumqttd::ServerSettings {
        name: "v4-1".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 100,
            auth: match auth {
                Auth::Passwords(p) => Some(p.clone()),
                Auth::Anonymous => None,
            },
            external_auth: None,
            dynamic_filters: true,
        },
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            // The router keeps a commit log per filter in memory: small segments keep a device's broker small.
            max_segment_size: 1024 * 1024,
            max_segment_count: 4,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    }
}

/// Checks that `listen` is free, then starts the broker on its own threads and returns. The broker lives as
/// long as the process.
pub fn spawn(listen: SocketAddr, auth: Auth) -> Result<()> {
    check_free(listen)?;
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || run_blocking(listen, &auth))
        .map_err(Error::Thread)?;
    info!(%listen, "embedded mqtt broker started");
    Ok(())
}

/// Runs the broker on the calling thread until the process exits (`jetship broker`).
pub fn run(listen: SocketAddr, auth: Auth) -> Result<()> {
    check_free(listen)?;
    match &auth {
        Auth::Anonymous => warn!(
            %listen,
            "mqtt broker listening WITHOUT authentication (--allow-anonymous): anyone who reaches it can control every device that uses it"
        ),
        Auth::Passwords(p) => info!(%listen, users = p.len(), "mqtt broker listening; clients must log in"),
    }
    run_blocking(listen, &auth);
    Ok(())
}

fn check_free(listen: SocketAddr) -> Result<()> {
    // rumqttd logs a bind failure from its own thread and carries on; check first so the error reaches the user.
    std::net::TcpListener::bind(listen).map(drop).map_err(|source| Error::Listen { addr: listen, source })
}

fn run_blocking(listen: SocketAddr, auth: &Auth) {
    let mut broker = rumqttd::Broker::new(config(listen, auth));
    if let Err(err) = broker.start() {
        error!(%listen, ?err, "embedded mqtt broker stopped");
    }
}

/// Parses a broker password file: one `user:password` per line; blank lines and `#` comments are skipped.
/// Pure.
pub(crate) fn parse_password_file(text: &str) -> std::result::Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (user, password) = line.split_once(':').ok_or_else(|| format!("line {} is not `user:password`", i + 1))?;
        if user.is_empty() || password.is_empty() {
            return Err(format!("line {}: the user and the password must not be empty", i + 1));
        }
        if users.insert(user.to_owned(), password.to_owned()).is_some() {
            return Err(format!("line {}: user `{user}` is listed twice", i + 1));
        }
    }
    if users.is_empty() {
        return Err("it lists no users: add a `user:password` line".into());
    }
    Ok(users)
}

/// Reads a password file for `jetship broker`. A file that others can read is used, with a warning.
pub(crate) fn read_password_file(path: &Path) -> Result<HashMap<String, String>> {
    let bad = |message: String| Error::Credentials { path: path.to_path_buf(), message };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the broker password file is readable by others: chmod 600 it");
    }
    let text = fsutil::read_small(path, PASSWORD_FILE_LIMIT).map_err(|e| bad(e.to_string()))?;
    parse_password_file(&text).map_err(bad)
}

/// The embedded broker's password file in `state_dir`.
pub(crate) fn embedded_password_path(state_dir: &Path) -> PathBuf {
    state_dir.join(EMBEDDED_PASSWORD_FILE)
}

/// The embedded broker's password, from `<state_dir>/broker-password`; created at first start: 32 random
/// bytes, hex, written atomically with mode 0600 from the first moment. An existing file must be a regular
/// file (a symlink there is refused); a mode that lets others read it is fixed to 0600, with a warning.
pub(crate) fn embedded_password(state_dir: &Path) -> Result<String> {
    let path = embedded_password_path(state_dir);
    let bad = |message: String| Error::Credentials { path: path.clone(), message };
    match read_embedded(&path) {
        Ok(Some(password)) => return Ok(password),
        Ok(None) => {}
        Err(message) => return Err(bad(message)),
    }
    let password = hex::encode(rand::random::<[u8; 32]>());
    fsutil::write_atomic_private(&path, format!("{password}\n").as_bytes())
        .map_err(|e| bad(format!("cannot create it: {e}; check that the state dir is writable")))?;
    info!(path = %path.display(), user = EMBEDDED_USER, "created the embedded broker's password");
    Ok(password)
}

/// The password in an existing embedded password file; `None` when there is none (or it is empty).
fn read_embedded(path: &Path) -> std::result::Result<Option<String>, String> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("it is a symlink; remove it and restart the agent to create a new password".into())
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file; remove it and restart the agent".into());
    }
    if meta.mode() & 0o077 != 0 {
        warn!(path = %path.display(), mode = format!("{:o}", meta.mode() & 0o777), "the embedded broker's password file was readable by others; mode set to 0600 (consider removing it to get a new password)");
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    }
    let mut text = String::new();
    file.take(4096).read_to_string(&mut text).map_err(|e| e.to_string())?;
    let password = text.lines().next().unwrap_or_default().trim().to_owned();
    Ok((!password.is_empty()).then_some(password))
}

/// The embedded broker's password for a client on this device (the CLI), if this user can read it: `None`
/// when there is no such file or it is not readable (only root can read it).
pub(crate) fn local_embedded_password(state_dir: &Path) -> Option<String> {
    read_embedded(&embedded_password_path(state_dir)).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_files_list_users_and_refuse_garbage() {
        let users = parse_password_file("# lab\nalice:s3:cret\n\nbob:pw\r\n").unwrap();
        assert_eq!(users["alice"], "s3:cret", "only the first colon separates");
        assert_eq!(users["bob"], "pw");
        for (text, want) in [
            ("alice\n", "line 1 is not `user:password`"),
            (":pw\n", "must not be empty"),
            ("a:1\na:2\n", "listed twice"),
            ("# nothing\n", "no users"),
        ] {
            assert!(parse_password_file(text).unwrap_err().contains(want), "{text:?}");
        }
    }

    #[test]
    fn embedded_password_is_created_once_0600_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = embedded_password(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        let path = embedded_password_path(dir.path());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(embedded_password(dir.path()).unwrap(), first, "kept across restarts");
        assert_eq!(local_embedded_password(dir.path()).as_deref(), Some(first.as_str()));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(embedded_password(other.path()).unwrap(), first, "random per device");
    }

    #[test]
    fn embedded_password_file_with_wrong_mode_is_fixed_and_a_symlink_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = embedded_password_path(dir.path());
        std::fs::write(&path, "abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(embedded_password(dir.path()).unwrap(), "abc");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        std::fs::remove_file(&path).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "stolen\n").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = embedded_password(dir.path()).unwrap_err().to_string();
        assert!(err.contains("symlink") && err.contains("broker-password"), "{err}");
        assert_eq!(local_embedded_password(dir.path()), None);
    }
}
