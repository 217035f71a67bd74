//! The device and privilege fields of a deployment: `devices` (`HOST[:CONTAINER][:PERMS]`), `privileged`,
//! `cap_drop`, `group_add`, `ulimits`, `sysctls`, `read_only_rootfs` and `tmpfs`: their validation (every
//! problem with its field path) and their conversion into the container config. The syntax of each is the
//! runtime's ([`crate::runtime::devices`], [`crate::runtime::privileges`]), so documents and `jetship run`
//! read them alike.

use crate::runtime::devices::{self as rdevices, DeviceRequest};
use crate::runtime::privileges::{self, Tmpfs, Ulimit, MAX_ENTRIES};
use crate::runtime::ContainerConfig;

use super::{ConvertError, Deployment};

/// Reports each problem of the device and privilege fields of `d` through `bad(field, message)`.
pub(super) fn validate(d: &Deployment, bad: &mut impl FnMut(&str, String)) {
    let lists: [(&str, usize); 6] = [
        ("devices", d.devices.len()),
        ("cap_drop", d.cap_drop.len()),
        ("group_add", d.group_add.len()),
        ("ulimits", d.ulimits.len()),
        ("sysctls", d.sysctls.len()),
        ("tmpfs", d.tmpfs.len()),
    ];
    for (field, n) in lists {
        let limit = if field == "devices" { rdevices::MAX_REQUESTS } else { MAX_ENTRIES };
        if n > limit {
            bad(field, format!("{n} entries; at most {limit}"));
        }
    }
    for (i, dev) in d.devices.iter().enumerate() {
        if let Err(m) = DeviceRequest::parse(dev) {
            bad(&format!("devices[{i}]"), m);
        }
    }
    for (i, c) in d.cap_drop.iter().enumerate() {
        if !c.trim().eq_ignore_ascii_case("all") && crate::runtime::spec::parse_capability(c).is_none() {
            bad(&format!("cap_drop[{i}]"), format!("`{c}` is not a Linux capability (e.g. NET_RAW) or ALL"));
        }
    }
    for (i, g) in d.group_add.iter().enumerate() {
        if !privileges::valid_group(g) {
            bad(&format!("group_add[{i}]"), format!("`{g}` must be a gid or a group name such as video"));
        }
    }
    let mut seen = Vec::new();
    for (i, u) in d.ulimits.iter().enumerate() {
        match Ulimit::parse(u) {
            Ok(l) if seen.contains(&l.name) => bad(&format!("ulimits[{i}]"), format!("`{}` is set twice", l.name)),
            Ok(l) => seen.push(l.name),
            Err(m) => bad(&format!("ulimits[{i}]"), m),
        }
    }
    for (name, value) in &d.sysctls {
        if let Some(m) = privileges::sysctl_problem(name, value, d.ipc, d.network) {
            bad(&format!("sysctls.{name}"), m);
        }
    }
    for (i, t) in d.tmpfs.iter().enumerate() {
        match Tmpfs::parse(t) {
            Ok(t) if d.volumes.iter().any(|v| v.container.to_str() == Some(t.path.as_str())) => {
                bad(&format!("tmpfs[{i}]"), format!("`{}` is also a volume's container path", t.path))
            }
            Ok(_) => {}
            Err(m) => bad(&format!("tmpfs[{i}]"), m),
        }
    }
}

