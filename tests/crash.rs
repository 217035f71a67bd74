//! Kills at the worst moment: the agent aborts itself (SIGKILL) at each named crash point during an update,
//! is started again, and must converge with no duplicate container, no leaked root file system mount or
//! monitor, a verified store and every container supervised. Every point at least twice on the native backend
//! (runc under conmon) and once on Docker (the points that exist there: Docker pulls and unpacks itself).
//! Real mosquitto, docker-registry, runc/conmon and dockerd on loopback; each round is bounded in time.

mod support;

use std::time::{Duration, Instant};

use support::device::*;
use support::faults;
use support::mosquitto::Mosquitto;
use support::registry::Registry;

/// The points every backend reaches during an update.
const COMMON: &[&str] = &["container-created", "container-started", "mid-spool-append@4"];
/// The points only the native backend reaches (it pulls, unpacks and supervises itself).
const NATIVE_ONLY: &[&str] = &["blob-downloaded@2", "mid-unpack", "snapshot-renamed", "conmon-spawned"];

/// One round: how long the agent took to reach the crash point, and to converge after the restart.
struct Round {
    point: String,
    to_crash: Duration,
    to_converge: Duration,
    /// What the agent reported repairing after the restart.
    repairs: Vec<String>,
}

fn crash_suite(native: bool, points: &[&str], rounds_each: usize) {
    let (broker, registry) = (Mosquitto::start(), Registry::start());
    let device = if native { Device::native(&broker, &registry.addr) } else { Device::new(&broker, &registry.addr) };
    let state = device.state();
    let mut results = Vec::new();
    let mut generation = 0;
    for round in 0..rounds_each {
        for point in points {
            generation += 1;
            let tag = format!("g{generation}");
            let digest = push(&registry, &tag, &format!("crash-{native}-{round}-{point}"));
            let image = format!("{}/hello:{tag}", registry.addr);
            let doc = device.write_doc(
                &format!("g{generation}.toml"),
                &format!("generation = {generation}\n{}", deployment("app", &image, &tag, "running_for = \"1s\"")),
            );
            let started = Instant::now();
            let round_start = chrono::Utc::now();
            let mut agent = Agent::start_with(&device.config, &[("JETSHIP_CRASH_AT", point)]);
            let out = support::jetship(&["deploy", &device.id, "-f", doc.to_str().unwrap(), "--broker", &broker.url()]);
            assert!(out.status.success(), "{}", text(&out));
            let status = agent.wait_exit(Duration::from_secs(90));
            let name = point.split('@').next().unwrap();
            assert!(
                status.is_some() && agent.log().contains(&format!("crash point {name} reached")),
                "round {round}: the agent did not stop at {point} (crash points exist in debug builds only):\n{}",
                agent.log()
            );
            let to_crash = started.elapsed();

            let restarted = Instant::now();
            let agent = Agent::start(&device.config);
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let rep = reported_soon(&broker, &device.id);
                let app = &rep["deployments"]["app"];
                if rep["applied_generation"] == generation
                    && app["state"] == "running"
                    && app["digest"] == digest.as_str()
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}, {point}: no convergence to generation {generation}: {rep}\n{}",
                    agent.log()
                );
                std::thread::sleep(Duration::from_millis(300));
            }
            let to_converge = restarted.elapsed();
            check_sound(&device, &state, point, &agent);
            let repairs: Vec<String> = reported_soon(&broker, &device.id)["repairs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| {
                    let at = r["at"].as_str().and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok());
                    at.is_some_and(|at| at >= round_start)
                })
                .map(|r| format!("{}: {}", r["subject"].as_str().unwrap_or(""), r["problem"].as_str().unwrap_or("")))
                .collect();
            results.push(Round { point: point.to_string(), to_crash, to_converge, repairs });
            drop(agent);
        }
    }
    let backend = if native { "native" } else { "docker" };
    for r in &results {
        println!(
            "crash round {backend} {:<22} crash after {:>5.1}s, converged {:>5.1}s after the restart; repairs: {:?}",
            r.point,
            r.to_crash.as_secs_f64(),
            r.to_converge.as_secs_f64(),
            r.repairs
        );
    }
    let worst = results.iter().map(|r| r.to_converge).max().unwrap_or_default();
    println!("crash suite {backend}: {} rounds, all converged, slowest {:.1}s", results.len(), worst.as_secs_f64());
}

