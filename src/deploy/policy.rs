//! The device's local policy applied to deployment documents: which registries images may come from, which host
//! paths volumes may mount, and whether privileged containers or extra devices are allowed.
//!
//! Pure: compares a validated [`Document`] with [`PolicyConfig`]; no file system access (host paths are
//! normalised lexically, so a symlink on the host is not followed here). It must not change documents or decide
//! anything else about them (that is `crate::deploy::document`'s validation and `crate::deploy::plan`'s planning).

use std::path::{Component, Path, PathBuf};

use crate::config::PolicyConfig;
use crate::deploy::document::{Document, Problem};
use crate::image::reference::{Reference, TemplateVars, DOCKER_HUB};

/// The folder under the state dir that volumes may always mount.
pub const VOLUMES_DIR: &str = "volumes";

/// Every way `doc` asks for more than `policy` allows, each with its field path and the config key that would
/// allow it. Empty means the document is within policy.
pub fn check(doc: &Document, policy: &PolicyConfig, state_dir: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut allowed_paths: Vec<PathBuf> = vec![state_dir.join(VOLUMES_DIR)];
    allowed_paths.extend(policy.allowed_host_paths.iter().cloned());
    let allowed_paths: Vec<PathBuf> = allowed_paths.iter().filter_map(|p| normalise(p)).collect();

    for (name, d) in &doc.deployments {
        let mut bad = |field: String, message: String| {
            problems.push(Problem { key: format!("deployments.{name}.{field}"), message })
        };
        if let Some(message) = registry_refusal(&d.image, policy) {
            bad("image".into(), message);
        }
        for (i, v) in d.volumes.iter().enumerate() {
            match normalise(&v.host) {
                None => bad(
                    format!("volumes[{i}].host"),
                    format!("`{}` must be an absolute path without `..`", v.host.display()),
                ),
                Some(host) if !allowed_paths.iter().any(|a| host.starts_with(a)) => bad(
                    format!("volumes[{i}].host"),
                    format!(
                        "`{}` is outside the host paths this device's policy allows ({}); add a parent to policy.allowed_host_paths in the agent config",
                        v.host.display(),
                        allowed_paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                    ),
                ),
                Some(_) => {}
            }
        }
        if d.privileged && !policy.allow_privileged {
            bad(
                "privileged".into(),
                "privileged containers are not allowed by this device's policy; set policy.allow_privileged = true in the agent config".into(),
            );
        }
        if !d.devices.is_empty() && !policy.allow_devices {
            bad(
                "devices".into(),
                format!(
                    "devices beyond the GPU and cameras ({}) are not allowed by this device's policy; set policy.allow_devices = true in the agent config",
                    d.devices.join(", ")
                ),
            );
        }
    }
    problems
}

/// Why `policy.allowed_registries` refuses the registry of `image`, or `None` when it is allowed (or the list
/// is empty, or the reference does not parse: validation reports that). The one registry rule of documents and
/// `cmd/resolve`.
pub fn registry_refusal(image: &str, policy: &PolicyConfig) -> Option<String> {
    if policy.allowed_registries.is_empty() {
        return None;
    }
    let allowed: Vec<String> = policy.allowed_registries.iter().map(|r| normalise_registry(r)).collect();
    let registry = registry_of(image)?;
    (!allowed.contains(&registry)).then(|| {
        format!(
            "registry `{registry}` is not allowed by this device's policy (allowed: {}); add it to policy.allowed_registries in the agent config",
            allowed.join(", ")
        )
    })
}

/// The normalised registry an image reference names (`busybox` -> `docker.io`), template variables expanded
/// with sample facts (they never stand for the registry in practice). `None` when the reference does not parse
/// (validation reports that).
pub fn registry_of(image: &str) -> Option<String> {
    let vars = TemplateVars::from_l4t(crate::host::l4t::L4tVersion::new(36, 4, 3));
    let expanded = crate::image::reference::expand(image, &vars).ok()?;
    Reference::parse(&expanded).ok().map(|r| normalise_registry(&r.registry))
}

fn normalise_registry(r: &str) -> String {
    let r = r.trim().to_ascii_lowercase();
    match r.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "hub.docker.com" => DOCKER_HUB.into(),
        _ => r,
    }
}

