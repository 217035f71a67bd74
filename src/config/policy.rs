//! `[policy]`: what a deployment document may ask of this device, and `[policy.power]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The local policy: what any controller's deployment document may ask of this device (docs/deployments.md,
/// docs/security.md). A document that asks for more is refused as a whole, with every reason reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Registries (`host[:port]`, `docker.io` for Docker Hub) images may come from. Defaults to none, which
    /// means any registry.
    pub allowed_registries: Vec<String>,
    /// Absolute host directories that volumes may mount (a volume's host path must lie under one of them, with
    /// no symlink below it). `<state_dir>/volumes/` is always allowed. Defaults to none beyond that.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Whether a deployment may ask for a privileged container (`privileged = true`: every capability, every
    /// host device, no seccomp or AppArmor). Defaults to `false`.
    pub allow_privileged: bool,
    /// Host device nodes a deployment's `devices` may pass, as patterns of host paths (`/dev/ttyACM*`,
    /// `/dev/i2c-[0-9]`, `/dev/bus/usb` for everything below it). Every node a request expands to must match
    /// one. Defaults to none.
    pub allowed_devices: Vec<String>,
    /// Groups a deployment's `group_add` may name, as written there (`video`, `dialout`, `44`). Defaults to
    /// none.
    pub allowed_groups: Vec<String>,
    /// Namespaced sysctls a deployment's `sysctls` may set, as patterns (`net.ipv4.ping_group_range`,
    /// `net.ipv4.*`). Sysctls that are not namespaced are refused whatever this says. Defaults to none.
    pub allowed_sysctls: Vec<String>,
    /// Whether a deployment's `ulimits` may go above the agent's own hard limits. Defaults to `false`.
    pub allow_raised_ulimits: bool,
    /// Replaced by `allowed_devices`. `false` (what earlier example configs wrote) still loads and means
    /// nothing; `true` is an error naming the replacement. Not part of the documented config.
    #[serde(skip_serializing)]
    pub allow_devices: Option<bool>,

    // Container access: what the seed use case needs is allowed by default, nothing beyond it.
    /// Whether a deployment may share the host's network namespace (`network = "host"`, the default of
    /// documents). Defaults to `true`.
    pub allow_host_network: bool,
    /// Whether a deployment may join the agent's bridge (`network = "bridge"`): a network namespace of its
    /// own with outbound access through the host (masqueraded). Defaults to `true`.
    pub allow_bridge_network: bool,
    /// Host ports a bridge deployment may publish (`ports`), as `LOW-HIGH` ranges or single ports: the host
    /// listens on them (on every address unless the mapping names one) and forwards to the container. Defaults
    /// to `["1024-65535"]`: no port below 1024 (ssh, http, DNS of the host's own services); `[]` allows none.
    pub allowed_host_ports: Vec<String>,
    /// Whether a deployment may share the host's IPC namespace and its `/dev/shm` read-write (`ipc = "host"`,
    /// the default of documents). Defaults to `true`.
    pub allow_host_ipc: bool,
    /// Whether a container's process may run as root (uid 0) inside it, by its `user` or the image's.
    /// Defaults to `true`.
    pub allow_root: bool,
    /// Whether a deployment may have an `exec` health check (run inside the container, confined as it is).
    /// Defaults to `true`.
    pub allow_exec_health: bool,
    /// Whether a deployment may ask for cameras. Defaults to `true`.
    pub allow_cameras: bool,
    /// The Jetson conveniences a deployment may ask for (`jetson = [...]`; the camera selector `csi` needs
    /// `argus`). Defaults to `["argus", "localtime", "l4t-release", "model"]`: `display` (the X11 socket),
    /// `audio` (`/dev/snd`) and `usb` (`/dev/bus/usb`) widen what a container reaches and must be added here.
    pub allowed_jetson: Vec<crate::base::jetson::Convenience>,
    /// Whether a deployment may ask for the GPU. Defaults to `true`.
    pub allow_gpu: bool,
    /// CDI device names a deployment's `gpu` may name (`vendor/class=name`; `name` may be `*`). `gpu = true` is
    /// `nvidia.com/gpu=all`. Defaults to `["nvidia.com/gpu=*"]`.
    pub allowed_cdi_devices: Vec<String>,
    /// Capabilities a deployment may add to Docker's default set (`cap_add`), e.g. `CAP_NET_ADMIN`. Defaults to
    /// none.
    pub allowed_capabilities: Vec<String>,
    /// Whether a deployment may run without Docker's default seccomp profile (`seccomp = "unconfined"`).
    /// Defaults to `false`.
    pub allow_unconfined_seccomp: bool,
    /// Whether a deployment may run without the AppArmor profile (`apparmor = "unconfined"`). Defaults to
    /// `false`.
    pub allow_unconfined_apparmor: bool,
    /// Whether a deployment may turn no_new_privs off (`no_new_privileges = false`, for setuid binaries).
    /// Defaults to `false`.
    pub allow_new_privileges: bool,
    /// Most tasks a deployment may ask for (`pids_limit`); one that sets none gets the smaller of this and 4096.
    /// Defaults to 4096.
    pub pids_limit: u64,
    /// `[policy.power]`: whether controllers may change the power mode and jetson_clocks.
    pub power: PowerPolicy,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            allowed_registries: Vec::new(),
            allowed_host_paths: Vec::new(),
            allow_privileged: false,
            allowed_devices: Vec::new(),
            allowed_groups: Vec::new(),
            allowed_sysctls: Vec::new(),
            allow_raised_ulimits: false,
            allow_devices: None,
            // Container access.
            allow_host_network: true,
            allow_bridge_network: true,
            allowed_host_ports: vec!["1024-65535".into()],
            allow_host_ipc: true,
            allow_root: true,
            allow_exec_health: true,
            allow_cameras: true,
            allowed_jetson: crate::base::jetson::Convenience::default_allowed(),
            allow_gpu: true,
            allowed_cdi_devices: vec!["nvidia.com/gpu=*".into()],
            allowed_capabilities: Vec::new(),
            allow_unconfined_seccomp: false,
            allow_unconfined_apparmor: false,
            allow_new_privileges: false,
            pids_limit: crate::base::DEFAULT_PIDS_LIMIT,
            power: PowerPolicy::default(),
        }
    }
}