/// After convergence: one container, supervised, nothing left mounted or monitored that should not be, and the
/// store verified.
fn check_sound(device: &Device, state: &std::path::Path, point: &str, agent: &Agent) {
    // The old version is removed once the new one passed its gate: let the round that does it run.
    let deadline = Instant::now() + Duration::from_secs(20);
    while device.containers(false).len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = device.containers(false);
    assert_eq!(all.len(), 1, "{point}: duplicate or leftover containers {all:?}\n{}", agent.log());
    assert_eq!(device.containers(true), all, "{point}: the container is not running");
    if device.native {
        let mounts = faults::bundle_mounts(state);
        let expected: std::collections::BTreeSet<_> =
            all.iter().map(|id| state.join("bundles").join(id).join("rootfs")).collect();
        assert_eq!(mounts, expected, "{point}: leaked or missing root file system mounts");
        assert_eq!(faults::monitors(state), all, "{point}: the running container is not supervised by one conmon");
        let bundles: Vec<String> = std::fs::read_dir(state.join("bundles"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(bundles, all, "{point}: bundles left behind");
    }
    let problems = faults::store_problems(state);
    assert!(problems.is_empty(), "{point}: the store is not verified: {problems:?}");
}

#[test]
fn every_crash_point_twice_on_the_native_backend_converges_supervised_without_leaks() {
    let points: Vec<&str> = COMMON.iter().chain(NATIVE_ONLY).copied().collect();
    crash_suite(true, &points, 2);
}

#[test]
fn every_crash_point_of_the_docker_backend_once_converges_without_duplicates() {
    crash_suite(false, COMMON, 1);
}

/// Kills the conmon of container `id` under `state`; returns once it is gone.
fn kill_monitor(state: &std::path::Path, id: &str) {
    let pid: i32 =
        std::fs::read_to_string(state.join("containers").join(id).join("conmon.pid")).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while faults::monitors(state).contains(&id.to_owned()) {
        assert!(Instant::now() < deadline, "conmon {pid} did not die");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The repairs `reported` lists for container `id`.
fn repairs_of(broker: &Mosquitto, device: &Device, id: &str) -> Vec<serde_json::Value> {
    let subject = format!("container {id}");
    reported_soon(broker, &device.id)["repairs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["subject"] == subject.as_str())
        .cloned()
        .collect()
}

#[test]
fn a_container_whose_monitor_is_gone_is_never_left_running_unsupervised() {
    let (broker, registry) = (Mosquitto::start(), Registry::start());
    let device = Device::native(&broker, &registry.addr);
    let state = device.state();
    push(&registry, "v1", "monitor-1");
    let image = format!("{}/hello:v1", registry.addr);
    let doc = device.write_doc("v1.toml", &deployment("app", &image, "one", "running_for = \"1s\""));
    let agent = Agent::start(&device.config);
    let out = deploy(&broker, &device, &doc);
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    let id = device.containers(true).remove(0);

    // 1. conmon dies while the agent runs: the agent notices within a round or two.
    kill_monitor(&state, &id);
    wait_until("the container supervised again", Duration::from_secs(20), || {
        faults::monitors(&state) == [id.clone()] && device.containers(true) == [id.clone()]
    });
    wait_until("the repair reported", Duration::from_secs(10), || !repairs_of(&broker, &device, &id).is_empty());
    let r = &repairs_of(&broker, &device, &id)[0];
    assert!(r["problem"].as_str().unwrap().contains("monitor (conmon) is gone while the container is running"), "{r}");
    assert!(r["action"].as_str().unwrap().contains("under a new conmon"), "{r}");
    assert!(r["lost"].as_str().is_some(), "{r}");
    drop(agent);

    // 2. The agent killed right after creating the next version, and conmon with it: the created container
    // has no monitor when the agent comes back (what 10 of 24 kill rounds left running unsupervised).
    push(&registry, "v2", "monitor-2");
    let image = format!("{}/hello:v2", registry.addr);
    let doc = device.write_doc("v2.toml", &deployment("app", &image, "two", "running_for = \"1s\""));
    let mut agent = Agent::start_with(&device.config, &[("JETSHIP_CRASH_AT", "container-created")]);
    let out = support::jetship(&["deploy", &device.id, "-f", doc.to_str().unwrap(), "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(agent.wait_exit(Duration::from_secs(60)).is_some(), "no crash:\n{}", agent.log());
    let created: Vec<String> = device.containers(false).into_iter().filter(|c| *c != id).collect();
    assert_eq!(created.len(), 1, "{created:?}");
    let new = created[0].clone();
    kill_monitor(&state, &new);
    let agent = Agent::start(&device.config);
    wait_until("v2 running under its own conmon", Duration::from_secs(40), || {
        device.containers(false) == [new.clone()] && faults::monitors(&state) == [new.clone()]
    });
    wait_until("the repair reported", Duration::from_secs(10), || !repairs_of(&broker, &device, &new).is_empty());
    let r = &repairs_of(&broker, &device, &new)[0];
    assert!(r["problem"].as_str().unwrap().contains("while the container is created"), "{r}\n{}", agent.log());
    assert!(r.get("lost").is_none(), "nothing is lost for a container that had not started: {r}");
}