/// `path` with `.` components and repeated or trailing slashes removed, lexically. `None` for a relative path
/// or one with `..` (refused rather than resolved, so no path can climb out of an allowed folder).
pub fn normalise(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::document::{parse, Format};

    fn doc(text: &str) -> Document {
        parse(text.as_bytes(), Some(Format::Toml), "t.toml").unwrap()
    }

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    const STATE: &str = "/var/lib/jetship";

    #[test]
    fn default_policy_allows_any_registry_and_the_volumes_folder() {
        let d = doc(r#"
[deployments.a]
image = "nvcr.io/nvidia/l4t-base:r36.2.0"
volumes = [{ host = "/var/lib/jetship/volumes/a/./data/", container = "/data" }]
[deployments.b]
image = "ultralytics/ultralytics:latest-jetson-jetpack{jetpack_major}"
gpu = true
cameras = ["all"]
"#);
        assert_eq!(check(&d, &PolicyConfig::default(), Path::new(STATE)), []);
    }

    #[test]
    fn default_policy_refuses_host_paths_privileged_and_devices() {
        let d = doc(r#"
[deployments.a]
image = "busybox"
privileged = true
devices = ["/dev/ttyUSB0"]
volumes = [
  { host = "/etc", container = "/host-etc" },
  { host = "/var/lib/jetship/volumes-evil", container = "/x" },
  { host = "/var/lib/jetship", container = "/state" },
]
"#);
        let problems = check(&d, &PolicyConfig::default(), Path::new(STATE));
        assert_eq!(
            keys(&problems),
            [
                "deployments.a.volumes[0].host",
                "deployments.a.volumes[1].host",
                "deployments.a.volumes[2].host",
                "deployments.a.privileged",
                "deployments.a.devices"
            ]
        );
        assert!(problems[0].message.contains("policy.allowed_host_paths"), "{}", problems[0]);
        assert!(problems[3].message.contains("policy.allow_privileged"), "{}", problems[3]);
    }

    #[test]
    fn permissive_policy_allows_what_it_names() {
        let d = doc(r#"
[deployments.a]
image = "busybox"
privileged = true
devices = ["/dev/ttyUSB0"]
volumes = [{ host = "/data/models/yolo", container = "/models" }]
"#);
        let policy = PolicyConfig {
            allowed_host_paths: vec!["/data/models".into()],
            allow_privileged: true,
            allow_devices: true,
            ..Default::default()
        };
        assert_eq!(check(&d, &policy, Path::new(STATE)), []);
    }

    #[test]
    fn registries_are_compared_after_docker_hub_normalisation() {
        let d = doc(r#"
[deployments.hub]
image = "busybox"
[deployments.hub2]
image = "index.docker.io/library/alpine:3"
[deployments.ngc]
image = "nvcr.io/nvidia/l4t-base:r36.2.0"
[deployments.local]
image = "127.0.0.1:5000/app:{auto}"
"#);
        let only_hub = PolicyConfig { allowed_registries: vec!["docker.io".into()], ..Default::default() };
        let problems = check(&d, &only_hub, Path::new(STATE));
        assert_eq!(keys(&problems), ["deployments.local.image", "deployments.ngc.image"]);
        assert!(problems[0].message.contains("127.0.0.1:5000"), "{}", problems[0]);
        let hub_alias = PolicyConfig {
            allowed_registries: vec!["registry-1.docker.io".into(), "NVCR.io".into(), "127.0.0.1:5000".into()],
            ..Default::default()
        };
        assert_eq!(check(&d, &hub_alias, Path::new(STATE)), []);
    }

    #[test]
    fn parent_components_never_escape_an_allowed_folder() {
        let mut d = doc("[deployments.a]\nimage = \"busybox\"\n");
        // Validation refuses `..` too; policy must hold on its own for documents built in code.
        d.deployments.get_mut("a").unwrap().volumes.push(crate::runtime::Volume {
            host: "/var/lib/jetship/volumes/../../../etc".into(),
            container: "/etc2".into(),
            read_only: false,
        });
        let problems = check(&d, &PolicyConfig::default(), Path::new(STATE));
        assert_eq!(keys(&problems), ["deployments.a.volumes[0].host"]);
        assert!(problems[0].message.contains(".."), "{}", problems[0]);
    }

    #[test]
    fn normalise_is_lexical() {
        assert_eq!(normalise(Path::new("/a/./b//c/")), Some(PathBuf::from("/a/b/c")));
        assert_eq!(normalise(Path::new("/a/../b")), None);
        assert_eq!(normalise(Path::new("a/b")), None);
    }
}
