//! Bridge networking with published ports on both backends: a busybox `httpd` in a `network = "bridge"`
//! container answers `curl` from the host on the published port, on 127.0.0.1 and on the host's own address,
//! and a port published on 127.0.0.1 only is not reachable on the other. The native backend runs real runc
//! under conmon with the real CNI plugins (Debian's containernetworking-plugins) on a bridge and subnet unique
//! to the test; after a stop, a crash and an agent-style restart, `ip`, `iptables-save`, the mount table and
//! host-local's lease dir show nothing of the container left. The Docker backend runs on a private dockerd
//! whose default bridge is one the test made. The real agent runs a bridge document end to end: its tcp health
//! gate through the published port, a low port refused by the default policy, everything detached when the
//! deployment is removed. Needs root (scripts/test runs as root).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jetship::base::NetworkMode;
use jetship::runtime::oci::{OciBackend, OciSettings};
use jetship::runtime::{ContainerConfig, ContainerRuntime, ExecStream, RunState};
use support::backend_contract::{push_busybox, wait_for_state};
use support::registry::{Pusher, Registry};

/// Runs a host tool and returns its stdout; panics with stderr when it fails.
fn tool(program: &str, package: &str, args: &[&str]) -> String {
    let out = Command::new(support::require_tool(program, package)).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bridge name and a /24 no route of this host uses, unique to this test run.
fn unique_network(prefix: &str) -> (String, String, String) {
    let routes = tool("ip", "iproute2", &["-4", "route", "show", "table", "all"]);
    loop {
        let r: u32 = rand::random();
        let (a, b) = (128 + (r % 64), (r >> 8) % 256);
        let subnet = format!("10.{a}.{b}.0/24");
        if !routes.contains(&format!("10.{a}.{b}.")) {
            let bridge = format!("{prefix}{:06x}", r >> 8);
            return (bridge, subnet, format!("10.{a}.{b}.1/24"));
        }
    }
}

/// Deletes the bridge on drop (the CNI bridge plugin or the test made it; nothing else uses it).
struct BridgeGuard(String);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// The host's own (non-loopback) IPv4 address: that of the default route's interface, else the first global one.
fn host_address() -> String {
    let dev = tool("ip", "iproute2", &["-4", "route", "show", "default"])
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .map(str::to_owned);
    let addrs = tool("ip", "iproute2", &["-4", "-o", "addr", "show", "scope", "global"]);
    let found = addrs.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (ifname, cidr) = (f.get(1)?, f.get(3)?);
        (dev.as_deref().is_none_or(|d| d == *ifname) && !ifname.starts_with("js")).then(|| cidr.split('/').next())?
    });
    found.expect("this host has a non-loopback IPv4 address").to_owned()
}

