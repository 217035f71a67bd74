//! The device's local policy applied to deployment documents: which registries images may come from, which host
//! paths volumes may mount, whether privileged containers or extra devices are allowed, and every other widening
//! of a container's access (host network and IPC, the bridge and published ports, root, exec health checks, cameras, the GPU and its CDI
//! names, capabilities, seccomp, AppArmor, no_new_privs, the pids limit). Each refusal names the key that would
//! allow it. [`confine`] puts what only the policy knows into a container's [`Confinement`](crate::runtime::Confinement): the roots volumes
//! must resolve beneath (the runtime refuses a symlink below them), whether root is refused, the pids limit.
//!
//! Pure: compares a validated [`Document`] with [`PolicyConfig`]; no file system access (host paths are
//! normalised lexically here; the runtime resolves them without following symlinks). It must not change
//! documents or decide anything else about them (that is `crate::deploy::document`'s validation and
//! `crate::deploy::plan`'s planning).

use crate::deploy::document::Profile;

mod network;
use crate::runtime::{ContainerConfig, VolumeSources};

use std::path::{Component, Path, PathBuf};

use crate::config::PolicyConfig;
use crate::deploy::document::{Document, Problem};
use crate::image::reference::{Reference, TemplateVars, DOCKER_HUB};

/// The folder under the state dir that volumes may always mount.
pub(crate) const VOLUMES_DIR: &str = "volumes";

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
        crate::deploy::policy_devices::check(d, policy, &mut bad);
        container_access(d, policy, &mut bad);
        network::check(d, policy, &mut bad);
    }
    problems
}

