//! The runtime side of the Container Network Interface (CNI spec 1.0): executes the plugins of a network
//! configuration list (Debian's `containernetworking-plugins`: bridge, host-local, portmap, firewall,
//! loopback) for one attachment. Each plugin is run with `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME` and `CNI_PATH` in its environment and its request configuration on stdin: the plugin's object
//! from the list plus `cniVersion`, `name`, the `runtimeConfig` its `capabilities` ask for and `prevResult`.
//! ADD runs the plugins in order, each given the previous one's result; DEL runs them in reverse and CHECK in
//! order, both given the final ADD result, which the caller must keep.
//!
//! Owns nothing on disk: where the result is kept and which namespace is used are the caller's.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// The protocol version jetship speaks (the newest the Debian 1.1 plugins accept).
pub(crate) const CNI_VERSION: &str = "1.0.0";

/// How long one plugin may run before it is killed (iptables under load can take seconds).
pub(crate) const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of a plugin's stdout read (a result or an error object).
const MAX_OUTPUT: u64 = 1 << 20;

/// A failed plugin call, naming the plugin, the command and what the plugin said.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "CNI plugin `{plugin}` not found in {}: install it (apt-get install containernetworking-plugins) or fix network.cni_path",
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
    )]
    NotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("CNI {command} of `{plugin}`: {message}")]
    Failed { plugin: String, command: &'static str, message: String },
    #[error("the network configuration is not a CNI configuration list: {0}")]
    BadConfig(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What one attachment is: the container, its namespace and the interface name inside it.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    /// Directories searched for plugin executables (`CNI_PATH`).
    pub cni_path: &'a [PathBuf],
}

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Del,
    Check,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
        }
    }
}

/// The plugins of a configuration list, with the list's name.
fn plugins(list: &Value) -> Result<(&str, &Vec<Value>)> {
    let name = list.get("name").and_then(Value::as_str).ok_or_else(|| Error::BadConfig("no `name`".into()))?;
    let plugins = list
        .get("plugins")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::BadConfig("no `plugins`".into()))?;
    Ok((name, plugins))
}

