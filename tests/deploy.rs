//! Deployments end to end: a real Mosquitto, a real docker-registry, the real `jetship agent` binary running
//! containers through the Docker backend on a private dockerd, and the real `jetship` CLI as the controller.
//! The Docker CLI is the independent observer of what runs.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::device::*;
use support::mosquitto::{publish, Mosquitto};
use support::registry::{Pusher, Registry};

#[test]
fn deploy_wait_converges_two_deployments_shown_running_with_digests_and_logs() {
    converges_two_deployments(false);
}

#[test]
fn deploy_wait_converges_on_the_native_backend() {
    converges_two_deployments(true);
}

fn converges_two_deployments(native: bool) {
    let (broker, registry) = (Mosquitto::start(), Registry::start());
    let digest = push(&registry, "v1", "one");
    let device = if native { Device::native(&broker, &registry.addr) } else { Device::new(&broker, &registry.addr) };
    let _agent = Agent::start(&device.config);
    let image = format!("{}/hello:v1", registry.addr);
    let doc = device.write_doc(
        "two.toml",
        // beta's gate runs a command inside its container.
        &(deployment("alpha", &image, "hello-from-alpha", PASSES)
            + &deployment("beta", &image, "hello-from-beta", "exec = [\"true\"]\ninterval = \"1s\"")),
    );
    let out = deploy(&broker, &device, &doc);
    assert!(out.status.success(), "deploy --wait failed: {}\nagent log:\n{}", text(&out), _agent.log());
    assert!(text(&out).contains("converged to generation 1"), "{}", text(&out));
    assert_eq!(device.containers(true).len(), 2, "{:?}", device.containers(false));

    let rows: Vec<Value> =
        serde_json::from_slice(&support::jetship(&["devices", "--json", "--broker", &broker.url()]).stdout).unwrap();
    let row = rows.iter().find(|r| r["device"] == device.id.as_str()).expect("device listed");
    assert_eq!((row["deployments_running"].as_u64(), row["deployments_total"].as_u64()), (Some(2), Some(2)));
    let rep = reported(&broker, &device.id);
    assert_eq!(rep["applied_generation"], 1, "{rep}");
    for name in ["alpha", "beta"] {
        assert_eq!(rep["deployments"][name]["state"], "running", "{rep}");
        assert_eq!(rep["deployments"][name]["digest"], digest.as_str(), "{rep}");
        assert!(rep["deployments"][name]["started_at"].is_string(), "{rep}");
        assert_eq!(rep["deployments"][name]["source"], "device", "{rep}");
        assert_eq!(rep["deployments"][name]["health"]["status"], "healthy", "{rep}");
        let logs = support::jetship(&["logs", &device.id, name, "--tail", "5", "--broker", &broker.url()]);
        assert!(logs.status.success(), "{}", text(&logs));
        assert!(text(&logs).contains(&format!("hello-from-{name}")), "{}", text(&logs));
    }
}

#[test]
fn failing_update_rolls_back_to_the_previous_digest_and_passing_update_replaces_it() {
    update_rolls_back_or_replaces(false);
}

#[test]
fn failing_update_rolls_back_on_the_native_backend() {
    update_rolls_back_or_replaces(true);
}

