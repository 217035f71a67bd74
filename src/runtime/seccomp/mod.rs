//! Docker's default seccomp profile (kept as data beside this file: `default.json`, its source and licence in
//! `SOURCE.md`) and its translation into the OCI spec's `linux.seccomp` for one architecture, one bounding
//! capability set and one kernel, by moby's rules (`setupSeccomp`): the host's `archMap` entry, and each rule
//! kept or dropped by its `includes`/`excludes` (architectures, capabilities, minimum kernel).
//!
//! Pure: the caller passes the architecture, the capabilities and the kernel version. It must not decide
//! whether a container gets the profile (the deployment and the local policy do).

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder, LinuxSyscallBuilder,
};
use serde::Deserialize;

/// The profile as moby publishes it.
pub(crate) const DEFAULT_PROFILE: &str = include_str!("default.json");

/// The profile's file format (moby's `Seccomp` type; only what the default profile uses).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    min_kernel: Option<String>,
}

/// A machine the profile is translated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Go/libseccomp architecture name as the profile writes it: `amd64` or `arm64`.
    pub arch: &'static str,
    /// The container's bounding capabilities, as `CAP_...` names.
    pub caps: Vec<String>,
    /// The running kernel's (major, minor).
    pub kernel: (u32, u32),
}

/// The machine half of a [`Target`]: architecture and kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// As in [`Target::arch`].
    pub arch: &'static str,
    /// The kernel's (major, minor).
    pub kernel: (u32, u32),
}

impl Machine {
    /// This machine: its architecture and running kernel.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            other => other,
        };
        Self { arch, kernel: running_kernel() }
    }

    /// This machine running a container built for `platform` (`os/arch[/variant]`, the image's): the filter
    /// must match the architecture of the syscalls the container makes, which is the image's (an amd64 image
    /// run by an emulated arm64 agent, say). A platform with an unknown architecture keeps this machine's.
    pub(crate) fn for_platform(self, platform: &str) -> Self {
        let arch = match platform.split('/').nth(1) {
            Some("amd64") => "amd64",
            Some("arm64") => "arm64",
            Some("arm") => "arm",
            _ => self.arch,
        };
        Self { arch, ..self }
    }

    /// The target of a container with bounding capabilities `caps` on this machine.
    pub fn target(self, caps: &[Capability]) -> Target {
        Target { arch: self.arch, caps: cap_names(caps), kernel: self.kernel }
    }
}

/// `CAP_...` names of `caps`.
pub(crate) fn cap_names(caps: &[Capability]) -> Vec<String> {
    caps.iter().filter_map(|c| serde_json::to_value(c).ok()?.as_str().map(str::to_owned)).collect()
}

/// The running kernel's (major, minor), from `uname`; (0, 0) when it cannot be read (rules that need a newer
/// kernel are then left out, which only refuses more).
pub(crate) fn running_kernel() -> (u32, u32) {
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    parse_kernel(&release).unwrap_or((0, 0))
}

fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The seccomp architecture of a profile arch name (moby's `nativeToSeccomp`).
fn seccomp_arch(arch: &str) -> Option<Arch> {
    Some(match arch {
        "x86" => Arch::ScmpArchX86,
        "amd64" => Arch::ScmpArchX86_64,
        "arm" => Arch::ScmpArchArm,
        "arm64" => Arch::ScmpArchAarch64,
        "riscv64" => Arch::ScmpArchRiscv64,
        "ppc64le" => Arch::ScmpArchPpc64le,
        "s390x" => Arch::ScmpArchS390x,
        _ => return None,
    })
}

fn at_least(kernel: (u32, u32), min: &str) -> bool {
    parse_kernel(min).is_some_and(|m| kernel >= m)
}

/// Docker's default profile for `target`.
pub(crate) fn default_profile(target: &Target) -> LinuxSeccomp {
    translate(DEFAULT_PROFILE, target).expect("the bundled default seccomp profile translates")
}

/// Translates a profile in moby's format for `target`.
pub(crate) fn translate(profile: &str, target: &Target) -> Result<LinuxSeccomp, String> {
    let p: Profile = serde_json::from_str(profile).map_err(|e| format!("seccomp profile: {e}"))?;
    let mut architectures = Vec::new();
    if let Some(native) = seccomp_arch(target.arch) {
        if let Some(m) = p.arch_map.iter().find(|m| m.architecture == native) {
            architectures.push(m.architecture);
            architectures.extend(m.sub_architectures.iter().flatten().copied());
        }
    }
    let has_cap = |c: &String| target.caps.contains(c);
    let mut syscalls = Vec::new();
    for rule in p.syscalls {
        if let Some(ex) = &rule.excludes {
            if ex.arches.iter().any(|a| a == target.arch)
                || ex.caps.iter().any(has_cap)
                || ex.min_kernel.as_deref().is_some_and(|k| at_least(target.kernel, k))
            {
                continue;
            }
        }
        if let Some(inc) = &rule.includes {
            if (!inc.arches.is_empty() && !inc.arches.iter().any(|a| a == target.arch))
                || !inc.caps.iter().all(has_cap)
                || inc.min_kernel.as_deref().is_some_and(|k| !at_least(target.kernel, k))
            {
                continue;
            }
        }
        let mut b = LinuxSyscallBuilder::default().names(rule.names).action(rule.action);
        if let Some(e) = rule.errno_ret {
            b = b.errno_ret(e);
        }
        if let Some(args) = rule.args.filter(|a| !a.is_empty()) {
            b = b.args(args);
        }
        syscalls.push(b.build().map_err(|e| e.to_string())?);
    }
    let mut b = LinuxSeccompBuilder::default().default_action(p.default_action).syscalls(syscalls);
    if let Some(e) = p.default_errno_ret {
        b = b.default_errno_ret(e);
    }
    if !architectures.is_empty() {
        b = b.architectures(architectures);
    }
    b.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::DEFAULT_CAPABILITIES;

    fn target(arch: &'static str, extra: &[&str]) -> Target {
        let mut caps = cap_names(&DEFAULT_CAPABILITIES);
        caps.extend(extra.iter().map(|s| s.to_string()));
        Target { arch, caps, kernel: (5, 15) }
    }

    fn allowed(s: &LinuxSeccomp, name: &str) -> Vec<Option<Vec<LinuxSeccompArg>>> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.names().iter().any(|n| n == name))
            .map(|r| r.args().clone())
            .collect()
    }

    #[test]
    fn the_default_profile_refuses_by_default_and_names_the_host_architectures() {
        for (arch, want) in [
            ("amd64", vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]),
            ("arm64", vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]),
        ] {
            let s = default_profile(&target(arch, &[]));
            assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno, "{arch}");
            assert_eq!(s.default_errno_ret(), Some(1), "EPERM, {arch}");
            assert_eq!(s.architectures().as_deref(), Some(&want[..]), "{arch}");
            assert!(!allowed(&s, "read").is_empty() && !allowed(&s, "openat").is_empty(), "{arch}");
        }
    }

    #[test]
    fn namespaces_mounts_and_module_loading_need_the_capabilities_docker_drops() {
        let s = default_profile(&target("arm64", &[]));
        for name in ["unshare", "setns", "mount", "umount2", "pivot_root", "init_module", "bpf", "reboot", "kexec_load"]
        {
            assert!(allowed(&s, name).is_empty(), "{name} allowed by default");
        }
        // clone is allowed only without namespace flags (CLONE_NEWUSER, CLONE_NEWNET, ... = 0x7E020000).
        let clone = allowed(&s, "clone");
        assert_eq!(clone.len(), 1);
        let arg = clone[0].as_ref().unwrap()[0];
        assert_eq!((arg.index(), arg.value()), (0, 0x7E02_0000));
        // clone3 cannot be filtered by flags: it answers ENOSYS so libcs fall back to clone.
        let clone3 = s.syscalls().iter().flatten().find(|r| r.names() == &["clone3".to_string()]).unwrap();
        assert_eq!((clone3.action(), clone3.errno_ret()), (LinuxSeccompAction::ScmpActErrno, Some(38)));

        let admin = default_profile(&target("arm64", &["CAP_SYS_ADMIN"]));
        assert!(!allowed(&admin, "unshare").is_empty() && !allowed(&admin, "mount").is_empty());
        assert_eq!(allowed(&admin, "clone"), [None], "CAP_SYS_ADMIN lifts the clone flag filter");
        assert!(!allowed(&default_profile(&target("arm64", &["CAP_SYS_MODULE"])), "init_module").is_empty());
    }

    #[test]
    fn architecture_and_kernel_rules_follow_the_target() {
        let arm = default_profile(&target("arm64", &[]));
        let x86 = default_profile(&target("amd64", &[]));
        assert!(!allowed(&arm, "sync_file_range2").is_empty(), "arm-only rule on arm64");
        assert!(allowed(&x86, "sync_file_range2").is_empty());
        assert!(!allowed(&x86, "arch_prctl").is_empty(), "amd64-only rule on amd64");
        assert!(allowed(&arm, "arch_prctl").is_empty());
        // ptrace is safe under seccomp from 4.8 on; older kernels need CAP_SYS_PTRACE for it.
        let old = Target { kernel: (4, 4), ..target("arm64", &[]) };
        assert!(!allowed(&arm, "ptrace").is_empty());
        assert!(allowed(&default_profile(&old), "ptrace").is_empty(), "4.8+ rules need a 4.8 kernel");
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_kernel("5.15.148-tegra"), Some((5, 15)));
        assert_eq!(parse_kernel("4.9.337-tegra"), Some((4, 9)));
        assert_eq!(parse_kernel("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel("junk"), None);
        assert!(running_kernel() > (3, 0));
    }

    #[test]
    fn a_broken_profile_is_an_error_not_a_panic() {
        assert!(translate("{", &target("arm64", &[])).unwrap_err().contains("seccomp profile"));
    }

    #[test]
    fn the_filters_architecture_is_the_images() {
        let m = Machine { arch: "arm64", kernel: (5, 15) };
        assert_eq!(m.for_platform("linux/amd64").arch, "amd64");
        assert_eq!(m.for_platform("linux/arm/v7").arch, "arm");
        assert_eq!(m.for_platform("linux/riscv64").arch, "arm64");
        assert_eq!(m.for_platform("").arch, "arm64");
    }
}
