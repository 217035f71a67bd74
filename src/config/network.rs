//! `[network]`: the bridge that `network = "bridge"` containers of the native backend join, and where the CNI
//! plugins are. The Docker backend uses the Engine's own bridge instead.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[network]`. The defaults do not collide with Docker's `docker0` (172.17.0.0/16) or podman's
/// `cni-podman0` (10.88.0.0/16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// The bridge interface, also the CNI network's name. Two agents on one host (or two test runs) need
    /// different ones. Defaults to `jetship0`.
    pub bridge: String,
    /// The IPv4 subnet container addresses come from (the bridge takes the first address). Defaults to
    /// `10.89.0.0/24`.
    pub subnet: String,
    /// Directories searched for the CNI plugins (bridge, host-local, portmap, firewall, loopback). Defaults
    /// to `["/usr/lib/cni", "/opt/cni/bin"]` (Debian's package, then the upstream location).
    pub cni_path: Vec<PathBuf>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            bridge: "jetship0".into(),
            subnet: "10.89.0.0/24".into(),
            cni_path: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
        }
    }
}

impl NetworkConfig {
    /// Reports each key that is wrong through `bad(key, message)`.
    pub(super) fn check(&self, bad: &mut impl FnMut(&str, String)) {
        check_config(&self.bridge, &self.subnet, &self.cni_path, bad);
    }
}

/// Whether a config's bridge, subnet and plugin directories are usable; each problem through `bad(key, message)`.
fn check_config(bridge: &str, subnet: &str, cni_path: &[PathBuf], bad: &mut impl FnMut(&str, String)) {
    if bridge.is_empty() || bridge.len() > 15 || !bridge.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bad(
            "network.bridge",
            format!("`{bridge}` must be 1 to 15 letters, digits, `-`, `_` or `.` (an interface name)"),
        );
    }
    if bridge == "docker0" {
        bad("network.bridge", "`docker0` is the Docker daemon's bridge; choose another name".into());
    }
    let ok = subnet.split_once('/').is_some_and(|(ip, len)| {
        ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| (8..=30).contains(&l))
    });
    if !ok {
        bad("network.subnet", format!("`{subnet}` must be an IPv4 subnet such as \"10.89.0.0/24\" (prefix 8 to 30)"));
    }
    if cni_path.is_empty() || cni_path.iter().any(|p| !p.is_absolute()) {
        bad("network.cni_path", "must list absolute directories, e.g. [\"/usr/lib/cni\", \"/opt/cni/bin\"]".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_network_config_is_reported_by_key() {
        let mut seen = Vec::new();
        let mut bad = |k: &str, m: String| seen.push((k.to_owned(), m));
        check_config("docker0", "10.89.0.0/31", &[PathBuf::from("lib/cni")], &mut bad);
        check_config("a-very-long-bridge-name", "10.89.0.0", &[], &mut bad);
        check_config("jetship0", "10.89.0.0/24", &[PathBuf::from("/usr/lib/cni")], &mut bad);
        let keys: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "network.bridge",
                "network.subnet",
                "network.cni_path",
                "network.bridge",
                "network.subnet",
                "network.cni_path"
            ]
        );
    }
}
