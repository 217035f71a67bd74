//! The checks of `[policy]`'s device and privilege keys: `allowed_devices`, `allowed_groups`, `allowed_sysctls`.

use super::PolicyConfig;

/// Reports each bad entry of the device and privilege keys through `bad(key, message)`.
pub(super) fn check(p: &PolicyConfig, bad: &mut impl FnMut(&str, String)) {
    if p.allow_devices == Some(true) {
        bad(
            "policy.allow_devices",
            "was replaced by policy.allowed_devices: list the device paths or patterns deployments may pass, e.g. [\"/dev/ttyACM*\", \"/dev/i2c-1\"]".into(),
        );
    }
    for (i, d) in p.allowed_devices.iter().enumerate() {
        let plain = d.starts_with("/dev/") && !d.split('/').any(|c| c == ".." || c == ".") && !d.ends_with('/');
        if !plain || glob::Pattern::new(d).is_err() {
            bad(
                &format!("policy.allowed_devices[{i}]"),
                format!("`{d}` must be a path or pattern under /dev/ such as /dev/ttyACM* or /dev/bus/usb"),
            );
        }
    }
    for (i, g) in p.allowed_groups.iter().enumerate() {
        if g.is_empty() || g.contains([':', '/', ' ']) {
            bad(&format!("policy.allowed_groups[{i}]"), format!("`{g}` must be a group name or gid such as video"));
        }
    }
    for (i, s) in p.allowed_sysctls.iter().enumerate() {
        if s.is_empty() || glob::Pattern::new(s).is_err() || s.contains(['/', ' ']) {
            bad(
                &format!("policy.allowed_sysctls[{i}]"),
                format!("`{s}` must be a sysctl name or pattern such as net.ipv4.ping_group_range or net.ipv4.*"),
            );
        }
    }
}