/// Why `policy.allowed_registries` refuses the registry of `image`, or `None` when it is allowed (or the list
/// is empty, or the reference does not parse: validation reports that). The one registry rule of documents and
/// `cmd/resolve`.
pub(crate) fn registry_refusal(image: &str, policy: &PolicyConfig) -> Option<String> {
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

/// The refusal text for `what`, naming the key that would allow it.
pub(super) fn refusal(what: &str, key: &str) -> String {
    format!("{what} is not allowed by this device's policy; set {key} in the agent config")
}

/// The checks of the container-access keys (`allow_host_network` ... `pids_limit`).
fn container_access(
    d: &crate::deploy::document::Deployment,
    policy: &PolicyConfig,
    bad: &mut impl FnMut(String, String),
) {
    use crate::base::{IpcMode, NetworkMode};
    if d.network == NetworkMode::Host && !policy.allow_host_network {
        let what = "the host's network (network = \"host\", the default; use \"none\")";
        bad("network".into(), refusal(what, "policy.allow_host_network = true"));
    }
    if d.ipc == IpcMode::Host && !policy.allow_host_ipc {
        let what = "the host's IPC namespace and /dev/shm (ipc = \"host\", the default; use \"private\")";
        bad("ipc".into(), refusal(what, "policy.allow_host_ipc = true"));
    }
    if let Some(user) = &d.user {
        if names_root(user) && !policy.allow_root {
            bad("user".into(), refusal(&format!("running as root (user `{user}`)"), "policy.allow_root = true"));
        }
    }
    if d.health.as_ref().is_some_and(|h| h.exec.is_some()) && !policy.allow_exec_health {
        bad("health.exec".into(), refusal("an exec health check", "policy.allow_exec_health = true"));
    }
    if !d.cameras.is_empty() && !policy.allow_cameras {
        bad("cameras".into(), refusal("cameras", "policy.allow_cameras = true"));
    }
    for (field, message) in crate::base::jetson::refusals(&d.jetson, &d.cameras, &policy.allowed_jetson) {
        bad(field, message);
    }
    if let Some(gpu) = &d.gpu.0 {
        if !policy.allow_gpu {
            bad("gpu".into(), refusal("the GPU", "policy.allow_gpu = true"));
        } else if let Ok(req) = crate::host::devices::gpu::GpuRequest::parse(gpu) {
            let (kind, name) = req.cdi_name();
            let full = format!("{kind}={name}");
            if !policy.allowed_cdi_devices.iter().any(|p| cdi_matches(p, kind, name)) {
                bad(
                    "gpu".into(),
                    refusal(
                        &format!("CDI device `{full}`"),
                        &format!("policy.allowed_cdi_devices to include \"{full}\""),
                    ),
                );
            }
        }
    }
    let allowed_caps: Vec<String> =
        policy.allowed_capabilities.iter().map(|c| crate::base::capability_key(c)).collect();
    for (i, c) in d.cap_add.iter().enumerate() {
        let key = crate::base::capability_key(c);
        if !allowed_caps.contains(&key) {
            bad(
                format!("cap_add[{i}]"),
                refusal(&format!("capability {key}"), &format!("policy.allowed_capabilities to include \"{key}\"")),
            );
        }
    }
    if d.seccomp == Profile::Unconfined && !policy.allow_unconfined_seccomp {
        bad("seccomp".into(), refusal("running without the seccomp profile", "policy.allow_unconfined_seccomp = true"));
    }
    if d.apparmor == Profile::Unconfined && !policy.allow_unconfined_apparmor {
        bad(
            "apparmor".into(),
            refusal("running without the AppArmor profile", "policy.allow_unconfined_apparmor = true"),
        );
    }
    if d.no_new_privileges == Some(false) && !policy.allow_new_privileges {
        bad(
            "no_new_privileges".into(),
            refusal(
                "gaining privileges through setuid binaries (no_new_privileges = false)",
                "policy.allow_new_privileges = true",
            ),
        );
    }
    if let Some(n) = d.pids_limit.filter(|n| *n > policy.pids_limit) {
        bad(
            "pids_limit".into(),
            refusal(
                &format!("a pids limit of {n} (more than {})", policy.pids_limit),
                &format!("policy.pids_limit = {n} or more"),
            ),
        );
    }
}

/// Whether a `user` (`root`, `0`, `0:0`, `root:video`) names uid 0 by itself.
fn names_root(user: &str) -> bool {
    matches!(user.split(':').next(), Some("root" | "0"))
}

/// Whether policy entry `pattern` (`kind=name` or `kind=*`) allows CDI device `kind=name`.
fn cdi_matches(pattern: &str, kind: &str, name: &str) -> bool {
    match pattern.trim().split_once('=') {
        Some((k, n)) => k == kind && (n == "*" || n == name),
        None => false,
    }
}

/// Puts what the local policy decides about a container into its confinement: volumes must resolve beneath
/// `<state_dir>/volumes` or an allowed host path (no symlink below it), root is refused unless allowed, and the
/// pids limit is at most `policy.pids_limit`. The executor applies this to every container it creates.
pub fn confine(config: &mut ContainerConfig, policy: &PolicyConfig, state_dir: &Path) {
    let c = &mut config.confinement;
    let mut roots = vec![state_dir.join(VOLUMES_DIR)];
    roots.extend(policy.allowed_host_paths.iter().filter_map(|p| normalise(p)));
    c.volume_sources = VolumeSources::Beneath(roots);
    c.refuse_root = !policy.allow_root;
    c.pids_limit = Some(c.pids_limit.unwrap_or(policy.pids_limit).min(policy.pids_limit));
    c.allowed_devices = crate::runtime::devices::Allowed(Some(policy.allowed_devices.clone()));
}

/// The normalised registry an image reference names (`busybox` -> `docker.io`), template variables expanded
/// with sample facts (they never stand for the registry in practice). `None` when the reference does not parse
/// (validation reports that).
pub(crate) fn registry_of(image: &str) -> Option<String> {
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
pub(crate) fn normalise(path: &Path) -> Option<PathBuf> {
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
                "deployments.a.devices[0]"
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
            allowed_devices: vec!["/dev/ttyUSB*".into()],
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
    fn the_default_policy_refuses_every_widening_beyond_the_seed_and_names_the_key() {
        let d = doc(r#"
[deployments.a]
image = "busybox"
gpu = "vendor.example/fpga=0"
cap_add = ["NET_ADMIN", "cap_sys_admin"]
seccomp = "unconfined"
apparmor = "unconfined"
no_new_privileges = false
pids_limit = 100000
"#);
        let problems = check(&d, &PolicyConfig::default(), Path::new(STATE));
        let pairs: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| {
                let key = p.message.split("set ").nth(1).unwrap_or("").split([' ', '=']).next().unwrap_or("");
                (p.key.as_str(), key)
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("deployments.a.gpu", "policy.allowed_cdi_devices"),
                ("deployments.a.cap_add[0]", "policy.allowed_capabilities"),
                ("deployments.a.cap_add[1]", "policy.allowed_capabilities"),
                ("deployments.a.seccomp", "policy.allow_unconfined_seccomp"),
                ("deployments.a.apparmor", "policy.allow_unconfined_apparmor"),
                ("deployments.a.no_new_privileges", "policy.allow_new_privileges"),
                ("deployments.a.pids_limit", "policy.pids_limit"),
            ]
        );
        assert!(problems[1].message.contains("CAP_NET_ADMIN"), "{}", problems[1]);
    }

    #[test]
    fn host_network_ipc_root_exec_cameras_and_gpu_each_have_a_key() {
        let d = doc(r#"
[deployments.a]
image = "busybox"
user = "0:0"
gpu = true
cameras = ["all"]
[deployments.a.health]
exec = ["true"]
"#);
        assert_eq!(check(&d, &PolicyConfig::default(), Path::new(STATE)), [], "the seed's needs are allowed");
        let strict = PolicyConfig {
            allow_host_network: false,
            allow_host_ipc: false,
            allow_root: false,
            allow_exec_health: false,
            allow_cameras: false,
            allow_gpu: false,
            ..Default::default()
        };
        let problems = check(&d, &strict, Path::new(STATE));
        let want = [
            ("deployments.a.network", "policy.allow_host_network"),
            ("deployments.a.ipc", "policy.allow_host_ipc"),
            ("deployments.a.user", "policy.allow_root"),
            ("deployments.a.health.exec", "policy.allow_exec_health"),
            ("deployments.a.cameras", "policy.allow_cameras"),
            ("deployments.a.gpu", "policy.allow_gpu"),
        ];
        assert_eq!(problems.len(), want.len(), "{problems:?}");
        for (p, (key, setting)) in problems.iter().zip(want) {
            assert_eq!(p.key, key);
            assert!(p.message.contains(setting), "{p}");
        }
        let private =
            doc("[deployments.a]\nimage = \"busybox\"\nipc = \"private\"\nnetwork = \"none\"\nuser = \"1000\"\n");
        assert_eq!(check(&private, &strict, Path::new(STATE)), []);
    }

    #[test]
    fn widenings_the_policy_lists_are_allowed() {
        let d = doc(r#"
[deployments.a]
image = "busybox"
gpu = "nvidia.com/gpu=0"
cap_add = ["CAP_NET_ADMIN"]
seccomp = "unconfined"
pids_limit = 8000
"#);
        let policy = PolicyConfig {
            allowed_cdi_devices: vec!["nvidia.com/gpu=0".into()],
            allowed_capabilities: vec!["net_admin".into()],
            allow_unconfined_seccomp: true,
            pids_limit: 10_000,
            ..Default::default()
        };
        assert_eq!(check(&d, &policy, Path::new(STATE)), []);
        let only_all = PolicyConfig { allowed_cdi_devices: vec!["nvidia.com/gpu=all".into()], ..policy };
        assert_eq!(keys(&check(&d, &only_all, Path::new(STATE))), ["deployments.a.gpu"]);
    }

    #[test]
    fn confine_gives_the_volume_roots_root_refusal_and_the_pids_limit() {
        let d = doc("[deployments.a]\nimage = \"busybox\"\n");
        let mut c = d.deployments["a"].container_config("a", "busybox").unwrap();
        assert_eq!(c.confinement.volume_sources, VolumeSources::Beneath(vec![]), "refuses volumes until confined");
        let policy = PolicyConfig {
            allowed_host_paths: vec!["/data/./models/".into()],
            allow_root: false,
            pids_limit: 1000,
            ..Default::default()
        };
        confine(&mut c, &policy, Path::new(STATE));
        assert_eq!(
            c.confinement.volume_sources,
            VolumeSources::Beneath(vec!["/var/lib/jetship/volumes".into(), "/data/models".into()])
        );
        assert!(c.confinement.refuse_root);
        assert_eq!(c.confinement.pids_limit, Some(1000), "the default 4096 is clamped to the policy's");
        let mut c = d.deployments["a"].container_config("a", "busybox").unwrap();
        confine(&mut c, &PolicyConfig::default(), Path::new(STATE));
        assert_eq!((c.confinement.pids_limit, c.confinement.refuse_root), (Some(4096), false));
        assert!(c.confinement.seccomp && c.confinement.apparmor && c.confinement.no_new_privileges);
    }

    #[test]
    fn normalise_is_lexical() {
        assert_eq!(normalise(Path::new("/a/./b//c/")), Some(PathBuf::from("/a/b/c")));
        assert_eq!(normalise(Path::new("/a/../b")), None);
        assert_eq!(normalise(Path::new("a/b")), None);
    }
}
