//! The local policy's checks of a deployment's device and privilege fields: every `devices` request covered
//! by `policy.allowed_devices`, every `group_add` entry in `policy.allowed_groups`, every sysctl matching
//! `policy.allowed_sysctls`, and no `ulimits` above the agent's own hard limits without
//! `policy.allow_raised_ulimits`. `privileged` is checked beside the other keys (`policy.allow_privileged`);
//! `cap_drop`, `read_only_rootfs` and `tmpfs` only narrow what a container can do and need no key.
//!
//! Pure but for `getrlimit(2)` of the agent's own limits. The nodes a glob or directory reaches are checked
//! again, one by one, when the container is created ([`crate::runtime::devices`], from `policy::confine`).

use crate::config::PolicyConfig;
use crate::deploy::document::Deployment;
use crate::runtime::devices::{covers, DeviceRequest};
use crate::runtime::privileges::Ulimit;

use super::policy::refusal;

/// Reports through `bad(field, message)` each device and privilege field of `d` that `policy` does not allow.
pub(super) fn check(d: &Deployment, policy: &PolicyConfig, bad: &mut impl FnMut(String, String)) {
    for (i, text) in d.devices.iter().enumerate() {
        // Validation reports a request that does not parse.
        let Ok(r) = DeviceRequest::parse(text) else { continue };
        if !policy.allowed_devices.iter().any(|p| covers(p, &r.host)) {
            bad(
                format!("devices[{i}]"),
                refusal(&format!("device `{}`", r.host), &format!("policy.allowed_devices to include \"{}\"", r.host)),
            );
        }
    }
    for (i, g) in d.group_add.iter().enumerate() {
        if !policy.allowed_groups.iter().any(|a| a == g) {
            bad(
                format!("group_add[{i}]"),
                refusal(&format!("supplementary group `{g}`"), &format!("policy.allowed_groups to include \"{g}\"")),
            );
        }
    }
    for name in d.sysctls.keys() {
        let allowed = policy.allowed_sysctls.iter().any(|p| glob::Pattern::new(p).is_ok_and(|p| p.matches(name)));
        if !allowed {
            bad(
                format!("sysctls.{name}"),
                refusal(&format!("sysctl `{name}`"), &format!("policy.allowed_sysctls to include \"{name}\"")),
            );
        }
    }
    if !policy.allow_raised_ulimits {
        for (i, text) in d.ulimits.iter().enumerate() {
            let Ok(u) = Ulimit::parse(text) else { continue };
            if let Some(own) = own_hard_limit(&u.name).filter(|own| u.hard > *own) {
                let shown = |v: u64| if v == u64::MAX { "unlimited".to_owned() } else { v.to_string() };
                bad(
                    format!("ulimits[{i}]"),
                    refusal(
                        &format!(
                            "raising {} to {} (the agent's own hard limit is {})",
                            u.name,
                            shown(u.hard),
                            shown(own)
                        ),
                        "policy.allow_raised_ulimits = true",
                    ),
                );
            }
        }
    }
}

/// The agent's own hard limit of resource `name` (`nofile`), `u64::MAX` for unlimited.
fn own_hard_limit(name: &str) -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource};
    let resource = match name {
        "as" => Resource::RLIMIT_AS,
        "core" => Resource::RLIMIT_CORE,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        "fsize" => Resource::RLIMIT_FSIZE,
        "locks" => Resource::RLIMIT_LOCKS,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "rss" => Resource::RLIMIT_RSS,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "rttime" => Resource::RLIMIT_RTTIME,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "stack" => Resource::RLIMIT_STACK,
        _ => return None,
    };
    let (_, hard) = getrlimit(resource).ok()?;
    Some(if hard == libc::RLIM_INFINITY { u64::MAX } else { hard })
}

#[cfg(test)]
mod tests {
    use crate::config::PolicyConfig;
    use crate::deploy::document::{parse, Format};
    use std::path::Path;

    fn refusals(toml: &str, policy: &PolicyConfig) -> Vec<(String, String)> {
        let doc = parse(toml.as_bytes(), Some(Format::Toml), "t.toml").unwrap();
        crate::deploy::policy::check(&doc, policy, Path::new("/var/lib/jetship"))
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect()
    }

    const WIDE: &str = r#"
[deployments.w]
image = "busybox"
ipc = "private"
network = "none"
privileged = true
devices = ["/dev/ttyACM0", "/dev/i2c-1:/dev/i2c-7:rw", "/dev/ttyUSB*", "/dev/bus/usb"]
group_add = ["dialout"]
sysctls = { "net.ipv4.ping_group_range" = "0 2147483647" }
ulimits = ["nofile=unlimited"]
cap_drop = ["NET_RAW"]
read_only_rootfs = true
tmpfs = ["/run"]
"#;

    #[test]
    fn each_widening_field_is_refused_by_the_default_policy_naming_its_key() {
        let got = refusals(WIDE, &PolicyConfig::default());
        let want = [
            ("deployments.w.privileged", "policy.allow_privileged = true"),
            ("deployments.w.devices[0]", "policy.allowed_devices to include \"/dev/ttyACM0\""),
            ("deployments.w.devices[1]", "policy.allowed_devices to include \"/dev/i2c-1\""),
            ("deployments.w.devices[2]", "policy.allowed_devices to include \"/dev/ttyUSB*\""),
            ("deployments.w.devices[3]", "policy.allowed_devices to include \"/dev/bus/usb\""),
            ("deployments.w.group_add[0]", "policy.allowed_groups to include \"dialout\""),
            ("deployments.w.sysctls.net.ipv4.ping_group_range", "policy.allowed_sysctls to include"),
            ("deployments.w.ulimits[0]", "policy.allow_raised_ulimits = true"),
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for ((key, message), (want_key, want_text)) in got.iter().zip(want) {
            assert_eq!(key, want_key);
            assert!(
                message.contains(want_text) && message.contains("not allowed by this device's policy"),
                "{message}"
            );
        }
    }

    #[test]
    fn the_keys_allow_what_they_name_and_narrowing_fields_need_none() {
        let policy = PolicyConfig {
            allow_privileged: true,
            allowed_devices: vec![
                "/dev/ttyACM0".into(),
                "/dev/i2c-[0-9]".into(),
                "/dev/ttyUSB*".into(),
                "/dev/bus/usb".into(),
            ],
            allowed_groups: vec!["dialout".into()],
            allowed_sysctls: vec!["net.ipv4.*".into()],
            allow_raised_ulimits: true,
            ..Default::default()
        };
        assert_eq!(refusals(WIDE, &policy), []);
        let narrow = "[deployments.n]\nimage = \"busybox\"\ncap_drop = [\"ALL\"]\nread_only_rootfs = true\ntmpfs = [\"/tmp:size=8m\"]\n";
        assert_eq!(refusals(narrow, &PolicyConfig::default()), []);
        // A pattern of the policy covers a narrower one of the document, not a wider one.
        let glob = "[deployments.g]\nimage = \"busybox\"\ndevices = [\"/dev/tty*\"]\n";
        let only_usb = PolicyConfig { allowed_devices: vec!["/dev/ttyUSB*".into()], ..Default::default() };
        assert_eq!(refusals(glob, &only_usb).len(), 1);
        // A ulimit within the agent's own hard limit needs no key.
        let low = "[deployments.l]\nimage = \"busybox\"\nulimits = [\"nofile=64\"]\n";
        assert_eq!(refusals(low, &PolicyConfig::default()), []);
    }
}
