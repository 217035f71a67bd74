//! The local container commands through the real binary (`jetship ps`, `stop`, `logs NAME`, `exec -i -t`), on
//! the native backend (real runc under conmon) and the Docker backend (a private dockerd); restart counts that
//! survive an executor restart, and offline starts of digest-pinned images with the registry stopped, on both.
//! Registry traffic goes through the fault proxy, which counts every request. Needs root (scripts/test runs as
//! root).

mod support;

use std::io::{BufRead, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jetship::deploy::executor::{Executor, Options, Output as Round, PullMeter, RegistryResolver};
use jetship::deploy::plan::{Backoff, DeploymentState};
use jetship::runtime::{ContainerRuntime, RunState};
use support::registry::{Proxy, Pusher, Registry};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Native,
    Docker,
}

/// A registry behind the counting proxy, the pinned busybox image (its reference names the proxy), a state
/// dir and an agent config for one backend.
struct Env {
    rt: tokio::runtime::Runtime,
    registry: Option<Registry>,
    proxy: Proxy,
    _dir: tempfile::TempDir,
    config: PathBuf,
    image: String,
    kind: Kind,
}

impl Env {
    fn new(kind: Kind, extra_runtime_toml: &str) -> Env {
        assert!(nix::unistd::geteuid().is_root(), "container tests need root (scripts/test runs as root)");
        support::require_tool("conmon", "conmon");
        support::require_tool("runc", "runc");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let registry = Registry::start();
        let proxy = rt.block_on(Proxy::start(&registry.addr));
        let note = format!("local-{}", support::agent::rand_suffix());
        let image = rt.block_on(support::backend_contract::push_busybox(
            &Pusher::new(&registry.addr),
            &proxy.addr,
            "jetship/local",
            &note,
        ));
        let dir = tempfile::tempdir().unwrap();
        let backend = match kind {
            Kind::Native => "backend = \"oci\"".to_owned(),
            Kind::Docker => {
                format!("backend = \"docker\"\ndocker_socket = \"{}\"", support::dockerd::shared().display())
            }
        };
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{state}\"\ndevice_id = \"local-{suffix}\"\n[registry]\ndisk_reserve_bytes = 0\nretries = 1\n\
                 retry_backoff_cap_s = 0.2\n[runtime]\n{backend}\nrun_dir = \"{run}\"\nstop_grace_s = 2\n\
                 cgroup_parent = \"/jetship-local-{pid}\"\n{extra_runtime_toml}\n",
                state = dir.path().join("state").display(),
                suffix = support::agent::rand_suffix(),
                run = dir.path().join("run").display(),
                pid = std::process::id(),
            ),
        )
        .unwrap();
        Env { rt, registry: Some(registry), proxy, _dir: dir, config, image, kind }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        support::jetship_with_config(&self.config, args)
    }

    fn jetship(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn cfg(&self) -> jetship::config::Config {
        jetship::config::load(Some(&self.config)).unwrap().config
    }

    fn backend(&self) -> Arc<dyn ContainerRuntime> {
        self.rt.block_on(jetship::runtime::open(&self.cfg(), None)).unwrap()
    }

    /// `jetship run -d --name NAME IMAGE sh -c SCRIPT`, which must succeed.
    fn run_detached(&self, name: &str, script: &str) {
        let out = self.jetship(&["run", "-d", "--name", name, &self.image, "sh", "-c", script]);
        assert_eq!(out.status.code(), Some(0), "{:?} run -d {name}: {}", self.kind, text(&out.stderr));
    }

    fn ps(&self) -> Vec<serde_json::Value> {
        let out = self.jetship(&["ps", "--json"]);
        assert_eq!(out.status.code(), Some(0), "ps: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Whatever a failed test left: stopped and removed through the backend.
        if let Ok(backend) = self.rt.block_on(jetship::runtime::open(&self.cfg(), None)) {
            self.rt.block_on(async {
                for c in backend.list_owned().await.unwrap_or_default() {
                    let _ = backend.stop(&c.id, Duration::from_millis(100)).await;
                    let _ = backend.remove(&c.id).await;
                }
            });
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lines(b: &[u8]) -> Vec<String> {
    text(b).lines().map(str::to_owned).collect()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- ps and stop ----------------------------------------------------------------------------------------------

fn ps_lists_what_run_made_and_stop_removes_it(kind: Kind) {
    let env = Env::new(kind, "");
    env.run_detached("lp-live", "sleep 60");
    env.run_detached("lp-done", "exit 3");
    let backend = env.backend();
    wait_for("lp-done to exit", Duration::from_secs(20), || {
        env.rt.block_on(backend.inspect("lp-done")).unwrap().is_some_and(|c| c.state == RunState::Exited)
    });
    let rows = env.ps();
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("{name} in {rows:?}"));
    let (live, done) = (row("lp-live"), row("lp-done"));
    assert_eq!((live["state"].as_str(), live["owner"].as_str()), (Some("running"), Some("run")), "{kind:?}");
    assert_eq!(live["deployment"], "lp-live");
    assert!(live["image"].as_str().unwrap().contains("@sha256:"), "{live}");
    assert!(live["uptime_s"].as_u64().is_some_and(|s| s < 120), "{live}");
    assert_eq!(live["restarts"], 0);
    assert_eq!((done["state"].as_str(), done["exit_code"].as_i64()), (Some("exited"), Some(3)), "{kind:?}");
    assert!(done["uptime_s"].is_null());
    let table = text(&env.jetship(&["ps"]).stdout);
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("NAME") && header.contains("UPTIME") && header.ends_with("RESTARTS"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("lp-done") && l.contains("exited (3)")), "{table}");

    // stop: SIGTERM (sh as PID 1 ignores it) then SIGKILL after -t, and the container is gone.
    let t = Instant::now();
    let out = env.jetship(&["stop", "-t", "1", "lp-live"]);
    assert_eq!(out.status.code(), Some(0), "{kind:?} stop: {}", text(&out.stderr));
    assert!(t.elapsed() >= Duration::from_secs(1), "{kind:?}: stopped before the grace");
    assert_eq!(lines(&out.stdout), ["lp-live (exit code 137)"], "{kind:?}");
    assert!(env.ps().iter().all(|r| r["name"] != "lp-live"), "{kind:?}: still listed");
    assert!(env.rt.block_on(backend.inspect("lp-live")).unwrap().is_none());
    let out = env.jetship(&["stop", "lp-done"]);
    assert_eq!(lines(&out.stdout), ["lp-done (exit code 3)"], "{kind:?}: {}", text(&out.stderr));
    let out = env.jetship(&["stop", "nothing-here"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("no container `nothing-here`"), "{}", text(&out.stderr));
    assert_eq!(env.ps(), Vec::<serde_json::Value>::new());
}

#[test]
fn native_ps_lists_what_run_made_and_stop_removes_it() {
    ps_lists_what_run_made_and_stop_removes_it(Kind::Native);
}

#[test]
fn docker_ps_lists_what_run_made_and_stop_removes_it() {
    ps_lists_what_run_made_and_stop_removes_it(Kind::Docker);
}

// ---- logs NAME ------------------------------------------------------------------------------------------------

/// `logs NAME` prints a local container's output; `logs -f NAME` follows it to the container's exit, each line
/// once and in order, across log rotations (native: the agent's rotation; Docker: the Engine's log).
fn logs_follow_a_local_container_to_its_exit(kind: Kind, rotate: bool) {
    let env = Env::new(kind, "log_max_bytes = 4096");
    let sig = tempfile::tempdir().unwrap();
    let volume = format!("{}:/sig", sig.path().display());
    // Lines of ~100 bytes: about 6 KiB before the first wait, over the rotation limit.
    let pad = "x".repeat(80);
    let script = format!(
        "i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo line-$i-{pad}; done; echo to-err >&2; \
         while [ ! -e /sig/go ]; do sleep 1; done; \
         while [ $i -lt 120 ]; do i=$((i+1)); echo line-$i-{pad}; done; \
         while [ ! -e /sig/end ]; do sleep 1; done; echo last"
    );
    let out = env.jetship(&["run", "-d", "--name", "lg", "-v", &volume, &env.image, "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{kind:?}: {}", text(&out.stderr));
    let backend = env.backend();
    wait_for("60 lines", Duration::from_secs(20), || {
        env.rt.block_on(backend.logs("lg", None)).unwrap().iter().any(|l| l.text == "to-err")
    });
    let out = env.jetship(&["logs", "lg"]);
    assert_eq!(out.status.code(), Some(0), "{kind:?}: {}", text(&out.stderr));
    let all: Vec<String> = (1..=60).map(|i| format!("line-{i}-{pad}")).collect();
    assert_eq!(lines(&out.stdout), all, "{kind:?}: all of stdout, in order");
    assert_eq!(lines(&out.stderr), ["to-err"], "{kind:?}: stderr stays stderr");
    let out = env.jetship(&["logs", "--tail", "2", "lg"]);
    assert_eq!(out.status.code(), Some(0), "{kind:?}: {}", text(&out.stderr));
    let (tail, tail_err) = (lines(&out.stdout), lines(&out.stderr));
    match kind {
        Kind::Native => {
            assert_eq!(tail, [format!("line-60-{pad}")], "the last 2 lines are line-60 and to-err");
            assert_eq!(tail_err, ["to-err"]);
        }
        // The Engine's tail (json-file, Docker 20.10) depends on how its copiers interleaved the two streams:
        // the command prints what the Engine's own `tail=2` gives.
        Kind::Docker => {
            let engine = env.rt.block_on(backend.logs("lg", Some(2))).unwrap();
            let pick = |s: &str| engine.iter().filter(|l| l.stream == s).map(|l| l.text.clone()).collect::<Vec<_>>();
            assert_eq!((tail, tail_err), (pick("stdout"), pick("stderr")));
        }
    }

    let mut follow = env.cmd(&["logs", "-f", "lg"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(follow.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), format!("line-1-{pad}"), "{kind:?}: follow starts with what is there");
    if rotate {
        assert_eq!(env.rt.block_on(backend.rotate_logs()).unwrap(), 1, "over the limit: rotated");
    }
    std::fs::write(sig.path().join("go"), "").unwrap();
    wait_for("120 lines", Duration::from_secs(20), || {
        env.rt.block_on(backend.logs("lg", None)).unwrap().iter().any(|l| l.text.starts_with("line-120-"))
    });
    if rotate {
        assert_eq!(env.rt.block_on(backend.rotate_logs()).unwrap(), 1, "rotated a second time");
    }
    std::fs::write(sig.path().join("end"), "").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = follow.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{kind:?}: follow ends when the container exits");
    let mut got: Vec<String> = vec![first.trim().to_owned()];
    got.extend(rest.lines().map(str::to_owned));
    let mut want: Vec<String> = (1..=120).map(|i| format!("line-{i}-{pad}")).collect();
    want.push("last".into());
    let short =
        |v: &[String]| v.iter().map(|l| l.split('-').nth(1).unwrap_or(l).to_owned()).collect::<Vec<_>>().join(",");
    assert!(got == want, "{kind:?}: every line once, in order; got {}", short(&got));
    let mut err = String::new();
    follow.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(err.trim(), "to-err");
}

#[test]
fn native_logs_follow_a_local_container_across_rotations_to_its_exit() {
    logs_follow_a_local_container_to_its_exit(Kind::Native, true);
}

#[test]
fn docker_logs_follow_a_local_container_to_its_exit() {
    logs_follow_a_local_container_to_its_exit(Kind::Docker, false);
}

#[test]
fn logs_with_one_name_that_is_no_local_container_says_how_to_reach_a_device() {
    let env = Env::new(Kind::Native, "");
    let out = env.jetship(&["logs", "orin-nano-01"]);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("no container `orin-nano-01`") && err.contains("jetship logs DEVICE DEPLOYMENT"), "{err}");
}

// ---- exec -------------------------------------------------------------------------------------------------------

/// Fields of a /proc/<pid>/status text.
fn status_field(status: &str, key: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_owned()).unwrap_or_default()
}

/// `jetship exec` runs in the container's namespaces (each one its PID 1 has), its cgroup, with its
/// capabilities, no_new_privs and seccomp filter: what the runtime gives the container, seen from the host.
fn exec_sees_the_containers_namespaces_and_restrictions(kind: Kind) {
    let env = Env::new(kind, "");
    env.run_detached("ex", "sleep 60");
    let backend = env.backend();
    let info = env.rt.block_on(backend.inspect("ex")).unwrap().unwrap();
    let pid = info.pid.expect("a running container has a pid");
    let namespaces = ["pid", "mnt", "uts", "ipc", "net", "cgroup"];
    let script = format!(
        "for n in {}; do readlink /proc/self/ns/$n; done; cat /proc/self/status; echo cgroup; cat /proc/self/cgroup; \
         echo init; cat /proc/1/cgroup",
        namespaces.join(" ")
    );
    let out = env.jetship(&["exec", "ex", "--", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{kind:?}: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let got: Vec<&str> = stdout.lines().take(namespaces.len()).collect();
    let want: Vec<String> = namespaces
        .iter()
        .map(|n| std::fs::read_link(format!("/proc/{pid}/ns/{n}")).unwrap().display().to_string())
        .collect();
    assert_eq!(got, want, "{kind:?}: the container's namespaces");
    let init = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let (status, cgroup) = stdout.split_once("\ncgroup\n").unwrap();
    for key in ["CapEff:", "CapBnd:", "CapPrm:", "NoNewPrivs:", "Seccomp:"] {
        assert_eq!(status_field(status, key), status_field(&init, key), "{kind:?}: {key} as the container's");
    }
    assert_eq!(status_field(status, "NoNewPrivs:"), "1");
    assert_eq!(status_field(status, "Seccomp:"), "2");
    assert_ne!(status_field(status, "CapEff:"), "000001ffffffffff", "{kind:?}: not all capabilities");
    // PID 1 of the pid namespace it sees is the container's own process, in the same cgroups (both read from
    // inside, so both in the container's cgroup namespace view).
    let (own, init) = cgroup.split_once("\ninit\n").unwrap();
    assert_eq!(own.trim(), init.trim(), "{kind:?}: the container's cgroups");
    assert!(own.contains("pids"), "{kind:?}: {own}");
}

#[test]
fn native_exec_sees_the_containers_namespaces_and_restrictions() {
    exec_sees_the_containers_namespaces_and_restrictions(Kind::Native);
}

#[test]
fn docker_exec_sees_the_containers_namespaces_and_restrictions() {
    exec_sees_the_containers_namespaces_and_restrictions(Kind::Docker);
}

/// A pseudo-terminal pair: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors; no name, termios or size is passed.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both are fresh descriptors owned here.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// `-i` pipes stdin to the command; `-t` gives it a terminal (this process's, a pty here), keys typed reach it
/// and its exit code comes back; `-t` without a terminal is refused with what to do.
fn exec_attaches_stdin_and_a_terminal(kind: Kind) {
    let env = Env::new(kind, "");
    env.run_detached("att", "sleep 60");
    let mut child = env
        .cmd(&["exec", "-i", "att", "--", "sh", "-c", "cat; exit 6"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped through\nstdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{kind:?}: {}", text(&out.stderr));
    assert_eq!(lines(&out.stdout), ["piped through", "stdin"], "{kind:?}");

    let out = env.jetship(&["exec", "-t", "att", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("-t needs a terminal"), "{kind:?}: {}", text(&out.stderr));

    let (master, slave) = openpty();
    let stdio = || Stdio::from(slave.try_clone().unwrap());
    let script = "if [ -t 0 ] && [ -t 1 ]; then echo is-a-tty; fi; read word; echo got-$word; exit 7";
    let mut command = env.cmd(&["exec", "-it", "att", "--", "sh", "-c", script]);
    let mut child = command.stdin(stdio()).stdout(stdio()).stderr(stdio()).spawn().unwrap();
    // The command holds its copies of the slave until dropped: the master reads EIO only once all are closed.
    drop(command);
    drop(slave);
    let mut master = std::fs::File::from(master);
    let reader = {
        let mut m = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // EIO once every slave is closed (the exec is over).
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&seen).into_owned()
        })
    };
    // Typed once the shell asks: the word and Enter, as a terminal sends them.
    std::thread::sleep(Duration::from_secs(2));
    master.write_all(b"hello\r").unwrap();
    let status = child.wait().unwrap();
    let seen = reader.join().unwrap();
    assert_eq!(status.code(), Some(7), "{kind:?}: the command's exit code; terminal showed {seen:?}");
    assert!(seen.contains("is-a-tty") && seen.contains("got-hello"), "{kind:?}: {seen:?}");
}

#[test]
fn native_exec_attaches_stdin_and_a_terminal() {
    exec_attaches_stdin_and_a_terminal(Kind::Native);
}

#[test]
fn docker_exec_attaches_stdin_and_a_terminal() {
    exec_attaches_stdin_and_a_terminal(Kind::Docker);
}

// ---- offline start --------------------------------------------------------------------------------------------

/// `jetship run` of a digest-pinned image already here starts with the registry stopped, asking it nothing (no
/// "local copy" fallback: no request was tried); a tag still needs the registry.
fn run_starts_a_pinned_image_with_the_registry_stopped(kind: Kind) {
    let mut env = Env::new(kind, "");
    let out = env.jetship(&["run", "--rm", &env.image, "echo", "online"]);
    assert_eq!(lines(&out.stdout), ["online"], "{kind:?}: {}", text(&out.stderr));
    assert!(!env.proxy.state.requests("/v2/").is_empty(), "the first run pulled through the proxy");
    env.proxy.state.clear();
    drop(env.registry.take());
    let out = env.jetship(&["run", "--rm", &env.image, "echo", "offline"]);
    assert_eq!(out.status.code(), Some(0), "{kind:?}: {}", text(&out.stderr));
    assert_eq!(lines(&out.stdout), ["offline"]);
    assert!(!text(&out.stderr).contains("warning"), "{kind:?}: no registry was tried: {}", text(&out.stderr));
    assert_eq!(env.proxy.state.requests("").len(), 0, "{kind:?}: not one registry request");
}

#[test]
fn native_run_starts_a_pinned_image_with_the_registry_stopped() {
    run_starts_a_pinned_image_with_the_registry_stopped(Kind::Native);
}

#[test]
fn docker_run_starts_a_pinned_image_with_the_registry_stopped() {
    run_starts_a_pinned_image_with_the_registry_stopped(Kind::Docker);
}

// ---- the agent's deployments: offline start, restart state across restarts --------------------------------------

fn executor(env: &Env, backend: Arc<dyn ContainerRuntime>) -> Executor {
    let cfg = env.cfg();
    let resolver = Arc::new(RegistryResolver::new(&cfg.registry, Default::default()).unwrap());
    let mut opts = Options::from_config(&cfg);
    opts.backoff = Backoff { base: Duration::from_millis(300), cap: Duration::from_secs(5), ..Backoff::default() };
    Executor::new(backend, resolver, PullMeter::default(), opts)
}

/// Rounds until `until` holds for the deployment's report (or fails after `limit`).
fn settle(
    env: &Env,
    exec: &mut Executor,
    doc: &jetship::deploy::document::Document,
    limit: Duration,
    until: impl Fn(&Round) -> bool,
) -> Round {
    let start = Instant::now();
    loop {
        let out = env.rt.block_on(async {
            let out = exec.round(doc).await;
            exec.wait_done(Duration::from_millis(50)).await;
            out
        });
        if until(&out) {
            return out;
        }
        assert!(start.elapsed() < limit, "did not settle: {:?}", out.deployments);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With the registry stopped, the executor starts a deployment of a pinned image already in the store (or the
/// Engine's) without a registry request; its container keeps crashing, and a new executor (an agent restart)
/// reports the same restart count and exit code and continues the backoff instead of starting from zero.
fn a_deployment_starts_offline_and_its_restart_count_survives_an_agent_restart(kind: Kind) {
    let mut env = Env::new(kind, "");
    let backend = env.backend();
    env.rt.block_on(backend.ensure_image(&env.image)).unwrap();
    env.proxy.state.clear();
    drop(env.registry.take());
    let doc = format!(
        "[deployments.crashy]\nimage = \"{}\"\ncommand = [\"sh\", \"-c\"]\nargs = [\"echo up; sleep 1; exit 3\"]\nrestart = \"always\"\n",
        env.image
    );
    let doc = jetship::deploy::document::parse(doc.as_bytes(), Some(jetship::deploy::document::Format::Toml), "c.toml")
        .unwrap();
    let report = |o: &Round| o.deployments["crashy"].clone();
    let mut first = executor(&env, backend.clone());
    settle(&env, &mut first, &doc, Duration::from_secs(60), |o| report(o).state == DeploymentState::Running);
    let started = |b: &Arc<dyn ContainerRuntime>| {
        let owned = env.rt.block_on(b.list_owned()).unwrap();
        owned
            .into_iter()
            .find(|c| c.labels.get("io.jetship.deployment").is_some_and(|d| d == "crashy"))
            .unwrap()
            .started_at
    };
    let first_start = started(&backend).expect("a start time");
    let before = settle(&env, &mut first, &doc, Duration::from_secs(60), |o| {
        let r = report(o);
        r.restarts >= 2 && matches!(r.state, DeploymentState::Restarting { .. })
    });
    let before = report(&before);
    drop(first);
    let mut again = executor(&env, backend.clone());
    let out = settle(&env, &mut again, &doc, Duration::from_secs(30), |_| true);
    let r = report(&out);
    assert_eq!(r.restarts, before.restarts, "{kind:?}: the count survives the restart: {:?}", r.state);
    assert_eq!(r.exit_code, Some(3), "{kind:?}: the last exit code survives too");
    let DeploymentState::Restarting { attempt, .. } = before.state else { unreachable!() };
    let out = settle(&env, &mut again, &doc, Duration::from_secs(60), |o| {
        matches!(report(o).state, DeploymentState::Restarting { .. }) && report(o).restarts > before.restarts
    });
    let DeploymentState::Restarting { attempt: next, backoff_ms, .. } = report(&out).state else { unreachable!() };
    assert!(next > attempt, "{kind:?}: attempt {next} after {attempt}: the backoff goes on, not from zero");
    assert!(backoff_ms > 300, "{kind:?}: backoff {backoff_ms} ms is past the first step");
    assert_eq!(env.proxy.state.requests("").len(), 0, "{kind:?}: not one registry request");
    // A restarted container's start time is its last start, not its creation.
    assert!(started(&backend).unwrap() > first_start, "{kind:?}: the start time moves with each restart");
    // `ps` shows the count the agent reported, read from the same state.
    let rows = env.ps();
    let row = rows.iter().find(|r| r["deployment"] == "crashy").unwrap();
    assert_eq!(row["owner"], "agent");
    assert!(row["restarts"].as_u64().unwrap() >= u64::from(before.restarts), "{row}");
}

#[test]
fn native_a_deployment_starts_offline_and_its_restart_count_survives_an_agent_restart() {
    a_deployment_starts_offline_and_its_restart_count_survives_an_agent_restart(Kind::Native);
}

#[test]
fn docker_a_deployment_starts_offline_and_its_restart_count_survives_an_agent_restart() {
    a_deployment_starts_offline_and_its_restart_count_survives_an_agent_restart(Kind::Docker);
}