/// `curl` of `http://addr:port/`: the body, or the error.
fn curl(addr: &str, port: u16) -> Result<String, String> {
    let out = Command::new(support::require_tool("curl", "curl"))
        .args(["-sS", "-m", "3", &format!("http://{addr}:{port}/")])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `curl` until it answers (the server starts after the container does).
fn curl_soon(addr: &str, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match curl(addr, port) {
            Ok(body) => return body,
            Err(e) if Instant::now() > deadline => panic!("nothing answers on {addr}:{port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs `cmd` in the container and returns its stdout.
async fn exec(backend: &dyn ContainerRuntime, id: &str, cmd: &[&str]) -> String {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink_out = out.clone();
    let sink: jetship::runtime::ExecSink = Arc::new(move |stream, bytes: &[u8]| {
        if stream == ExecStream::Stdout {
            sink_out.lock().unwrap().extend_from_slice(bytes);
        }
    });
    let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    let code = backend.exec(id, &cmd, Some(Duration::from_secs(10)), sink).await.unwrap();
    assert_eq!(code, 0, "{}: {cmd:?} in {id}", backend.name());
    let bytes = out.lock().unwrap().clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A bridge container running busybox httpd on port 80, published on `port` (every address) and on
/// 127.0.0.1:`local_port`.
fn web(image: &str, port: u16, local_port: u16) -> ContainerConfig {
    ContainerConfig {
        image: image.to_owned(),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        args: Some(vec!["/bin/busybox mkdir -p /www && echo hello-from-the-bridge > /www/index.html && \
             exec /bin/busybox httpd -f -p 80 -h /www"
            .into()]),
        network: NetworkMode::Bridge,
        ports: vec![format!("{port}:80").parse().unwrap(), format!("127.0.0.1:{local_port}:80").parse().unwrap()],
        ..Default::default()
    }
}

/// The scenario both backends share: create and start the web container, then reach it as the host does.
/// Returns the container's /etc/resolv.conf and /etc/hosts.
async fn serves_on_published_ports(backend: &dyn ContainerRuntime, image: &str, id: &str) -> (String, String) {
    let name = backend.name();
    let (port, local) = (support::reserve_port(), support::reserve_port());
    let host = host_address();
    backend.ensure_image(image).await.unwrap_or_else(|e| panic!("{name}: ensure_image: {e}"));
    backend
        .create(id, &web(image, port.port, local.port), BTreeMap::new())
        .await
        .unwrap_or_else(|e| panic!("{name}: create: {e}"));
    backend.start(id).await.unwrap_or_else(|e| panic!("{name}: start: {e}"));
    wait_for_state(backend, id, RunState::Running, Duration::from_secs(20)).await;
    let hello = "hello-from-the-bridge\n";
    assert_eq!(curl_soon("127.0.0.1", port.port), hello, "{name}: the published port on 127.0.0.1");
    assert_eq!(curl_soon(&host, port.port), hello, "{name}: the published port on the host's address {host}");
    assert_eq!(curl_soon("127.0.0.1", local.port), hello, "{name}: the port published on 127.0.0.1");
    assert!(curl(&host, local.port).is_err(), "{name}: a port published on 127.0.0.1 answers on {host}");
    let net = exec(backend, id, &["/bin/busybox", "readlink", "/proc/self/ns/net"]).await;
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(net.trim(), own.display().to_string(), "{name}: the container has a network namespace of its own");
    (exec(backend, id, &["cat", "/etc/resolv.conf"]).await, exec(backend, id, &["cat", "/etc/hosts"]).await)
}

/// A native backend on a private state dir, run dir, cgroup and a bridge of its own; the host root has a
/// systemd-resolved stub resolv.conf and the resolver's upstream list.
struct Native {
    _dir: tempfile::TempDir,
    _registry: Registry,
    _bridge: BridgeGuard,
    config: PathBuf,
    state: PathBuf,
    run_dir: PathBuf,
    bridge: String,
    image: String,
}

impl Native {
    async fn new() -> Native {
        assert!(nix::unistd::geteuid().is_root(), "container tests need root (scripts/test runs as root)");
        support::require_tool("conmon", "conmon");
        support::require_tool("runc", "runc");
        support::require_tool("iptables-save", "iptables");
        assert!(
            Path::new("/usr/lib/cni/bridge").is_file(),
            "the CNI plugins are needed: apt-get install containernetworking-plugins"
        );
        let registry = Registry::start();
        let image = push_busybox(&Pusher::new(&registry.addr), &registry.addr, "jetship/net", "net").await;
        let dir = tempfile::tempdir().unwrap();
        let (state, run_dir, host) = (dir.path().join("state"), dir.path().join("run"), dir.path().join("host"));
        std::fs::create_dir_all(host.join("etc")).unwrap();
        std::fs::create_dir_all(host.join("run/systemd/resolve")).unwrap();
        std::fs::create_dir_all(host.join("dev/shm")).unwrap();
        std::fs::write(host.join("etc/resolv.conf"), "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n")
            .unwrap();
        std::fs::write(host.join("run/systemd/resolve/resolv.conf"), "nameserver 192.0.2.53\nsearch lan\n").unwrap();
        let (bridge, subnet, _) = unique_network("jsn");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\ndevice_id = \"net-test\"\n[registry]\ndisk_reserve_bytes = 0\nretries = 1\n\
                 [host]\nroot = \"{}\"\n[runtime]\nrun_dir = \"{}\"\nstop_grace_s = 2\ncgroup_parent = \"/jetship-net-{pid}\"\n\
                 [network]\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\"\n",
                state.display(),
                host.display(),
                run_dir.display(),
                pid = std::process::id(),
            ),
        )
        .unwrap();
        Native {
            _dir: dir,
            _registry: registry,
            _bridge: BridgeGuard(bridge.clone()),
            config,
            state,
            run_dir,
            bridge,
            image,
        }
    }

    /// A backend as the agent opens it; a second call is the backend of a restarted agent.
    fn backend(&self) -> OciBackend {
        let cfg = jetship::config::load(Some(&self.config)).unwrap().config;
        OciBackend::new(OciSettings::from_config(&cfg)).unwrap()
    }

    /// What of container `id` (address `ip`) the host still has: a mounted namespace, veths on the bridge,
    /// iptables rules naming it, address leases.
    fn leftovers(&self, id: &str, ip: &str) -> Vec<String> {
        let mut left = Vec::new();
        let netns = self.run_dir.join("netns").join(id);
        if std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&netns.display().to_string()) {
            left.push(format!("namespace mounted on {}", netns.display()));
        }
        if netns.exists() {
            left.push(format!("namespace file {}", netns.display()));
        }
        let veths = tool("ip", "iproute2", &["-o", "link", "show", "master", &self.bridge]);
        if !veths.trim().is_empty() {
            left.push(format!("interfaces on {}: {veths}", self.bridge));
        }
        let rules = tool("iptables-save", "iptables", &[]);
        for line in rules.lines().filter(|l| l.contains(id) || l.contains(&format!("{ip}/32"))) {
            left.push(format!("iptables: {line}"));
        }
        let leases = self.state.join("network/ipam").join(&self.bridge);
        for e in std::fs::read_dir(&leases).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                left.push(format!("lease {name}"));
            }
        }
        left
    }
}

