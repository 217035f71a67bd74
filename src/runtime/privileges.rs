//! What a container may do beyond its namespaces, past Docker's defaults: `privileged`, `cap_drop`,
//! `group_add`, `ulimits`, `sysctls`, `read_only_rootfs` and `tmpfs`. Owns their syntax (one parser for
//! documents and `jetship run`), the rules on which sysctls a container may set (only namespaced ones), and how
//! the native backend's runtime spec carries them ([`capabilities`], [`apply`]); the Docker backend hands the
//! same values to the Engine's HostConfig.
//!
//! Pure: no file system access. Which of these a remote document may ask for is the local policy's
//! (`deploy::policy`); values arrive here already allowed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_spec::runtime::{
    Capability, LinuxDeviceCgroupBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType, Spec,
};
use serde::{Deserialize, Serialize};

use super::spec::{parse_capability, Error, Result, RunSpec, DEFAULT_CAPABILITIES};
use crate::base::{IpcMode, NetworkMode};

/// Most entries of each list field (`ulimits`, `sysctls`, `tmpfs`, `group_add`, `cap_drop`).
pub(crate) const MAX_ENTRIES: usize = 64;

/// Every capability by its number (`include/uapi/linux/capability.h`): what `privileged` gives, those the
/// agent holds itself ([`own_capabilities`]).
pub(crate) const ALL_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// One resource limit (`nofile=1024:2048`): soft and hard, `u64::MAX` for unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ulimit {
    /// `nofile`, `memlock`, ... (setrlimit(2)'s names without `RLIMIT_`, lower case).
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// The resource names `ulimits` may set (Docker's set).
pub(crate) const ULIMIT_NAMES: [&str; 16] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

fn limit_value(s: &str) -> std::result::Result<u64, String> {
    match s.trim() {
        "unlimited" | "-1" => Ok(u64::MAX),
        n => n.parse().map_err(|_| format!("`{n}` must be a whole number, -1 or unlimited")),
    }
}

impl Ulimit {
    /// Parses `NAME=SOFT[:HARD]` (`docker run --ulimit`); a value of `-1` or `unlimited` is no limit.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let (name, values) =
            text.split_once('=').ok_or_else(|| format!("`{text}` must be NAME=SOFT[:HARD], e.g. nofile=1024:4096"))?;
        let name = name.trim().to_ascii_lowercase();
        if !ULIMIT_NAMES.contains(&name.as_str()) {
            return Err(format!("`{name}` is not a resource limit (one of {})", ULIMIT_NAMES.join(", ")));
        }
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (limit_value(s)?, limit_value(h)?),
            None => {
                let v = limit_value(values)?;
                (v, v)
            }
        };
        if soft > hard {
            return Err(format!("`{text}`: the soft limit must not be above the hard limit"));
        }
        Ok(Self { name, soft, hard })
    }

    /// The OCI rlimit type (`RLIMIT_NOFILE`).
    pub(crate) fn rlimit_type(&self) -> Option<PosixRlimitType> {
        format!("RLIMIT_{}", self.name.to_ascii_uppercase()).parse().ok()
    }
}

/// A tmpfs mount (`/run:size=64m,mode=755`): path and mount options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tmpfs {
    pub path: String,
    /// Comma-separated options as written (checked by [`Tmpfs::parse`]). Empty: the defaults.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub options: String,
}

/// What a tmpfs mount starts with, as Docker's `--tmpfs`: options written after these override them.
pub(crate) const TMPFS_DEFAULTS: [&str; 3] = ["nosuid", "nodev", "noexec"];