/// Puts the device and privilege fields of deployment `name` into `c`. The document was validated; a field
/// that does not parse (a document converted without validation) fails with its path.
pub(super) fn convert(d: &Deployment, name: &str, c: &mut ContainerConfig) -> Result<(), ConvertError> {
    let invalid = |field: String, message: String| ConvertError::Invalid { deployment: name.into(), field, message };
    c.devices = d
        .devices
        .iter()
        .enumerate()
        .map(|(i, s)| DeviceRequest::parse(s).map_err(|m| invalid(format!("devices[{i}]"), m)))
        .collect::<Result<_, _>>()?;
    c.privileged = d.privileged;
    c.cap_drop = d
        .cap_drop
        .iter()
        .map(|s| match crate::runtime::spec::parse_capability(s) {
            Some(cap) => crate::runtime::spec::capability_name(cap),
            None => s.trim().to_ascii_uppercase(),
        })
        .collect();
    c.group_add = d.group_add.clone();
    c.ulimits = d
        .ulimits
        .iter()
        .enumerate()
        .map(|(i, s)| Ulimit::parse(s).map_err(|m| invalid(format!("ulimits[{i}]"), m)))
        .collect::<Result<_, _>>()?;
    c.sysctls = d.sysctls.clone();
    c.read_only_rootfs = d.read_only_rootfs;
    c.tmpfs = d
        .tmpfs
        .iter()
        .enumerate()
        .map(|(i, s)| Tmpfs::parse(s).map_err(|m| invalid(format!("tmpfs[{i}]"), m)))
        .collect::<Result<_, _>>()?;
    // Until the local policy fills in its patterns (`policy::confine`), no device node is allowed.
    c.confinement.allowed_devices = rdevices::Allowed(Some(Vec::new()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Error, Format};

    fn keys(text: &str) -> Vec<String> {
        match parse(text.as_bytes(), Some(Format::Toml), "t.toml") {
            Err(Error::Invalid { problems, .. }) => problems.into_iter().map(|p| p.key).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn device_and_privilege_fields_parse_and_reach_the_container_config() {
        let doc = parse(
            br#"
[deployments.robot]
image = "ros:humble"
ipc = "private"
network = "none"
devices = ["/dev/ttyACM0", "/dev/i2c-1:/dev/i2c-7:rw", "/dev/ttyUSB*", "/dev/bus/usb"]
privileged = true
cap_drop = ["net_raw", "ALL"]
group_add = ["dialout", "44"]
ulimits = ["nofile=1024:4096", "memlock=-1"]
sysctls = { "net.ipv4.ping_group_range" = "0 2147483647", "kernel.shmmax" = "68719476736" }
read_only_rootfs = true
tmpfs = ["/run:size=64m", "/tmp"]
"#,
            Some(Format::Toml),
            "robot.toml",
        )
        .unwrap();
        let c = doc.deployments["robot"].container_config("robot", "ros@sha256:0").unwrap();
        assert_eq!(c.devices.len(), 4);
        assert_eq!(c.devices[1].container.as_deref(), Some("/dev/i2c-7"));
        assert_eq!(c.devices[1].permissions, "rw");
        assert!(c.privileged && c.read_only_rootfs);
        assert_eq!(c.cap_drop, ["CAP_NET_RAW", "ALL"]);
        assert_eq!(c.group_add, ["dialout", "44"]);
        assert_eq!((c.ulimits[0].soft, c.ulimits[0].hard, c.ulimits[1].hard), (1024, 4096, u64::MAX));
        assert_eq!(c.sysctls["kernel.shmmax"], "68719476736");
        assert_eq!(c.tmpfs[0].path, "/run");
        assert_eq!(c.confinement.allowed_devices, crate::runtime::devices::Allowed(Some(vec![])));
    }

    #[test]
    fn every_bad_device_and_privilege_field_is_reported_with_its_path() {
        let k = keys(
            r#"
[deployments.a]
image = "busybox"
devices = ["/dev/ok", "/etc/passwd", "/dev/tty*:/dev/serial", "/dev/x:/dev/y:rwx"]
cap_drop = ["FLY"]
group_add = ["Bad Group"]
ulimits = ["nofile=9:1", "files=3", "nproc=1", "nproc=2"]
sysctls = { "kernel.panic" = "1", "net.core.somaxconn" = "1024", "kernel.shmmax" = "1" }
tmpfs = ["relative", "/run:suid", "/data"]
volumes = [{ host = "/var/lib/jetship/volumes/x", container = "/data" }]
"#,
        );
        assert_eq!(
            k,
            [
                "deployments.a.devices[1]",
                "deployments.a.devices[2]",
                "deployments.a.devices[3]",
                "deployments.a.cap_drop[0]",
                "deployments.a.group_add[0]",
                "deployments.a.ulimits[0]",
                "deployments.a.ulimits[1]",
                "deployments.a.ulimits[3]",
                "deployments.a.sysctls.kernel.panic",
                "deployments.a.sysctls.kernel.shmmax",
                "deployments.a.sysctls.net.core.somaxconn",
                "deployments.a.tmpfs[0]",
                "deployments.a.tmpfs[1]",
                "deployments.a.tmpfs[2]",
            ]
        );
        let many = format!("[deployments.a]\nimage = \"b\"\ndevices = [{}]\n", vec!["\"/dev/x\""; 65].join(","));
        assert_eq!(keys(&many), ["deployments.a.devices"]);
    }
}