/// `[policy.power]`: power control from the fleet (`jetship power-mode`, `jetship clocks`), carried out with the
/// device's own `nvpmodel -m <id>` and `jetson_clocks`. Off by default: the mode changes what the board draws and
/// can need a reboot, so root on the device decides whether the network may ask for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowerPolicy {
    /// Whether `power-mode` and `clocks` commands are carried out. Defaults to `false` (refused, naming this key).
    pub allow_control: bool,
    /// The nvpmodel program, an absolute path run as given. Defaults to the first `nvpmodel` in /usr/sbin,
    /// /usr/bin, /usr/local/bin under `host.root`.
    pub nvpmodel: Option<PathBuf>,
    /// The jetson_clocks program, an absolute path run as given. Defaults to the first `jetson_clocks` in
    /// /usr/bin, /usr/sbin, /usr/local/bin under `host.root`.
    pub jetson_clocks: Option<PathBuf>,
}

impl PowerPolicy {
    fn check(&self, bad: &mut impl FnMut(&str, String)) {
        for (key, p) in [("policy.power.nvpmodel", &self.nvpmodel), ("policy.power.jetson_clocks", &self.jetson_clocks)]
        {
            if let Some(p) = p.as_ref().filter(|p| !p.is_absolute()) {
                bad(key, format!("`{}` must be an absolute path to the program", p.display()));
            }
        }
    }
}

impl PolicyConfig {
    /// Reports each key that is wrong through `bad(key, message)`.
    pub(super) fn check(&self, bad: &mut impl FnMut(&str, String)) {
        for (i, r) in self.allowed_registries.iter().enumerate() {
            if r.is_empty() || r.contains(['/', '@']) || r.chars().any(char::is_whitespace) {
                bad(
                    &format!("policy.allowed_registries[{i}]"),
                    format!("`{r}` must be a registry host[:port] such as nvcr.io or docker.io"),
                );
            }
        }
        for (i, p) in self.allowed_host_paths.iter().enumerate() {
            if !p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
                bad(
                    &format!("policy.allowed_host_paths[{i}]"),
                    format!("`{}` must be an absolute path without `..`", p.display()),
                );
            }
        }
        for (i, c) in self.allowed_cdi_devices.iter().enumerate() {
            let ok = c.split_once('=').is_some_and(|(kind, name)| kind.contains('/') && !name.is_empty());
            if !ok {
                bad(
                &format!("policy.allowed_cdi_devices[{i}]"),
                format!("`{c}` must be a CDI device name vendor/class=name, such as nvidia.com/gpu=* or nvidia.com/gpu=0"),
            );
            }
        }
        for (i, c) in self.allowed_capabilities.iter().enumerate() {
            let full = serde_json::Value::String(crate::base::capability_key(c));
            if serde_json::from_value::<oci_spec::runtime::Capability>(full).is_err() {
                bad(
                    &format!("policy.allowed_capabilities[{i}]"),
                    format!("`{c}` is not a Linux capability (e.g. CAP_NET_ADMIN)"),
                );
            }
        }
        super::policy_devices::check(self, bad);
        for (i, r) in self.allowed_host_ports.iter().enumerate() {
            if let Err(m) = crate::base::ports::parse_range(r) {
                bad(&format!("policy.allowed_host_ports[{i}]"), format!("{m} (e.g. \"1024-65535\" or \"8080\")"));
            }
        }
        if self.pids_limit == 0 {
            bad("policy.pids_limit", "must be at least 1".into());
        }
        self.power.check(bad);
    }
}