impl Tmpfs {
    /// Parses `PATH[:OPTIONS]` (`docker run --tmpfs`). Options: `size=` (bytes, `k`/`m`/`g`), `mode=` (octal),
    /// `uid=`, `gid=`, `nr_inodes=`, and `ro`, `rw`, `exec`, `noexec`, `nosuid`, `nodev`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let (path, options) = text.split_once(':').unwrap_or((text, ""));
        if !path.starts_with('/') || path == "/" || path.split('/').any(|c| c == ".." || c == ".") {
            return Err(format!("tmpfs path `{path}` must be an absolute path other than / without `..`"));
        }
        if path.len() > 256 || path.chars().any(char::is_control) {
            return Err(format!("tmpfs path `{path}` must be at most 256 characters without control characters"));
        }
        for o in options.split(',').filter(|o| !o.is_empty()) {
            let ok = match o.split_once('=') {
                Some(("size", v)) => {
                    v.len() <= 24 && {
                        let digits = v.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G']);
                        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
                    }
                }
                Some(("mode", v)) => (1..=4).contains(&v.len()) && v.chars().all(|c| ('0'..='7').contains(&c)),
                Some(("uid" | "gid" | "nr_inodes", v)) => v.parse::<u32>().is_ok(),
                Some(_) => false,
                None => matches!(o, "ro" | "rw" | "exec" | "noexec" | "nosuid" | "nodev"),
            };
            if !ok {
                return Err(format!(
                    "tmpfs option `{o}` is not one of size=N[k|m|g], mode=OCTAL, uid=N, gid=N, nr_inodes=N, ro, rw, exec, noexec, nosuid, nodev"
                ));
            }
        }
        Ok(Self { path: path.to_owned(), options: options.to_owned() })
    }

    /// The mount options: [`TMPFS_DEFAULTS`] then the written ones.
    pub(crate) fn mount_options(&self) -> Vec<String> {
        TMPFS_DEFAULTS
            .iter()
            .map(|s| s.to_string())
            .chain(self.options.split(',').filter(|o| !o.is_empty()).map(str::to_owned))
            .collect()
    }
}

/// The namespace a sysctl belongs to, which the container must have of its own to set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SysctlNamespace {
    /// `kernel.msg*`, `kernel.sem`, `kernel.shm*`, `fs.mqueue.*`: needs `ipc = "private"`.
    Ipc,
    /// `net.*`: needs a network namespace of its own (not `network = "host"`).
    Net,
}

/// The namespace of sysctl `name`, `None` when it is not namespaced (setting it would change the whole host),
/// as runc and Docker judge it.
pub(crate) fn sysctl_namespace(name: &str) -> Option<SysctlNamespace> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&name) || name.starts_with("fs.mqueue.") {
        Some(SysctlNamespace::Ipc)
    } else if name.starts_with("net.") {
        Some(SysctlNamespace::Net)
    } else {
        None
    }
}

/// Why sysctl `name = value` cannot be set in a container with `ipc` and `network`, or `None` when it can.
pub fn sysctl_problem(name: &str, value: &str, ipc: IpcMode, network: NetworkMode) -> Option<String> {
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Some(format!("`{name}` is not a sysctl name (e.g. net.ipv4.ping_group_range)"));
    }
    if value.len() > 256 || value.chars().any(|c| c.is_control() && c != '\t') {
        return Some(format!("the value of `{name}` must be at most 256 characters on one line"));
    }
    match sysctl_namespace(name) {
        None => Some(format!(
            "`{name}` is not namespaced: setting it would change the whole host; only net.*, fs.mqueue.*, kernel.msg*, kernel.sem and kernel.shm* can be set for a container"
        )),
        Some(SysctlNamespace::Ipc) if ipc == IpcMode::Host => {
            Some(format!("`{name}` would change the host's IPC namespace: set ipc = \"private\""))
        }
        Some(SysctlNamespace::Net) if network == NetworkMode::Host => {
            Some(format!("`{name}` would change the host's network namespace: use a network of the container's own"))
        }
        Some(_) => None,
    }
}

/// Whether `g` can name a group for `group_add`: a gid, or a name as /etc/group writes it.
pub(crate) fn valid_group(g: &str) -> bool {
    g.parse::<u32>().is_ok()
        || (!g.is_empty()
            && g.len() <= 32
            && g.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && g.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
}

/// The gids of `groups` (gids, or names looked up in the image's /etc/group text `group`).
pub(crate) fn resolve_groups(groups: &[String], group: &str) -> Result<Vec<u32>> {
    groups
        .iter()
        .map(|g| match g.parse::<u32>() {
            Ok(gid) => Ok(gid),
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| Error::Invalid {
                    field: "group_add",
                    reason: format!("no group `{g}` in the image's /etc/group; use a numeric gid"),
                }),
        })
        .collect()
}