fn update_rolls_back_or_replaces(native: bool) {
    let (broker, registry) = (Mosquitto::start(), Registry::start());
    let (d1, d2, d3) = (push(&registry, "v1", "one"), push(&registry, "v2", "two"), push(&registry, "v3", "three"));
    let device = if native { Device::native(&broker, &registry.addr) } else { Device::new(&broker, &registry.addr) };
    let agent = Agent::start(&device.config);
    let image = |tag: &str| format!("{}/hello:{tag}", registry.addr);

    let v1 = device.write_doc("v1.toml", &deployment("app", &image("v1"), "one", PASSES));
    let out = deploy(&broker, &device, &v1);
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    let old = device.containers(true);
    assert_eq!(old.len(), 1);

    let v2 = device.write_doc("v2.toml", &deployment("app", &image("v2"), "two", FAILS));
    let out = deploy(&broker, &device, &v2);
    assert_eq!(out.status.code(), Some(1), "a failed health gate must fail deploy --wait: {}", text(&out));
    assert!(text(&out).contains("rolled back") && text(&out).contains("health check failed"), "{}", text(&out));
    wait_until("the old version running alone", Duration::from_secs(20), || device.containers(false) == old);
    assert_eq!(device.containers(true), old, "the previous version runs again");
    let rep = reported(&broker, &device.id);
    assert_eq!(rep["deployments"]["app"]["state"], "rolled-back", "{rep}");
    assert!(rep["deployments"]["app"]["reason"].as_str().unwrap().contains("127.0.0.1:1"), "{rep}");
    assert_eq!(rep["deployments"]["app"]["digest"], d1.as_str(), "{rep}");
    assert_eq!(rep["applied_generation"], 1, "{rep}");
    assert_ne!(d1, d2);

    let v3 = device.write_doc("v3.toml", &deployment("app", &image("v3"), "three", PASSES));
    let out = deploy(&broker, &device, &v3);
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    wait_until("only the new container", Duration::from_secs(20), || {
        let now = device.containers(false);
        now.len() == 1 && now != old
    });
    let rep = reported(&broker, &device.id);
    assert_eq!(rep["deployments"]["app"]["digest"], d3.as_str(), "{rep}");
    assert_eq!(rep["applied_generation"], 3, "{rep}");
}

#[test]
fn bad_documents_are_rejected_with_every_reason_and_running_deployments_stay() {
    let (broker, registry) = (Mosquitto::start(), Registry::start());
    push(&registry, "v1", "one");
    let device = Device::new(&broker, &registry.addr);
    let agent = Agent::start(&device.config);
    let image = format!("{}/hello:v1", registry.addr);
    let good = device.write_doc("good.toml", &deployment("app", &image, "one", PASSES));
    let out = deploy(&broker, &device, &good);
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    let running = device.containers(true);
    let started = device.started_at(&running[0]);

    let topic = format!("jetship/v1/{}/desired", device.id);
    let huge = format!(
        "{{\"generation\":9,\"deployments\":{{\"app\":{{\"image\":\"{image}\",\"env\":{{\"PAD\":\"{}\"}}}}}}}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            // Two problems in one document: both are reported.
            format!(
                r#"{{"generation":5,"deployments":{{"Bad_Name":{{"image":"{image}"}},"app":{{"image":"{image}","colour":"red"}}}}}}"#
            ),
            vec!["Bad_Name", "colour"],
        ),
        (
            format!(
                r#"{{"generation":6,"deployments":{{"app":{{"image":"{image}","volumes":[{{"host":"/etc","container":"/x"}}]}}}}}}"#
            ),
            vec!["/etc"],
        ),
        (huge, vec!["limit"]),
    ];
    for (payload, wants) in &cases {
        publish(&broker, &topic, payload.as_bytes(), false);
        wait_until(&format!("rejection naming {wants:?}"), Duration::from_secs(10), || {
            let rep = reported(&broker, &device.id);
            let reasons = rep["rejected"]["reasons"].as_array().cloned().unwrap_or_default();
            let all: String = reasons.iter().filter_map(|r| r.as_str()).collect::<Vec<_>>().join("\n");
            wants.iter().all(|w| all.contains(w))
        });
        let rep = reported(&broker, &device.id);
        assert_eq!(rep["deployments"]["app"]["state"], "running", "{rep}");
        assert_eq!(rep["generation"], 1, "a rejected document must not become the desired one: {rep}");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(device.containers(false), running, "the running deployment was touched");
    assert_eq!(device.started_at(&running[0]), started, "the running container was restarted");
}

#[test]
fn agent_restarted_without_broker_brings_deployments_back_without_duplicates() {
    restart_without_broker_brings_deployments_back(false);
}

#[test]
fn agent_restarted_without_broker_brings_native_deployments_back() {
    restart_without_broker_brings_deployments_back(true);
}

