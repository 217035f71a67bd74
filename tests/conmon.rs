//! Containers under conmon over runc: real processes, real namespaces (root only), a busybox root file system.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jetship::base::{IpcMode, NetworkMode};
use jetship::runtime::conmon::{OciRuntime, Paths, Status, Supervisor};
use jetship::runtime::spec::{self, HostFiles, ImageProcess, ResolvedUser, RunSpec};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    sup: Supervisor,
}

fn fixture() -> Fixture {
    assert!(nix::unistd::geteuid().is_root(), "container tests need root (scripts/test runs as root)");
    support::require_tool("conmon", "conmon");
    let runc = support::require_tool("runc", "runc");
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.is_file(), "/bin/busybox is needed: apt-get install busybox-static");
    // Bundles live under the temp dir, which must not be on a noexec mount.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let rootfs = root.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "work"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "cat", "id", "pwd", "readlink", "env", "yes", "head", "hostname"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/work:/bin/sh\n")
        .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    let paths = Paths { containers: root.join("state/containers"), run: root.join("run") };
    let sup = Supervisor::new(None, OciRuntime { path: runc, name: "runc".into() }, paths, 64 * 1024).unwrap();
    Fixture { _dir: dir, root, sup }
}

impl Fixture {
    /// Writes a bundle whose config.json comes from the real spec builder, sharing the busybox rootfs.
    fn bundle(&self, id: &str, image: &ImageProcess, run: &RunSpec) -> PathBuf {
        let bundle = self.root.join("bundles").join(id);
        std::fs::create_dir_all(&bundle).unwrap();
        let passwd = std::fs::read_to_string(self.root.join("rootfs/etc/passwd")).unwrap();
        let group = std::fs::read_to_string(self.root.join("rootfs/etc/group")).unwrap();
        let user = spec::resolve_user(image.user.as_deref(), &passwd, &group).unwrap();
        let mut spec =
            spec::build(image, run, user, &self.root.join("rootfs"), &HostFiles::under(Path::new("/"))).unwrap();
        // runc's default cgroup is named after the container id alone: a second suite running the same test
        // at the same time would share it ("container's cgroup is not empty"). One subtree per test process.
        if let Some(linux) = spec.linux_mut() {
            linux.set_cgroups_path(Some(PathBuf::from(format!("/jetship-test-{}/{id}", std::process::id()))));
        }
        spec.save(bundle.join("config.json")).unwrap();
        bundle
    }

    fn run(&self, id: &str, image: &ImageProcess, run: &RunSpec) {
        let bundle = self.bundle(id, image, run);
        let labels = BTreeMap::from([("jetship.deployment".to_string(), id.to_string())]);
        self.sup.create(id, &bundle, labels).unwrap();
        self.sup.start(id).unwrap();
    }