/// The bounding set of `status` (the text of /proc/self/status) as a bit mask.
pub(crate) fn own_capabilities(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capabilities of the process: Docker's default set, or when privileged every capability in
/// `run.own_capabilities`; then `cap_drop` (`ALL` drops all) and `cap_add`, in Docker's order.
pub fn capabilities(run: &RunSpec) -> Result<Vec<Capability>> {
    let mut caps: Vec<Capability> = if run.privileged {
        let own = run.own_capabilities.unwrap_or(u64::MAX);
        ALL_CAPABILITIES
            .iter()
            .enumerate()
            .filter(|(bit, _)| own & (1 << bit) != 0)
            .filter_map(|(_, c)| parse_capability(c))
            .collect()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    let bad = |field: &'static str, name: &str| Error::Invalid {
        field,
        reason: format!("`{name}` is not a Linux capability (e.g. CAP_NET_ADMIN)"),
    };
    for name in &run.cap_drop {
        if name.trim().eq_ignore_ascii_case("all") {
            caps.clear();
            continue;
        }
        let cap = parse_capability(name).ok_or_else(|| bad("cap_drop", name))?;
        caps.retain(|c| *c != cap);
    }
    for name in &run.cap_add {
        let cap = parse_capability(name).ok_or_else(|| bad("cap_add", name))?;
        if !caps.contains(&cap) {
            caps.push(cap);
        }
    }
    Ok(caps)
}

/// Puts the privilege fields of `run` into the built spec `spec`: for `privileged`, a writable /sys and cgroup
/// file system, no masked or read-only paths and every device allowed by the cgroup; the read-only root, tmpfs
/// mounts, sysctls, rlimits, supplementary groups, and the host owners of passed device nodes.
pub fn apply(spec: &mut Spec, run: &RunSpec) -> Result<()> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    if run.privileged {
        for m in mounts.iter_mut().filter(|m| matches!(m.destination().to_str(), Some("/sys" | "/sys/fs/cgroup"))) {
            let options: Vec<String> =
                m.options().clone().unwrap_or_default().into_iter().filter(|o| o != "ro").collect();
            m.set_options(Some([options, vec!["rw".into()]].concat()));
        }
    }
    for t in &run.tmpfs {
        mounts.retain(|m| m.destination().to_str() != Some(t.path.as_str()));
        mounts.push(
            MountBuilder::default()
                .destination(&t.path)
                .typ("tmpfs")
                .source("tmpfs")
                .options(t.mount_options())
                .build()?,
        );
    }
    spec.set_mounts(Some(mounts));
    if run.read_only_rootfs {
        if let Some(root) = spec.root_mut() {
            root.set_readonly(Some(true));
        }
    }
    if let Some(process) = spec.process_mut() {
        let mut rlimits = process.rlimits().clone().unwrap_or_default();
        for u in &run.ulimits {
            let typ = u.rlimit_type().ok_or_else(|| Error::Invalid {
                field: "ulimits",
                reason: format!("`{}` is not a resource limit", u.name),
            })?;
            rlimits.retain(|r| r.typ() != typ);
            rlimits.push(PosixRlimitBuilder::default().typ(typ).soft(u.soft).hard(u.hard).build()?);
        }
        process.set_rlimits((!rlimits.is_empty()).then_some(rlimits));
        if !run.additional_gids.is_empty() {
            let mut user = process.user().clone();
            user.set_additional_gids(Some(run.additional_gids.clone()));
            process.set_user(user);
        }
    }
    if let Some(linux) = spec.linux_mut() {
        if run.privileged {
            linux.set_masked_paths(None);
            linux.set_readonly_paths(None);
            if let Some(resources) = linux.resources_mut() {
                resources
                    .set_devices(Some(vec![LinuxDeviceCgroupBuilder::default().allow(true).access("rwm").build()?]));
            }
        }
        if !run.sysctls.is_empty() {
            let sysctl: std::collections::HashMap<String, String> =
                run.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            linux.set_sysctl(Some(sysctl));
        }
        if let Some(devices) = linux.devices_mut() {
            for d in devices.iter_mut() {
                if let Some((_, uid, gid)) = run.device_owners.iter().find(|(p, _, _)| p == d.path()) {
                    d.set_uid(Some(*uid));
                    d.set_gid(Some(*gid));
                }
            }
        }
    }
    Ok(())
}

/// Owners of passed device nodes by container path, for [`RunSpec::device_owners`].
pub(crate) type DeviceOwners = Vec<(PathBuf, u32, u32)>;