fn restart_without_broker_brings_deployments_back(native: bool) {
    let (mut broker, registry) = (Mosquitto::start(), Registry::start());
    push(&registry, "v1", "one");
    let device = if native { Device::native(&broker, &registry.addr) } else { Device::new(&broker, &registry.addr) };
    let mut agent = Agent::start(&device.config);
    let image = format!("{}/hello:v1", registry.addr);
    let doc = device
        .write_doc("two.toml", &(deployment("alpha", &image, "a", PASSES) + &deployment("beta", &image, "b", PASSES)));
    let out = deploy(&broker, &device, &doc);
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    let names = device.containers(true);
    assert_eq!(names.len(), 2);

    // A power cycle: the agent dies, the containers stop, and the broker is unreachable when it comes back.
    agent.kill();
    broker.stop();
    for n in &names {
        device.stop(n);
    }
    assert!(device.containers(true).is_empty());
    let agent = Agent::start(&device.config);
    wait_until("both deployments running again", Duration::from_secs(30), || device.containers(true) == names);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(device.containers(false), names, "containers were duplicated, not adopted:\n{}", agent.log());
}

#[test]
fn broker_stopped_mid_deploy_device_converges_and_reports_once_the_broker_is_back() {
    let mut broker = Mosquitto::start();
    let (_registry, proxy, _rt) = slow_registry("slow-broker");
    let device = Device::new(&broker, &proxy.addr);
    let agent = Agent::start(&device.config);
    let doc = device.write_doc("slow.toml", &deployment("app", &format!("{}/hello:v1", proxy.addr), "up", PASSES));
    let out = support::jetship(&["deploy", &device.id, "-f", doc.to_str().unwrap(), "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("the pull to start", Duration::from_secs(20), || state_of(&broker, &device.id, "app") == "pulling");

    broker.stop();
    wait_until("the container running with no broker", Duration::from_secs(60), || device.containers(true).len() == 1);
    broker.restart();
    wait_until("the converged state on the broker", Duration::from_secs(30), || {
        let rep = reported_soon(&broker, &device.id);
        rep["applied_generation"] == 1 && rep["deployments"]["app"]["state"] == "running"
    });
    assert_eq!(device.containers(false).len(), 1, "{}", agent.log());
}

#[test]
fn agent_killed_mid_pull_resumes_and_converges() {
    let broker = Mosquitto::start();
    let (_registry, proxy, _rt) = slow_registry("slow-kill");
    let device = Device::new(&broker, &proxy.addr);
    let mut agent = Agent::start(&device.config);
    let doc = device.write_doc("slow.toml", &deployment("app", &format!("{}/hello:v1", proxy.addr), "up", PASSES));
    let out = support::jetship(&["deploy", &device.id, "-f", doc.to_str().unwrap(), "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("the pull to start", Duration::from_secs(20), || state_of(&broker, &device.id, "app") == "pulling");
    agent.kill();
    assert!(device.containers(false).is_empty());
    assert!(device.dir.path().join("state/deployments/app.json").is_file(), "the resolved digest is kept");

    let agent = Agent::start(&device.config);
    wait_until("convergence after the restart", Duration::from_secs(60), || {
        let rep = reported_soon(&broker, &device.id);
        rep["applied_generation"] == 1 && rep["deployments"]["app"]["state"] == "running"
    });
    assert_eq!(device.containers(true).len(), 1, "{}", agent.log());
}

#[test]
fn restart_rm_and_remote_resolve_act_on_the_named_deployment_only() {
    let (broker, registry) = (Mosquitto::start(), Registry::start());
    let digest = push(&registry, "v1", "one");
    let device = Device::new(&broker, &registry.addr);
    let agent = Agent::start(&device.config);
    let image = format!("{}/hello:v1", registry.addr);
    let doc = device
        .write_doc("two.toml", &(deployment("alpha", &image, "a", PASSES) + &deployment("beta", &image, "b", PASSES)));
    let out = deploy(&broker, &device, &doc);
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    let names = device.containers(true);
    let (alpha, beta) =
        (names.iter().find(|n| n.starts_with("alpha")).unwrap(), names.iter().find(|n| n.starts_with("beta")).unwrap());
    let (alpha_started, beta_started) = (device.started_at(alpha), device.started_at(beta));

    let out = support::jetship(&["restart", &device.id, "alpha", "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(device.started_at(alpha), alpha_started, "alpha was not restarted");
    assert_eq!(device.started_at(beta), beta_started, "beta was restarted too");

    let out = support::jetship(&["resolve", &image, "--device", &device.id, "--json", "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reference"], format!("{image}@{digest}"), "{v}");
    assert_eq!(v["l4t"], "36.4.3", "{v}");
    // An {auto} tag asked of the device: its decision explained in the same words as a local `jetship resolve`.
    let auto_digest = push(&registry, "1.2-r36.4.0", "auto");
    push(&registry, "r36.3.0", "old");
    let auto = format!("{}/hello:{{auto}}", registry.addr);
    let out = support::jetship(&["resolve", &auto, "--device", &device.id, "--broker", &broker.url()]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.starts_with(&format!("{}/hello:1.2-r36.4.0@{auto_digest}", registry.addr)), "{shown}");
    let chosen = "chosen 1.2-r36.4.0: the only compatible tag; package version 1.2; L4T 36.4.0; extra tokens: none\n";
    assert!(shown.contains(chosen), "{shown}");
    assert!(
        shown.contains("rejected r36.3.0: built for L4T 36.3.0: incompatible, host L4T 36.4.3 takes R36"),
        "{shown}"
    );
    assert!(shown.contains("rejected v1: no L4T (r36.4.0) or JetPack"), "{shown}");

    let out = support::jetship(&["rm", &device.id, "alpha", "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("alpha removed", Duration::from_secs(20), || device.containers(false) == vec![beta.clone()]);
    wait_until("generation 2 applied without alpha", Duration::from_secs(20), || {
        let rep = reported_soon(&broker, &device.id);
        rep["applied_generation"] == 2 && rep["deployments"].get("alpha").is_none()
    });
    assert_eq!(device.started_at(beta), beta_started, "beta was touched by the removal of alpha");
    let out = support::jetship(&["rm", &device.id, "alpha", "--broker", &broker.url()]);
    assert!(!out.status.success() && text(&out).contains("not in the document"), "{}", text(&out));
}

#[test]
fn deploy_to_a_group_waits_for_its_devices_and_overlays_the_device_document() {
    let (broker, registry) = (Mosquitto::start(), Registry::start());
    push(&registry, "v1", "one");
    let device = Device::new(&broker, &registry.addr);
    let group = format!("lab-{:06x}", rand::random::<u32>() & 0xffffff);
    let cfg = std::fs::read_to_string(&device.config).unwrap();
    std::fs::write(&device.config, format!("groups = [\"{group}\"]\n{cfg}")).unwrap();
    let agent = Agent::start(&device.config);
    let image = format!("{}/hello:v1", registry.addr);
    wait_until("the agent online", Duration::from_secs(10), || !reported_soon(&broker, &device.id).is_null());

    let shared = device.write_doc("group.toml", &deployment("shared", &image, "from-group", PASSES));
    let target = format!("group:{group}");
    let out = support::jetship(&[
        "deploy",
        &target,
        "-f",
        shared.to_str().unwrap(),
        "--wait",
        "--timeout",
        "60",
        "--broker",
        &broker.url(),
    ]);
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    assert!(text(&out).contains(&format!("{}: converged", device.id)), "{}", text(&out));
    let own = device.write_doc("own.toml", &deployment("own", &image, "from-device", PASSES));
    let out = deploy(&broker, &device, &own);
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    let rep = reported(&broker, &device.id);
    assert_eq!(rep["deployments"]["shared"]["source"], target.as_str(), "{rep}");
    assert_eq!(rep["deployments"]["own"]["source"], "device", "{rep}");
    assert_eq!(device.containers(true).len(), 2);
}

#[test]
fn deployment_needing_a_missing_camera_waits_for_the_device_instead_of_crash_looping() {
    let (broker, registry) = (Mosquitto::start(), Registry::start());
    push(&registry, "v1", "one");
    let device = Device::new(&broker, &registry.addr);
    let agent = Agent::start(&device.config);
    let image = format!("{}/hello:v1", registry.addr);
    let text =
        deployment("cam", &image, "c", PASSES).replacen("command =", "cameras = [\"/dev/video9\"]\ncommand =", 1);
    let doc = device.write_doc("cam.toml", &text);
    let out = support::jetship(&["deploy", &device.id, "-f", doc.to_str().unwrap(), "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", self::text(&out));
    wait_until("waiting-for-device", Duration::from_secs(20), || {
        let rep = reported_soon(&broker, &device.id);
        rep["deployments"]["cam"]["state"] == "waiting-for-device"
            && rep["deployments"]["cam"]["device"] == "/dev/video9"
    });
    assert!(device.containers(false).is_empty(), "a container was made without its camera: {}", agent.log());
}

/// Issue 10, attack 7 end to end: a layer bomb in a registry fails the deployment with the numbers, and the
/// agent retries it with a growing backoff instead of unpacking it again and again.
#[test]
fn attack_7_a_layer_bomb_fails_with_the_numbers_and_is_retried_with_backoff() {
    use support::registry::{manifest_for, Blob};
    let (broker, registry) = (Mosquitto::start(), Registry::start());
    let layer = Blob::new("application/vnd.docker.image.rootfs.diff.tar.gzip", support::bombs::gzip_bomb());
    let config = serde_json::json!({
        "architecture": support::backend_contract::host_arch(), "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "0".repeat(64))]},
    });
    let config = Blob::new("application/vnd.docker.container.image.v1+json", serde_json::to_vec(&config).unwrap());
    let img = manifest_for(config, vec![layer], false);
    block_on(Pusher::new(&registry.addr).image("bomb", Some("v1"), &img));
    let device = Device::native(&broker, &registry.addr);
    let agent = Agent::start(&device.config);
    let doc = device.write_doc("bomb.toml", &format!("[deployments.app]\nimage = \"{}/bomb:v1\"\n", registry.addr));
    let out = support::jetship(&["deploy", &device.id, "-f", doc.to_str().unwrap(), "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", text(&out));
    let attempt = |rep: &Value| -> Option<u32> {
        let reason = rep["deployments"]["app"]["reason"].as_str()?;
        let n = reason.split("(attempt ").nth(1)?.split(')').next()?;
        n.parse().ok()
    };
    let mut first = Value::Null;
    wait_until("the deployment failing on the bomb", Duration::from_secs(60), || {
        first = reported_soon(&broker, &device.id);
        first["deployments"]["app"]["state"] == "failed" && attempt(&first).is_some()
    });
    let reason = first["deployments"]["app"]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("layer unpack stopped") && reason.contains("unpack.max_expansion_ratio"), "{reason}");
    assert!(
        reason.contains("compressed bytes") && reason.contains("retrying with backoff"),
        "{reason}\n{}",
        agent.log()
    );
    // Over the next 15 s: a few attempts (1 s, 2 s, 4 s, 8 s apart), not a tight loop.
    let (start, mut n) = (Instant::now(), attempt(&first).unwrap_or(0));
    while start.elapsed() < Duration::from_secs(15) {
        n = n.max(attempt(&reported_soon(&broker, &device.id)).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(300));
    }
    let unpacks = agent.log().matches("layer unpack stopped").count();
    assert!((2..=6).contains(&n), "attempt {n} after 15 s; {unpacks} unpacks in the log");
    assert!(device.containers(false).is_empty(), "no container from a bomb");
    let snapshots = device.dir.path().join("state/snapshots");
    // Nothing committed (a `.tmp-` directory is an attempt under way; it is removed when it stops).
    let committed: Vec<_> = std::fs::read_dir(&snapshots)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let committed: Vec<&String> = committed.iter().filter(|n| !n.starts_with(".tmp-")).collect();
    assert!(committed.is_empty(), "a bomb snapshot was committed: {committed:?}");
}