impl Drop for Native {
    /// A failed test's containers are stopped and removed through the backend, so their attachments go too.
    fn drop(&mut self) {
        let backend = self.backend();
        // Dropped inside the test's runtime: the cleanup gets a thread and a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                for c in backend.list_owned().await.unwrap_or_default() {
                    let _ = backend.stop(&c.id, Duration::ZERO).await;
                    let _ = backend.remove(&c.id).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The container's address, from the /etc/hosts it was given.
fn address_in(hosts: &str, id: &str) -> String {
    let line = hosts.lines().last().unwrap_or_default();
    let (ip, name) = line.split_once('\t').unwrap_or_else(|| panic!("no address line in /etc/hosts: {hosts}"));
    assert_eq!(name, id, "the hostname of a bridge container is its id: {hosts}");
    ip.to_owned()
}

#[tokio::test]
async fn native_bridge_container_answers_on_published_ports_and_stop_and_remove_leave_nothing() {
    let env = Native::new().await;
    let backend = env.backend();
    let id = format!("web-{:08x}", rand::random::<u32>());
    let (resolv, hosts) = serves_on_published_ports(&backend, &env.image, &id).await;
    assert_eq!(resolv, "nameserver 192.0.2.53\nsearch lan\n", "the stub resolver is replaced by its upstream list");
    let ip = address_in(&hosts, &id);
    let running = env.leftovers(&id, &ip);
    assert!(running.iter().any(|l| l.starts_with("lease")), "a lease while running: {running:?}");
    assert!(running.iter().any(|l| l.starts_with("iptables")), "port rules while running: {running:?}");

    backend.stop(&id, Duration::from_secs(2)).await.unwrap();
    assert_eq!(env.leftovers(&id, &ip), Vec::<String>::new(), "after stop");
    assert!(curl("127.0.0.1", backend_ports(&env, &id)).is_err(), "a stopped container's port still answers");

    // Started again: attached anew, and it answers again.
    backend.start(&id).await.unwrap();
    wait_for_state(&backend, &id, RunState::Running, Duration::from_secs(20)).await;
    let hosts = exec(&backend, &id, &["cat", "/etc/hosts"]).await;
    let ip = address_in(&hosts, &id);
    let port = backend_ports(&env, &id);
    assert_eq!(curl_soon("127.0.0.1", port), "hello-from-the-bridge\n", "after a restart");

    backend.stop(&id, Duration::from_secs(2)).await.unwrap();
    backend.remove(&id).await.unwrap();
    assert_eq!(env.leftovers(&id, &ip), Vec::<String>::new(), "after remove");
    assert!(!env.state.join("network/containers").join(&id).exists(), "the network record is removed");
}

/// The host port published on every address, from the container's network record.
fn backend_ports(env: &Native, id: &str) -> u16 {
    let record = std::fs::read(env.state.join("network/containers").join(id).join("record.json")).unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    let first = record["ports"][0].as_str().unwrap();
    first.split(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_crashed_bridge_container_is_detached_by_the_next_agent_and_a_vanished_one_removed() {
    let env = Native::new().await;
    let backend = env.backend();
    let (crashed, vanished) =
        (format!("crash-{:08x}", rand::random::<u32>()), format!("gone-{:08x}", rand::random::<u32>()));
    let mut ips = BTreeMap::new();
    for id in [&crashed, &vanished] {
        let (resolv, hosts) = serves_on_published_ports(&backend, &env.image, id).await;
        assert!(resolv.contains("nameserver 192.0.2.53"), "{resolv}");
        ips.insert(id.clone(), address_in(&hosts, id));
    }
    // The container's process is killed: it exits with its namespace, veth, rules and lease left.
    let pid = backend.inspect(&crashed).await.unwrap().unwrap().pid.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for_state(&backend, &crashed, RunState::Exited, Duration::from_secs(20)).await;
    assert!(!env.leftovers(&crashed, &ips[&crashed]).is_empty(), "the crash left the attachment");
    // The other vanishes with the agent: killed, deleted from the runtime, its record lost (a power cut).
    let pid = backend.inspect(&vanished).await.unwrap().unwrap().pid.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for_state(&backend, &vanished, RunState::Exited, Duration::from_secs(20)).await;
    let runc_root = env.run_dir.join("runc");
    tool("runc", "runc", &["--root", &runc_root.display().to_string(), "delete", "--force", &vanished]);
    std::fs::remove_dir_all(env.state.join("containers").join(&vanished)).unwrap();
    drop(backend);

    // The restarted agent's first round repairs.
    let restarted = env.backend();
    let repairs = restarted.repair().await.unwrap();
    assert!(repairs >= 2, "{repairs} repairs");
    for (id, ip) in &ips {
        assert_eq!(env.leftovers(id, ip), Vec::<String>::new(), "{id} after the agent restart");
    }
    assert!(env.state.join("network/containers").join(&crashed).exists(), "the crashed container keeps its record");
    assert!(!env.state.join("network/containers").join(&vanished).exists(), "the vanished one's record is gone");
    assert_eq!(restarted.repair().await.unwrap(), 0, "nothing left to repair");

    // The crashed one starts again on the bridge.
    restarted.start(&crashed).await.unwrap();
    wait_for_state(&restarted, &crashed, RunState::Running, Duration::from_secs(20)).await;
    assert_eq!(curl_soon("127.0.0.1", backend_ports(&env, &crashed)), "hello-from-the-bridge\n");
    restarted.stop(&crashed, Duration::from_secs(2)).await.unwrap();
    restarted.remove(&crashed).await.unwrap();
}

#[tokio::test]
async fn docker_bridge_container_answers_on_published_ports() {
    use jetship::runtime::docker::{DockerBackend, DockerOptions};
    assert!(nix::unistd::geteuid().is_root(), "container tests need root (scripts/test runs as root)");
    support::require_tool("docker-proxy", "docker.io");
    let (bridge, _, gateway) = unique_network("jsd");
    let guard = BridgeGuard(bridge.clone());
    tool("ip", "iproute2", &["link", "add", "name", &bridge, "type", "bridge"]);
    tool("ip", "iproute2", &["addr", "add", &gateway, "dev", &bridge]);
    tool("ip", "iproute2", &["link", "set", &bridge, "up"]);
    let daemon = support::dockerd::Dockerd::start_bridged(&bridge);
    let registry = Registry::start();
    let image = push_busybox(&Pusher::new(&registry.addr), &registry.addr, "jetship/net", "net-docker").await;
    let state = tempfile::tempdir().unwrap();
    let options = DockerOptions {
        agent_id: "net-test".into(),
        host_root: PathBuf::from("/"),
        gpu_mode: jetship::base::GpuMode::Off,
        credentials: Default::default(),
        state_dir: state.path().to_path_buf(),
    };
    let backend = DockerBackend::connect(&daemon.socket, options).await.unwrap();
    let id = format!("web-{:08x}", rand::random::<u32>());
    let (resolv, hosts) = serves_on_published_ports(&backend, &image, &id).await;
    assert!(resolv.contains("nameserver") && !resolv.contains("127.0.0."), "{resolv}");
    let ip = hosts.lines().last().unwrap().split_whitespace().next().unwrap().to_owned();
    let prefix = gateway.rsplit_once('.').unwrap().0;
    assert!(ip.starts_with(prefix), "the container is on the test's bridge ({gateway}): {hosts}");
    let inspect: serde_json::Value = serde_json::from_str(&daemon.docker(&["inspect", &id])).unwrap();
    assert_eq!(inspect[0]["HostConfig"]["NetworkMode"], "bridge");
    let bindings = &inspect[0]["HostConfig"]["PortBindings"]["80/tcp"];
    assert_eq!(bindings.as_array().map(Vec::len), Some(2), "{bindings}");
    backend.stop(&id, Duration::from_secs(2)).await.unwrap();
    backend.remove(&id).await.unwrap();
    drop(daemon);
    drop(guard);
}

#[test]
fn the_agent_runs_a_bridge_document_on_its_port_refuses_a_low_port_and_detaches_what_it_removes() {
    use support::device::{deploy, push, reported, text, wait_until, Agent, Device};
    let (broker, registry) = (support::mosquitto::Mosquitto::start(), Registry::start());
    push(&registry, "v1", "net-agent");
    let device = Device::native(&broker, &registry.addr);
    let (bridge, subnet, _) = unique_network("jsa");
    let _bridge = BridgeGuard(bridge.clone());
    device.add_registry_config(&format!("[network]\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\""));
    let agent = Agent::start(&device.config);
    let port = support::reserve_port();
    let doc = |ports: &str| {
        format!(
            "[deployments.web]\nimage = \"{}/hello:v1\"\ncommand = [\"sh\", \"-c\"]\n\
             args = [\"/bin/busybox mkdir -p /www && echo hello-from-the-bridge > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www\"]\n\
             network = \"bridge\"\nports = [{ports}]\n[deployments.web.health]\ntcp = {}\ninterval = \"1s\"\n",
            registry.addr, port.port
        )
    };
    // Port 80 on the host is below policy.allowed_host_ports' default range: refused, naming the key.
    let low = device.write_doc("low.toml", &doc("\"80:80\""));
    let out = deploy(&broker, &device, &low);
    assert!(!out.status.success(), "a low port was accepted: {}", text(&out));
    let reasons = reported(&broker, &device.id)["rejected"]["reasons"].to_string();
    assert!(reasons.contains("deployments.web.ports[0]") && reasons.contains("policy.allowed_host_ports"), "{reasons}");

    let web = device.write_doc("web.toml", &doc(&format!("\"{}:80\"", port.port)));
    let out = deploy(&broker, &device, &web);
    assert!(out.status.success(), "deploy --wait: {}\nagent log:\n{}", text(&out), agent.log());
    assert_eq!(curl_soon("127.0.0.1", port.port), "hello-from-the-bridge\n", "the health gate passed through the port");
    assert_eq!(curl_soon(&host_address(), port.port), "hello-from-the-bridge\n");

    let empty = device.write_doc("empty.toml", "");
    let out = deploy(&broker, &device, &empty);
    assert!(out.status.success(), "{}", text(&out));
    let veths = || tool("ip", "iproute2", &["-o", "link", "show", "master", &bridge]);
    wait_until("the container and its network gone", Duration::from_secs(30), || {
        device.containers(false).is_empty() && veths().trim().is_empty()
    });
    let netns = device.run.join("netns");
    let left: Vec<_> = std::fs::read_dir(&netns).into_iter().flatten().flatten().map(|e| e.path()).collect();
    assert_eq!(left, Vec::<PathBuf>::new(), "namespaces left");
    assert!(curl("127.0.0.1", port.port).is_err(), "the port still answers after the deployment was removed");
}

#[tokio::test]
async fn a_container_that_exited_keeps_a_sound_attachment_and_gets_a_new_one_when_check_fails() {
    let env = Native::new().await;
    let backend = env.backend();
    let id = format!("again-{:08x}", rand::random::<u32>());
    let (_, hosts) = serves_on_published_ports(&backend, &env.image, &id).await;
    let ip = address_in(&hosts, &id);
    let kill = |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    let leases = || env.leftovers(&id, "-").into_iter().filter(|l| l.starts_with("lease")).collect::<Vec<_>>();

    // Exited by itself and started again before any sweep: CHECK passes, the same attachment serves.
    kill(backend.inspect(&id).await.unwrap().unwrap().pid.unwrap()).unwrap();
    wait_for_state(&backend, &id, RunState::Exited, Duration::from_secs(20)).await;
    backend.start(&id).await.unwrap();
    wait_for_state(&backend, &id, RunState::Running, Duration::from_secs(20)).await;
    assert_eq!(curl_soon("127.0.0.1", backend_ports(&env, &id)), "hello-from-the-bridge\n");
    assert_eq!(address_in(&exec(&backend, &id, &["cat", "/etc/hosts"]).await, &id), ip, "the attachment was kept");
    assert_eq!(leases(), [format!("lease {ip}")]);

    // Exited again, and its veth taken off the bridge meanwhile: CHECK fails, it is detached and attached anew.
    kill(backend.inspect(&id).await.unwrap().unwrap().pid.unwrap()).unwrap();
    wait_for_state(&backend, &id, RunState::Exited, Duration::from_secs(20)).await;
    let veths = tool("ip", "iproute2", &["-o", "link", "show", "master", &env.bridge]);
    let veth = veths.split(": ").nth(1).and_then(|n| n.split('@').next()).expect("a veth on the bridge").to_owned();
    tool("ip", "iproute2", &["link", "set", &veth, "nomaster"]);
    backend.start(&id).await.unwrap();
    wait_for_state(&backend, &id, RunState::Running, Duration::from_secs(20)).await;
    assert_eq!(curl_soon("127.0.0.1", backend_ports(&env, &id)), "hello-from-the-bridge\n", "attached anew");
    let new_ip = address_in(&exec(&backend, &id, &["cat", "/etc/hosts"]).await, &id);
    assert_ne!(new_ip, ip, "host-local hands out the next address to a new attachment");
    assert_eq!(leases(), [format!("lease {new_ip}")], "one lease: the old one was freed");

    backend.stop(&id, Duration::from_secs(2)).await.unwrap();
    backend.remove(&id).await.unwrap();
    assert_eq!(env.leftovers(&id, &new_ip), Vec::<String>::new());
}

#[tokio::test]
async fn jetship_run_publishes_ports_with_network_bridge_and_refuses_them_without() {
    let env = Native::new().await;
    let port = support::reserve_port();
    let run = |args: &[&str]| support::jetship_with_config(&env.config, args).output().unwrap();
    let out = run(&["run", "-d", "-p", &format!("{}:80", port.port), &env.image, "true"]);
    assert!(!out.status.success(), "ports without the bridge were accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--network bridge"), "{err}");
    let out = run(&["run", "-p", "0:80", "--network", "bridge", &env.image]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("host port `0`"), "{}", String::from_utf8_lossy(&out.stderr));

    let name = format!("cli-{:08x}", rand::random::<u32>());
    let script = "/bin/busybox mkdir -p /www && echo hello-from-the-bridge > /www/index.html && \
                  exec /bin/busybox httpd -f -p 80 -h /www";
    let publish = format!("{}:80", port.port);
    let out = run(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "bridge",
        "-p",
        &publish,
        "--entrypoint",
        "/bin/sh",
        &env.image,
        "-c",
        script,
    ]);
    assert!(out.status.success(), "jetship run: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(curl_soon("127.0.0.1", port.port), "hello-from-the-bridge\n");
    assert_eq!(curl_soon(&host_address(), port.port), "hello-from-the-bridge\n");
    let backend = env.backend();
    backend.stop(&name, Duration::from_secs(2)).await.unwrap();
    backend.remove(&name).await.unwrap();
    assert!(curl("127.0.0.1", port.port).is_err());
}