/// The sysctls as the Docker Engine takes them.
pub(crate) fn sysctl_map(sysctls: &BTreeMap<String, String>) -> Option<std::collections::HashMap<String, String>> {
    (!sysctls.is_empty()).then(|| sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(run: &RunSpec) -> Spec {
        let image = super::super::spec::ImageProcess { cmd: vec!["sh".into()], ..Default::default() };
        let host = super::super::spec::HostFiles::under(std::path::Path::new("/"));
        super::super::spec::build(&image, run, Default::default(), std::path::Path::new("/r"), &host).unwrap()
    }

    fn mount_options(spec: &Spec, dest: &str) -> Vec<String> {
        let m = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination().to_str() == Some(dest));
        m.unwrap_or_else(|| panic!("no mount {dest}")).options().clone().unwrap_or_default()
    }

    #[test]
    fn a_privileged_spec_has_every_cap_a_writable_sys_no_masks_and_every_device_allowed() {
        let node = crate::host::devices::inject::DeviceNode {
            path: "/dev/ttyACM0".into(),
            kind: 'c',
            major: 166,
            minor: 0,
            file_mode: Some(0o660),
            access: "rwm".into(),
        };
        let run = RunSpec {
            privileged: true,
            own_capabilities: Some(0x1ff_ffff_ffff),
            devices: vec![node.clone()],
            device_owners: vec![("/dev/ttyACM0".into(), 0, 20)],
            ..Default::default()
        };
        let spec = build(&run);
        let caps = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap();
        assert_eq!(caps.effective().as_ref().unwrap().len(), 41);
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 41);
        assert!(!mount_options(&spec, "/sys").contains(&"ro".to_string()));
        assert!(!mount_options(&spec, "/sys/fs/cgroup").contains(&"ro".to_string()));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().is_none() && linux.readonly_paths().is_none());
        let rules = linux.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow() && rules[0].typ().is_none() && rules[0].major().is_none());
        let d = &linux.devices().as_ref().unwrap()[0];
        assert_eq!((d.major(), d.minor(), d.gid()), (166, 0, Some(20)), "the host node's group is kept");
        assert!(linux.seccomp().is_none());

        // Not privileged: the default set, masks, a read-only /sys and one rule per device after deny-all.
        let spec = build(&RunSpec { devices: vec![node], ..Default::default() });
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().as_ref().is_some_and(|m| !m.is_empty()));
        assert!(mount_options(&spec, "/sys").contains(&"ro".to_string()));
        let rules = linux.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert_eq!(rules.len(), 2);
        assert!(!rules[0].allow() && rules[1].allow() && rules[1].major() == Some(166) && rules[1].minor() == Some(0));
    }

    #[test]
    fn read_only_root_tmpfs_sysctls_ulimits_and_groups_reach_the_spec() {
        let run = RunSpec {
            read_only_rootfs: true,
            tmpfs: vec![Tmpfs::parse("/run:size=8m,exec").unwrap()],
            sysctls: BTreeMap::from([("net.ipv4.ping_group_range".into(), "0 2147483647".into())]),
            ulimits: vec![Ulimit::parse("nofile=100:200").unwrap(), Ulimit::parse("memlock=-1").unwrap()],
            nofile: Some(65536),
            additional_gids: vec![44, 20],
            ..Default::default()
        };
        let spec = build(&run);
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        assert_eq!(mount_options(&spec, "/run"), ["nosuid", "nodev", "noexec", "size=8m", "exec"]);
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.sysctl().as_ref().unwrap()["net.ipv4.ping_group_range"], "0 2147483647");
        let process = spec.process().as_ref().unwrap();
        let rlimits = process.rlimits().as_ref().unwrap();
        let nofile: Vec<_> = rlimits.iter().filter(|r| r.typ() == PosixRlimitType::RlimitNofile).collect();
        assert_eq!((nofile.len(), nofile[0].soft(), nofile[0].hard()), (1, 100, 200), "the ulimit replaces nofile");
        assert!(rlimits.iter().any(|r| r.typ() == PosixRlimitType::RlimitMemlock && r.hard() == u64::MAX));
        assert_eq!(process.user().additional_gids().as_deref(), Some(&[44, 20][..]));
    }

    #[test]
    fn ulimits_parse_as_docker_writes_them() {
        assert_eq!(
            Ulimit::parse("nofile=1024:4096").unwrap(),
            Ulimit { name: "nofile".into(), soft: 1024, hard: 4096 }
        );
        assert_eq!(
            Ulimit::parse("memlock=-1").unwrap(),
            Ulimit { name: "memlock".into(), soft: u64::MAX, hard: u64::MAX }
        );
        assert_eq!(Ulimit::parse("NPROC=unlimited").unwrap().name, "nproc");
        assert_eq!(Ulimit::parse("nofile=8").unwrap().rlimit_type(), Some(PosixRlimitType::RlimitNofile));
        for bad in ["nofile", "files=1", "nofile=a", "nofile=10:5", "nofile=1:2:3", "nofile=-2"] {
            assert!(Ulimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tmpfs_takes_a_closed_set_of_options_after_dockers_defaults() {
        let t = Tmpfs::parse("/run:size=64m,mode=1777,exec").unwrap();
        assert_eq!(t.mount_options(), ["nosuid", "nodev", "noexec", "size=64m", "mode=1777", "exec"]);
        assert_eq!(Tmpfs::parse("/tmp").unwrap().mount_options(), TMPFS_DEFAULTS);
        for bad in ["tmp", "/", "/a/../etc", "/run:suid", "/run:dev", "/run:size=lots", "/run:mode=999", "/run:x=1"] {
            assert!(Tmpfs::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_namespaced_sysctls_of_namespaces_the_container_owns_are_allowed() {
        let (p, n) = (IpcMode::Private, NetworkMode::None);
        assert_eq!(sysctl_problem("net.ipv4.ping_group_range", "0 2147483647", p, n), None);
        assert_eq!(sysctl_problem("kernel.shmmax", "68719476736", p, n), None);
        assert_eq!(sysctl_problem("fs.mqueue.msg_max", "64", p, n), None);
        for host in ["kernel.panic", "vm.overcommit_memory", "kernel.hostname", "fs.file-max"] {
            assert!(sysctl_problem(host, "1", p, n).unwrap().contains("not namespaced"), "{host}");
        }
        assert!(sysctl_problem("kernel.shmmax", "1", IpcMode::Host, n).unwrap().contains("ipc = \"private\""));
        assert!(sysctl_problem("net.core.somaxconn", "1", p, NetworkMode::Host).unwrap().contains("network"));
        assert!(sysctl_problem("net.a\nb", "1", p, n).is_some());
        assert!(sysctl_problem("net.core.somaxconn", "1\n2", p, n).is_some());
    }

    #[test]
    fn groups_resolve_by_gid_or_image_name() {
        let group = "root:x:0:\nvideo:x:44:\ndialout:x:20:app\n";
        assert_eq!(resolve_groups(&["video".into(), "20".into(), "1234".into()], group).unwrap(), [44, 20, 1234]);
        assert!(resolve_groups(&["gpio".into()], group).unwrap_err().to_string().contains("gpio"));
        assert!(valid_group("video") && valid_group("44") && !valid_group("Video!") && !valid_group(""));
    }

    #[test]
    fn privileged_gets_every_capability_the_kernel_knows_and_drops_apply_after() {
        let run = RunSpec { privileged: true, own_capabilities: Some(0x1ff_ffff_ffff), ..Default::default() };
        assert_eq!(capabilities(&run).unwrap().len(), 41);
        // An agent without CAP_SYS_RESOURCE (bit 24) cannot give it.
        let own = own_capabilities("CapPrm:\t000001ffffffffff\nCapBnd:\t000001fffeffffff\n");
        assert_eq!(own, Some(0x1ff_feff_ffff));
        let run = RunSpec { privileged: true, own_capabilities: own, ..Default::default() };
        let caps = capabilities(&run).unwrap();
        assert_eq!(caps.len(), 40);
        assert!(!caps.contains(&Capability::SysResource));
        let run = RunSpec { cap_drop: vec!["NET_RAW".into(), "mknod".into()], ..Default::default() };
        let caps = capabilities(&run).unwrap();
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len() - 2);
        assert!(!caps.contains(&Capability::NetRaw) && !caps.contains(&Capability::Mknod));
        let run = RunSpec {
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["CAP_NET_BIND_SERVICE".into()],
            ..Default::default()
        };
        assert_eq!(capabilities(&run).unwrap(), [Capability::NetBindService]);
        assert!(capabilities(&RunSpec { cap_drop: vec!["FLY".into()], ..Default::default() }).is_err());
    }
}