    fn wait_stopped(&self, id: &str) -> jetship::runtime::conmon::State {
        let start = Instant::now();
        loop {
            let s = self.sup.state(id).unwrap();
            if s.status == Status::Stopped && s.exit_code.is_some() {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "container {id} did not stop: {s:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn texts(&self, id: &str) -> Vec<(String, String)> {
        self.sup.logs(id, None).unwrap().into_iter().map(|l| (l.stream, l.text)).collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Ok(list) = self.sup.list() {
            for c in list {
                let _ = self.sup.stop(&c.meta.id, Duration::from_millis(100));
                let _ = self.sup.remove(&c.meta.id);
            }
        }
    }
}

fn sh(script: &str) -> ImageProcess {
    ImageProcess { entrypoint: vec!["/bin/sh".into(), "-c".into()], cmd: vec![script.into()], ..Default::default() }
}

#[test]
fn output_streams_and_exit_code_are_recorded() {
    let f = fixture();
    f.run("exit7", &sh("echo to-out; echo to-err >&2; exit 7"), &RunSpec::default());
    let state = f.wait_stopped("exit7");
    assert_eq!(state.exit_code, Some(7));
    assert!(!state.oom_killed);
    let texts = f.texts("exit7");
    assert!(texts.contains(&("stdout".into(), "to-out".into())), "{texts:?}");
    assert!(texts.contains(&("stderr".into(), "to-err".into())), "{texts:?}");
}

#[test]
fn env_args_workdir_and_user_are_applied() {
    let f = fixture();
    let image = ImageProcess {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo image-cmd".into()],
        env: vec!["FROM_IMAGE=1".into(), "MODE=image".into()],
        working_dir: Some("/tmp".into()),
        user: Some("app".into()),
    };
    let run = RunSpec {
        args: Some(vec!["echo \"mode=$MODE image=$FROM_IMAGE\"; echo cwd=$(pwd); echo ids=$(id -u):$(id -g)".into()]),
        env: vec!["MODE=deploy".into()],
        working_dir: Some("/work".into()),
        ..RunSpec::default()
    };
    f.run("applied", &image, &run);
    assert_eq!(f.wait_stopped("applied").exit_code, Some(0));
    let out: Vec<String> = f.texts("applied").into_iter().map(|(_, t)| t).collect();
    assert_eq!(out, ["mode=deploy image=1", "cwd=/work", "ids=1000:1000"]);
}

#[test]
fn host_ipc_shares_the_ipc_namespace_and_private_does_not() {
    let f = fixture();
    let host_ns = std::fs::read_link("/proc/self/ns/ipc").unwrap().to_string_lossy().into_owned();
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap().to_string_lossy().into_owned();
    let script = "readlink /proc/self/ns/ipc; readlink /proc/self/ns/net";
    f.run("ipc-host", &sh(script), &RunSpec::default());
    f.run(
        "ipc-private",
        &sh(script),
        &RunSpec { ipc: IpcMode::Private, network: NetworkMode::None, ..Default::default() },
    );
    f.wait_stopped("ipc-host");
    f.wait_stopped("ipc-private");
    let host: Vec<String> = f.texts("ipc-host").into_iter().map(|(_, t)| t).collect();
    let private: Vec<String> = f.texts("ipc-private").into_iter().map(|(_, t)| t).collect();
    assert_eq!(host, [host_ns.clone(), host_net.clone()], "host IPC and network are the host's namespaces");
    assert_ne!(private[0], host_ns);
    assert_ne!(private[1], host_net);
}

#[test]
fn stop_sends_sigterm_then_sigkill_after_the_grace_period() {
    let f = fixture();
    f.run("polite", &sh("trap 'exit 42' TERM; while true; do sleep 0.1; done"), &RunSpec::default());
    f.run("stubborn", &sh("trap '' TERM; while true; do sleep 0.1; done"), &RunSpec::default());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(f.sup.state("polite").unwrap().status, Status::Running);
    let t = Instant::now();
    assert_eq!(f.sup.stop("polite", Duration::from_secs(10)).unwrap(), Some(42), "SIGTERM handled by the container");
    assert!(t.elapsed() < Duration::from_secs(5));
    let t = Instant::now();
    assert_eq!(f.sup.stop("stubborn", Duration::from_millis(1500)).unwrap(), Some(137), "SIGKILL after the grace");
    assert!(t.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn a_new_supervisor_adopts_running_containers_without_duplicates() {
    let f = fixture();
    f.run("adoptee", &sh("while true; do sleep 0.1; done"), &RunSpec::default());
    let pid = f.sup.state("adoptee").unwrap().pid.expect("running container has a pid");
    // conmon double-forked away: the container's monitor is not our child, so an agent restart keeps it.
    let conmon_pid: i32 =
        std::fs::read_to_string(f.root.join("state/containers/adoptee/conmon.pid")).unwrap().trim().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{conmon_pid}/stat")).unwrap();
    let ppid: u32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_ne!(ppid, std::process::id(), "conmon must not be a child of the creating process");

    let paths = Paths { containers: f.root.join("state/containers"), run: f.root.join("run") };
    let again = Supervisor::new(None, f.sup.runtime().clone(), paths, 64 * 1024).unwrap();
    let owned = again.list().unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].meta.labels["jetship.deployment"], "adoptee");
    assert_eq!((owned[0].state.status, owned[0].state.pid), (Status::Running, Some(pid)));
    let bundle = owned[0].meta.bundle.clone();
    let err = again.create("adoptee", &bundle, BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn a_bad_command_fails_create_with_the_runtime_message() {
    let f = fixture();
    let image = ImageProcess { entrypoint: vec!["/bin/not-there".into()], ..Default::default() };
    let bundle = f.bundle("badcmd", &image, &RunSpec::default());
    let err = f.sup.create("badcmd", &bundle, BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("badcmd") && err.contains("/bin/not-there"), "{err}");
}

#[test]
fn logs_rotate_at_the_size_limit_and_tail_spans_both_files() {
    let f = fixture();
    f.run("chatty", &sh("i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.002; done"), &RunSpec::default());
    let log = f.sup.log_path("chatty");
    let start = Instant::now();
    while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) < 64 * 1024 {
        assert!(start.elapsed() < Duration::from_secs(30), "log did not grow");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(f.sup.rotate_logs("chatty").unwrap());
    let start = Instant::now();
    while !log.exists() || std::fs::metadata(&log).unwrap().len() == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "conmon did not reopen the log");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    f.sup.stop("chatty", Duration::from_secs(1)).unwrap();
    let old = std::fs::metadata(log.with_extension("log.1")).unwrap().len();
    assert!(old >= 64 * 1024, "rotated file holds the old output");
    let lines: Vec<u64> = f
        .sup
        .logs("chatty", None)
        .unwrap()
        .iter()
        .filter_map(|l| l.text.strip_prefix("line-").and_then(|n| n.parse().ok()))
        .collect();
    assert!(lines.len() > 1000);
    assert!(lines.windows(2).all(|w| w[1] == w[0] + 1), "no line lost or reordered across the rotation");
    let tail = f.sup.logs("chatty", Some(5)).unwrap();
    assert_eq!(tail.len(), 5);
}

#[test]
fn remove_deletes_runtime_state_and_directory() {
    let f = fixture();
    f.run("gone", &sh("exit 0"), &RunSpec::default());
    f.wait_stopped("gone");
    f.sup.remove("gone").unwrap();
    assert!(!f.root.join("state/containers/gone").exists());
    assert!(f.sup.list().unwrap().is_empty());
    let _ = ResolvedUser::default();
}

#[test]
fn a_stopped_container_starts_again_from_its_bundle_keeping_its_logs() {
    let f = fixture();
    f.run("again", &sh("echo run-$(cat /tmp/count 2>/dev/null || echo 0); echo x >> /tmp/count"), &RunSpec::default());
    f.wait_stopped("again");
    f.sup.start("again").unwrap();
    let state = f.wait_stopped("again");
    assert_eq!(state.exit_code, Some(0));
    let out: Vec<String> = f.texts("again").into_iter().map(|(_, t)| t).collect();
    assert_eq!(out.len(), 2, "both runs' output is kept: {out:?}");
    assert!(out[0].starts_with("run-"), "{out:?}");
}