/// The request configuration of one plugin (spec section 3, "Deriving request configuration"): its object
/// without `capabilities`, plus `cniVersion`, `name`, the `runtimeConfig` entries its capabilities name and
/// the runtime provides, and `prevResult` when given.
pub fn request(plugin: &Value, name: &str, runtime_config: &Value, prev: Option<&Value>) -> Value {
    let mut req: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
    let caps = req.remove("capabilities");
    req.insert("cniVersion".into(), json!(CNI_VERSION));
    req.insert("name".into(), json!(name));
    let mut rc = Map::new();
    if let (Some(caps), Some(provided)) = (caps.as_ref().and_then(Value::as_object), runtime_config.as_object()) {
        for (cap, on) in caps {
            if on.as_bool() == Some(true) {
                if let Some(v) = provided.get(cap) {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
    }
    if !rc.is_empty() {
        req.insert("runtimeConfig".into(), Value::Object(rc));
    }
    if let Some(prev) = prev {
        req.insert("prevResult".into(), prev.clone());
    }
    Value::Object(req)
}

/// ADD: every plugin in order; returns the final result (to be kept for DEL and CHECK).
pub fn add(list: &Value, runtime_config: &Value, at: &Attachment<'_>) -> Result<Value> {
    let (name, plugins) = plugins(list)?;
    let mut prev: Option<Value> = None;
    for plugin in plugins {
        let req = request(plugin, name, runtime_config, prev.as_ref());
        prev = Some(invoke(Op::Add, &req, at)?.unwrap_or_else(|| json!({"cniVersion": CNI_VERSION})));
    }
    Ok(prev.expect("at least one plugin"))
}

/// DEL: every plugin in reverse order with the kept ADD result (`None` when ADD never finished: plugins then
/// release what they find by container id). Stops at the first error, as the spec says; DEL is idempotent,
/// so the caller retries later.
pub fn del(list: &Value, runtime_config: &Value, result: Option<&Value>, at: &Attachment<'_>) -> Result<()> {
    let (name, plugins) = plugins(list)?;
    for plugin in plugins.iter().rev() {
        invoke(Op::Del, &request(plugin, name, runtime_config, result), at)?;
    }
    Ok(())
}

/// CHECK: every plugin in order with the kept ADD result; `Ok` when the attachment is as ADD left it.
pub fn check(list: &Value, runtime_config: &Value, result: &Value, at: &Attachment<'_>) -> Result<()> {
    let (name, plugins) = plugins(list)?;
    if list.get("disableCheck").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    for plugin in plugins {
        invoke(Op::Check, &request(plugin, name, runtime_config, Some(result)), at)?;
    }
    Ok(())
}

/// The plugin executable named by `typ`, from the first directory of `dirs` that has it. A type with a path
/// separator is refused (it would name a program outside the plugin directories).
fn find(typ: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let not_found = || Error::NotFound { plugin: typ.to_owned(), dirs: dirs.to_vec() };
    if typ.is_empty() || typ.contains('/') || typ == "." || typ == ".." {
        return Err(not_found());
    }
    dirs.iter()
        .map(|d| d.join(typ))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(not_found)
}

/// Runs one plugin: the CNI environment (and a fixed PATH for the iptables and ip programs plugins run), the
/// request on stdin, at most [`PLUGIN_TIMEOUT`]. Returns its parsed stdout (`None` when empty, as DEL
/// answers). A non-zero exit is an error with the plugin's `msg` and `details`.
fn invoke(op: Op, req: &Value, at: &Attachment<'_>) -> Result<Option<Value>> {
    let typ = req.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
    let fail = |message: String| Error::Failed { plugin: typ.clone(), command: op.name(), message };
    let program = find(&typ, at.cni_path)?;
    let cni_path = std::env::join_paths(at.cni_path).map_err(|e| fail(format!("CNI_PATH: {e}")))?;
    let mut child = Command::new(&program)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", op.name())
        .env("CNI_CONTAINERID", at.container_id)
        .env("CNI_NETNS", at.netns)
        .env("CNI_IFNAME", at.ifname)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", program.display())))?;
    let body = serde_json::to_vec(req).expect("json serializes");
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(MAX_OUTPUT).read_to_end(&mut out);
        out
    });
    let err_reader = std::thread::spawn(move || {
        let mut err = Vec::new();
        let _ = (&mut stderr).take(MAX_OUTPUT).read_to_end(&mut err);
        err
    });
    let deadline = Instant::now() + PLUGIN_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("did not finish within {PLUGIN_TIMEOUT:?} and was killed")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(fail(format!("waiting for it: {e}"))),
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&out).ok();
    if !status.success() {
        let message = match &parsed {
            Some(e) => {
                let msg = e.get("msg").and_then(Value::as_str).unwrap_or("no message");
                match e.get("details").and_then(Value::as_str).filter(|d| !d.is_empty()) {
                    Some(d) => format!("{msg} ({d})"),
                    None => msg.to_owned(),
                }
            }
            None => format!("{status}: {}", crate::os::exec::trim_stderr(if err.is_empty() { &out } else { &err })),
        };
        return Err(fail(message));
    }
    if out.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    parsed.map(Some).ok_or_else(|| fail(format!("its output is not JSON: {}", crate::os::exec::trim_stderr(&out))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_version_name_capabilities_and_prev_result() {
        let plugin =
            json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}, "snat": true});
        let rc = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], "bandwidth": {}});
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let req = request(&plugin, "net", &rc, Some(&prev));
        assert_eq!(req["cniVersion"], CNI_VERSION);
        assert_eq!(req["name"], "net");
        assert_eq!(req["snat"], true);
        assert!(req.get("capabilities").is_none(), "capabilities must not be passed: {req}");
        assert_eq!(req["runtimeConfig"], json!({"portMappings": rc["portMappings"]}), "only asked-for capabilities");
        assert_eq!(req["prevResult"], prev);
        let first = request(&json!({"type": "bridge"}), "net", &rc, None);
        assert!(first.get("prevResult").is_none() && first.get("runtimeConfig").is_none(), "{first}");
    }

    #[test]
    fn plugin_types_with_paths_are_refused() {
        let dirs = [PathBuf::from("/usr/lib/cni")];
        for typ in ["../../bin/sh", "/bin/sh", "", ".."] {
            assert!(matches!(find(typ, &dirs), Err(Error::NotFound { .. })), "{typ}");
        }
    }

    #[test]
    fn a_list_without_plugins_is_refused() {
        let at = Attachment { container_id: "c", netns: Path::new("/x"), ifname: "eth0", cni_path: &[] };
        assert!(matches!(add(&json!({"name": "n", "plugins": []}), &json!({}), &at), Err(Error::BadConfig(_))));
        assert!(matches!(del(&json!({"plugins": [{}]}), &json!({}), None, &at), Err(Error::BadConfig(_))));
    }
}
