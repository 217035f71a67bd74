//! Power cuts, full disks, registry outages and clock skew against the real agent: real mosquitto,
//! docker-registry, runc under conmon (and dockerd), loopback only, each wait bounded.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::device::*;
use support::faults;
use support::mosquitto::{Mosquitto, Observer};
use support::registry::Registry;

// ---- torn and corrupt state: one damaged file per emulated power cut ----------------------------------------

/// How a file is damaged.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Damage {
    /// Cut at a random length shorter than the file.
    Truncate,
    /// One random bit flipped, written back in place.
    Flip,
}

/// One file kind of the state dir.
struct Kind {
    name: &'static str,
    /// The file, relative to the state dir.
    path: PathBuf,
    /// Whether the damage is always detected and reported: a file whose every byte is checked (checksum,
    /// digest, CRC, a parser that sees the cut). A flip inside a JSON string of an unsealed record may leave
    /// a valid file saying something else; the agent must still converge then, and reports what it notices.
    reported: fn(Damage) -> bool,
}

fn always(_: Damage) -> bool {
    true
}
fn truncation_only(d: Damage) -> bool {
    d == Damage::Truncate
}
fn never(_: Damage) -> bool {
    false
}

fn damage(path: &Path, how: Damage, rng: &mut rand::rngs::StdRng) -> String {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let meta = std::fs::metadata(path).unwrap();
    match how {
        Damage::Truncate => {
            let len = rng.random_range(0..bytes.len());
            bytes.truncate(len);
            std::fs::write(path, &bytes).unwrap();
            format!("truncated to {len} of {} bytes", meta.len())
        }
        Damage::Flip => {
            let at = rng.random_range(0..bytes.len());
            let bit = rng.random_range(0..8);
            bytes[at] ^= 1 << bit;
            std::fs::write(path, &bytes).unwrap();
            format!("bit {bit} of byte {at} of {} flipped", meta.len())
        }
    }
}

/// The seq and body of every `events`/`telemetry` message an observer saw, per stream.
fn seqs(obs: &Observer, device: &str) -> BTreeMap<(String, u64), Value> {
    let mut out = BTreeMap::new();
    for stream in ["events", "telemetry"] {
        for v in obs.json(&format!("jetship/v1/{device}/{stream}")) {
            if let Some(seq) = v["seq"].as_u64() {
                out.insert((stream.to_owned(), seq), v);
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap_or_else(|e| panic!("removing {}: {e}", to.display()));
    }
    let out = std::process::Command::new("cp").arg("-a").arg(from).arg(to).output().unwrap();
    assert!(out.status.success(), "cp -a: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn torn_or_corrupt_state_files_are_repaired_reported_and_never_reuse_a_seq() {
    let seed: u64 = std::env::var("JETSHIP_TORN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("torn-state table seed {seed} (JETSHIP_TORN_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut broker, registry) = (Mosquitto::start(), Registry::start());
    let digest = push(&registry, "v1", "torn");
    let device = Device::native(&broker, &registry.addr);
    let state = device.state();
    let image = format!("{}/hello:v1", registry.addr);

    // The state every case starts from: a deployment running, telemetry and events delivered, then a power cut.
    let before = Observer::start(&broker, &[&format!("jetship/v1/{}/+", device.id)], false, &[]);
    let mut agent = Agent::start(&device.config);
    let doc = device.write_doc("v1.toml", &deployment("app", &image, "one", "running_for = \"1s\""));
    let out = deploy(&broker, &device, &doc);
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    let id = device.containers(true).remove(0);
    std::thread::sleep(Duration::from_secs(3));
    // A download cut short by the power cut, kept for resuming.
    {
        let store = jetship::image::store::ImageStore::open(&state).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let d = support::registry::sha256(&data);
        let mut ing = store.ingest(&d, data.len() as u64, "registry.local/other").unwrap().unwrap();
        ing.write(&data[..120_000]).unwrap();
        ing.flush().unwrap();
    }
    agent.kill();
    faults::power_cut(&state, &device.run, &device.host_root());
    let delivered = seqs(&before, &device.id);
    drop(before);
    assert!(delivered.len() > 3, "too little was delivered before the power cut: {delivered:?}");
    let golden = device.dir.path().join("golden");
    copy_dir(&state, &golden);

    let store = jetship::image::store::ImageStore::open(&golden).unwrap();
    let record = store.records().unwrap().remove(0);
    let blob = |d: &str| PathBuf::from("images/blobs/sha256").join(d.trim_start_matches("sha256:"));
    let ingest = std::fs::read_dir(golden.join("images/ingest")).unwrap().flatten().next().unwrap().path();
    let partial = PathBuf::from("images/ingest").join(ingest.with_extension("partial").file_name().unwrap());
    let description = partial.with_extension("json");
    let snapshot = std::fs::read_dir(golden.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("fs/bin/busybox").exists())
        .expect("a snapshot with busybox");
    let snap = PathBuf::from("snapshots").join(snapshot.file_name().unwrap());
    let segment = std::fs::read_dir(golden.join("spool"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .max()
        .unwrap();
    let refs = std::fs::read_dir(golden.join("images/refs")).unwrap().flatten().next().unwrap().file_name();
    let kinds = vec![
        Kind { name: "desired document", path: "desired/device.json".into(), reported: always },
        Kind { name: "desired document's copy", path: "desired/device.json.bak".into(), reported: always },
        Kind { name: "deployment state", path: "deployments/app.json".into(), reported: always },
        Kind { name: "image record", path: PathBuf::from("images/refs").join(refs), reported: always },
        Kind { name: "manifest blob", path: blob(&record.manifest_digest), reported: always },
        Kind { name: "config blob", path: blob(&record.config_digest), reported: always },
        Kind { name: "layer blob", path: blob(&record.layers[0].digest), reported: always },
        Kind { name: "partial download", path: partial, reported: never },
        Kind { name: "partial's description", path: description, reported: truncation_only },
        Kind { name: "snapshot completion record", path: snap.join("meta.json"), reported: truncation_only },
        Kind { name: "file in a snapshot", path: snap.join("fs/bin/busybox"), reported: always },
        Kind { name: "bundle config", path: PathBuf::from("bundles").join(&id).join("config.json"), reported: always },
        Kind {
            name: "container record",
            path: PathBuf::from("containers").join(&id).join("meta.json"),
            reported: always,
        },
        Kind { name: "spool segment", path: PathBuf::from("spool").join(&segment), reported: never },
        Kind { name: "spool cursor", path: "spool/cursor.json".into(), reported: always },
        Kind { name: "spool seq reservation", path: "spool/reserve.json".into(), reported: always },
    ];
    broker.stop();

    let mut held = 0;
    let mut lines = Vec::new();
    for kind in &kinds {
        for how in [Damage::Truncate, Damage::Flip] {
            let case = format!("{} {how:?}", kind.name);
            // The previous case's containers and mounts go first, as in a power cut.
            faults::power_cut(&state, &device.run, &device.host_root());
            copy_dir(&golden, &state);
            eprintln!("torn case {case}: {}", kind.path.display());
            let what = damage(&state.join(&kind.path), how, &mut rng);
            let started = Instant::now();
            let agent = Agent::start(&device.config);
            // Without a broker, the last document runs again.
            let deadline = Instant::now() + Duration::from_secs(60);
            while device.containers(true).len() != 1 || faults::monitors(&state).len() != 1 {
                assert!(Instant::now() < deadline, "{case} ({what}): not running without a broker:\n{}", agent.log());
                std::thread::sleep(Duration::from_millis(200));
            }
            let running = started.elapsed();
            broker.restart();
            let after = Observer::start(&broker, &[&format!("jetship/v1/{}/+", device.id)], false, &[]);
            let deadline = Instant::now() + Duration::from_secs(30);
            let subject = kind.path.to_string_lossy().into_owned();
            let rep = loop {
                let rep = reported_soon(&broker, &device.id);
                let converged = rep["applied_generation"] == 1
                    && rep["deployments"]["app"]["state"] == "running"
                    && rep["deployments"]["app"]["digest"] == digest.as_str();
                let listed = rep["repairs"].as_array().is_some_and(|rs| {
                    rs.iter().any(|r| {
                        r["subject"].as_str().is_some_and(|s| s == subject || subject.starts_with(s) || s.contains(&id))
                    })
                });
                if converged && (listed || !(kind.reported)(how)) {
                    break rep;
                }
                assert!(
                    Instant::now() < deadline,
                    "{case} ({what}): not converged or not reported: {rep}\n{}",
                    agent.log()
                );
                std::thread::sleep(Duration::from_millis(300));
            };
            // Every seq the broker sees again is the same message it saw before the power cut.
            std::thread::sleep(Duration::from_secs(2));
            for ((stream, seq), v) in seqs(&after, &device.id) {
                if let Some(old) = delivered.get(&(stream.clone(), seq)) {
                    assert_eq!(&v, old, "{case} ({what}): {stream} seq {seq} reused for another message");
                }
            }
            let all = device.containers(false);
            assert_eq!(all.len(), 1, "{case}: {all:?}");
            assert_eq!(faults::monitors(&state), all, "{case}: not supervised");
            let problems = faults::store_problems(&state);
            assert!(problems.is_empty(), "{case} ({what}): {problems:?}\n{}", agent.log());
            let repairs: Vec<String> = rep["repairs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    format!(
                        "{}: {} -> {}",
                        r["subject"].as_str().unwrap_or(""),
                        r["problem"].as_str().unwrap_or(""),
                        r["action"].as_str().unwrap_or("")
                    )
                })
                .collect();
            held += 1;
            lines.push(format!("{case:<40} {what:<40} running after {:>4.1}s; {repairs:?}", running.as_secs_f64()));
            drop(after);
            drop(agent);
            broker.stop();
        }
    }
    for l in &lines {
        println!("torn {l}");
    }
    println!("torn-state table: {held} of {} cases held", kinds.len() * 2);
}

// ---- full disk: the state dir on a small loop-mounted ext4 ----------------------------------------------------

/// `base` with one more gzip layer holding `data` at `/data/<name>`.
fn with_data_layer(base: &support::registry::Image, name: &str, data: &[u8]) -> support::registry::Image {
    use std::io::Write;
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    tar.append_data(&mut h, format!("data/{name}"), data).unwrap();
    let raw = tar.into_inner().unwrap();
    let diff_id = support::registry::sha256(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let layer = support::registry::Blob::new("application/vnd.docker.image.rootfs.diff.tar.gzip", gz.finish().unwrap());
    let mut config: Value = serde_json::from_slice(&base.config.data).unwrap();
    config["rootfs"]["diff_ids"].as_array_mut().unwrap().push(diff_id.into());
    let config = support::registry::Blob::new(&base.config.media_type, serde_json::to_vec(&config).unwrap());
    let mut layers = base.layers.clone();
    layers.push(layer);
    support::registry::manifest_for(config, layers, false)
}

/// The deployment's entry of `reported`, as text (state and reason).
fn entry(broker: &Mosquitto, device: &Device, name: &str) -> String {
    reported_soon(broker, &device.id)["deployments"][name].to_string()
}

/// Waits up to `limit` for the deployment's `reported` entry to satisfy `ok`; on timeout shows it and the
/// agent's failed steps.
fn wait_entry(
    broker: &Mosquitto,
    device: &Device,
    agent: &Agent,
    what: &str,
    limit: Duration,
    ok: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        let e = entry(broker, device, "app");
        if ok(&e) {
            return;
        }
        if Instant::now() > deadline {
            let log = agent.log();
            let steps: Vec<&str> = log.lines().filter(|l| l.contains("step failed") || l.contains("ERROR")).collect();
            panic!("timed out waiting for {what}: {e}\n{}", steps.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A ballast file on `fs` that leaves about `keep` bytes free.
fn ballast(fs: &faults::LoopFs, keep: u64) -> PathBuf {
    let path = fs.mount.join("ballast");
    let size = fs.free_bytes().saturating_sub(keep);
    let f = std::fs::File::create(&path).unwrap();
    nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, size as i64).unwrap();
    f.sync_all().unwrap();
    path
}

#[test]
fn a_full_state_disk_keeps_the_container_running_reports_it_and_everything_resumes_once_space_is_freed() {
    let mut broker = Mosquitto::start();
    let registry = Registry::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let proxy = rt.block_on(support::registry::Proxy::start(&registry.addr));
    let pusher = support::registry::Pusher::new(&registry.addr);
    let base = support::backend_contract::busybox_image("disk-full");
    // v2 adds 6 MiB that do not compress; v3 adds 32 MiB that compress to a few hundred KiB.
    let mut noise = vec![0u8; 6 << 20];
    rand::rngs::StdRng::seed_from_u64(16).fill(&mut noise[..]);
    let v2 = with_data_layer(&base, "noise.bin", &noise);
    let pattern: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    let v3 = with_data_layer(&base, "pattern.bin", &pattern);
    for (tag, img) in [("v1", &base), ("v2", &v2), ("v3", &v3)] {
        rt.block_on(pusher.image("hello", Some(tag), img));
    }

    let fs = faults::LoopFs::new(64);
    let device = Device::native(&broker, &proxy.addr);
    let state = fs.mount.join("state");
    device.set_state_dir(&state);
    device.add_registry_config("disk_reserve_bytes = 1048576\nretry_backoff_cap_s = 1.0");
    let agent = Agent::start(&device.config);
    let image = |tag: &str| format!("{}/hello:{tag}", proxy.addr);
    let doc = |tag: &str| deployment("app", &image(tag), tag, "running_for = \"1s\"");
    let out = deploy(&broker, &device, &device.write_doc("v1.toml", &doc("v1")));
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    let v1 = device.containers(true);
    assert_eq!(v1.len(), 1, "{v1:?}");

    // 1. Disk full: a new document cannot be stored. It is refused with the reason, the container keeps running.
    let fill = fs.fill();
    let v2_doc = device.write_doc("v2.toml", &doc("v2"));
    let out = support::jetship(&["deploy", &device.id, "-f", v2_doc.to_str().unwrap(), "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reported_soon(&broker, &device.id)["rejected"].to_string().contains("cannot store the document") {
        let rep = reported_soon(&broker, &device.id);
        assert!(Instant::now() < deadline, "no refusal to store the document: {rep}\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let refused = reported_soon(&broker, &device.id)["rejected"].to_string();
    assert!(refused.contains("No space left"), "{refused}");
    assert_eq!(device.containers(true), v1, "the running container keeps running on a full disk");

    // 2. Space freed: the refused document is applied by itself. The download of v2 is slowed (1 MiB/s) and the
    // disk fills again mid-download: the pull fails naming the disk, the old container keeps running.
    proxy.faults().throttle_bps = Some(512 << 10);
    std::fs::remove_file(&fill).unwrap();
    let layer = v2.layers[1].digest.clone();
    let streamed = || proxy.state.streamed.load(std::sync::atomic::Ordering::SeqCst);
    let before = streamed();
    // Past 2.5 MiB at least 2 MiB are on disk (the partial is written through a 1 MiB buffer).
    wait_until("the v2 download to begin", Duration::from_secs(30), || streamed() > before + (5 << 19));
    let fill = fs.fill();
    assert!(streamed() < before + (5 << 20), "the disk filled mid-download");
    let deadline = Instant::now() + Duration::from_secs(60);
    // (The log is coloured: match words, not `key=value`.)
    while !agent.log().lines().any(|l| l.contains("step failed") && l.contains("No space left on device")) {
        assert!(Instant::now() < deadline, "no ENOSPC failure of the download:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    // Retried while the disk is still full, the pull is refused before its first byte, with the numbers.
    wait_entry(&broker, &device, &agent, "the preflight refusal", Duration::from_secs(30), |e| {
        e.contains("\"failed\"") && e.contains("not enough disk space in") && e.contains("bytes are free")
    });
    assert_eq!(device.containers(true), v1, "the old container keeps running while the pull fails");
    let failed = entry(&broker, &device, "app");
    std::fs::remove_file(&fill).unwrap();
    proxy.faults().throttle_bps = None;
    wait_until("v2 running once space is freed", Duration::from_secs(90), || {
        reported_soon(&broker, &device.id)["applied_generation"] == 2
    });
    let resumed: Vec<_> = proxy.state.requests(&layer).into_iter().filter_map(|s| s.range).collect();
    assert!(
        !resumed.is_empty(),
        "the download resumed from its partial, not from 0: {:?}\n{}",
        proxy.state.requests(&layer),
        agent.log()
    );
    let v2_running = device.containers(true);
    assert_eq!(v2_running.len(), 1);
    assert_ne!(v2_running, v1);

    // 3. The unpack of v3 (32 MiB) meets a disk with about 12 MiB free: it stops, cleans its temp snapshot and
    // fails naming the disk; v2 keeps running; without the ballast the retry unpacks and starts v3.
    let heavy = ballast(&fs, 12 << 20);
    let out = support::jetship(&[
        "deploy",
        &device.id,
        "-f",
        device.write_doc("v3.toml", &doc("v3")).to_str().unwrap(),
        "--broker",
        &broker.url(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    wait_entry(&broker, &device, &agent, "the unpack to fail on the full disk", Duration::from_secs(60), |e| {
        e.contains("\"failed\"") && (e.contains("space") || e.contains("reserve"))
    });
    let unpack_failed = entry(&broker, &device, "app");
    assert_eq!(device.containers(true), v2_running, "v2 keeps running while v3 cannot be unpacked");
    let leftovers: Vec<_> = std::fs::read_dir(state.join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "a failed unpack leaves no temp snapshot: {leftovers:?}");
    std::fs::remove_file(&heavy).unwrap();
    wait_until("v3 running once space is freed", Duration::from_secs(90), || {
        reported_soon(&broker, &device.id)["applied_generation"] == 3
    });

    // 4. Broker down and the disk full: telemetry cannot be spooled; the agent keeps running and, once space
    // is freed and the broker is back, says how many records it lost.
    broker.stop();
    let fill = fs.fill();
    std::thread::sleep(Duration::from_secs(4));
    std::fs::remove_file(&fill).unwrap();
    broker.restart();
    let topic = format!("jetship/v1/{}/telemetry", device.id);
    let telemetry = Observer::start(&broker, &[&topic], false, &[]);
    wait_until("telemetry with the dropped count", Duration::from_secs(30), || {
        telemetry.json(&topic).iter().any(|t| t["dropped"].as_u64() > Some(0))
    });
    assert_eq!(device.containers(true).len(), 1, "{}", agent.log());
    let problems = faults::store_problems(&state);
    assert!(problems.is_empty(), "{problems:?}");
    println!("disk full: refused {refused}\ndisk full: download {failed}\ndisk full: unpack {unpack_failed}");
    drop(agent);
    drop(device);
}

// ---- registry outage during an update ---------------------------------------------------------------------------

#[test]
fn a_registry_outage_during_an_update_keeps_the_old_version_and_the_update_completes_through_cut_connections() {
    let broker = Mosquitto::start();
    let registry = Registry::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let proxy = rt.block_on(support::registry::Proxy::start(&registry.addr));
    let pusher = support::registry::Pusher::new(&registry.addr);
    let base = support::backend_contract::busybox_image("outage");
    let mut noise = vec![0u8; 12 << 20];
    rand::rngs::StdRng::seed_from_u64(17).fill(&mut noise[..]);
    let v2 = with_data_layer(&base, "noise.bin", &noise);
    rt.block_on(pusher.image("hello", Some("v1"), &base));
    rt.block_on(pusher.image("hello", Some("v2"), &v2));
    let device = Device::native(&broker, &proxy.addr);
    device.add_registry_config("retries = 2\nretry_backoff_cap_s = 1.0");
    let agent = Agent::start(&device.config);
    let doc = |tag: &str| deployment("app", &format!("{}/hello:{tag}", proxy.addr), tag, "running_for = \"1s\"");
    let out = deploy(&broker, &device, &device.write_doc("v1.toml", &doc("v1")));
    assert!(out.status.success(), "{}\n{}", text(&out), agent.log());
    let v1 = device.containers(true);
    assert_eq!(v1.len(), 1);

    // The registry goes down as the update arrives: the update fails and is retried, v1 keeps running.
    proxy.faults().down = true;
    let v2_doc = device.write_doc("v2.toml", &doc("v2"));
    let out = support::jetship(&["deploy", &device.id, "-f", v2_doc.to_str().unwrap(), "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_entry(
        &broker,
        &device,
        &agent,
        "the update to fail while the registry is down",
        Duration::from_secs(60),
        |e| e.contains("\"failed\"") && e.contains("retrying with backoff"),
    );
    let during = entry(&broker, &device, "app");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(device.containers(true), v1, "v1 keeps running while the registry is down");

    // Back, but every connection is cut after 3 MiB: the 12 MiB layer comes in resumed pieces.
    {
        let mut f = proxy.faults();
        f.cut_after = Some(3 << 20);
        f.cut_times = u32::MAX;
        f.down = false;
    }
    // Down again mid-download, long enough for the pull to give up its attempts: v1 still runs.
    let streamed = || proxy.state.streamed.load(std::sync::atomic::Ordering::SeqCst);
    let before = streamed();
    wait_until("the v2 download to begin", Duration::from_secs(60), || streamed() > before + (4 << 20));
    proxy.faults().down = true;
    wait_entry(&broker, &device, &agent, "the pull to fail mid-download", Duration::from_secs(60), |e| {
        e.contains("\"failed\"") && e.contains("pulling the image failed")
    });
    assert_eq!(device.containers(true), v1, "v1 keeps running while the download is interrupted");
    proxy.faults().down = false;
    wait_entry(&broker, &device, &agent, "the update to complete", Duration::from_secs(120), |_| {
        reported_soon(&broker, &device.id)["applied_generation"] == 2
    });
    let layer = &v2.layers[1].digest;
    let requests = proxy.state.requests(layer);
    let ranged = requests.iter().filter(|s| s.range.is_some()).count();
    assert!(requests.len() >= 4 && ranged >= 3, "the layer came in resumed pieces: {requests:?}");
    let served: u64 = requests.iter().map(|s| s.served).sum();
    let size = v2.layers[1].data.len() as u64;
    assert!(served <= size + (1 << 20), "what was received is kept: {served} bytes served for {size}");
    let now = device.containers(false);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, v1, "v2 replaced v1");
    let problems = faults::store_problems(&device.state());
    assert!(problems.is_empty(), "{problems:?}");
    println!(
        "registry outage: while down {during}\nregistry outage: layer in {} requests ({ranged} resumed), {served} bytes",
        requests.len()
    );
    drop(agent);
}

// ---- clock skew ------------------------------------------------------------------------------------------------

#[test]
fn a_device_whose_clock_is_an_hour_behind_is_shown_online_and_seen_just_now_with_its_skew() {
    support::require_tool("faketime", "faketime");
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let id = format!("skew-{}", support::agent::rand_suffix());
    let config = support::agent::agent_config(dir.path(), &id, &format!("url = \"{}\"", broker.url()), "");
    // libfaketime shifts the agent's wall clock (and its monotonic clock, by the same offset) an hour back.
    let lib = std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime.so.1 under /usr/lib/<arch>/faketime: apt-get install faketime");
    let agent = Agent::start_with(&config, &[("LD_PRELOAD", lib.to_str().unwrap()), ("FAKETIME", "-1h")]);
    let row = |text: &str| -> Value {
        let rows: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        rows.as_array().into_iter().flatten().find(|r| r["device"] == id.as_str()).cloned().unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let out = support::jetship(&["devices", "--json", "--broker", &broker.url()]);
        let r = row(&String::from_utf8_lossy(&out.stdout));
        if r["online"] == true && r["last_seen_ms"].is_u64() {
            break r;
        }
        assert!(Instant::now() < deadline, "the device never showed: {}\n{}", text(&out), agent.log());
        std::thread::sleep(Duration::from_millis(500));
    };
    // Its samples say an hour ago; the controller measured the skew and shows when it really heard from it.
    let skew = seen["clock_skew_ms"].as_i64().unwrap_or_else(|| panic!("no skew measured: {seen}"));
    assert!((skew + 3_600_000).abs() < 10_000, "skew {skew} ms is not about -1h: {seen}");
    let now_ms = chrono::Utc::now().timestamp_millis() as u64;
    let age = now_ms.saturating_sub(seen["last_seen_ms"].as_u64().unwrap());
    assert!(age < 15_000, "last seen {age} ms ago for a device that is online: {seen}");
    let table = text(&support::jetship(&["devices", "--broker", &broker.url()]));
    let line = table.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("(clock -60m)") || line.contains("(clock -59m)"), "{line}");
    assert!(!line.contains("60m ago") && !line.contains("59m ago"), "a stale age shown: {line}");
    println!("clock skew: {line}");
    drop(agent);
}

// ---- restart state across an agent restart ----------------------------------------------------------------------

#[test]
fn restart_counts_and_the_last_exit_survive_a_killed_agent() {
    let broker = Mosquitto::start();
    let registry = Registry::start();
    push(&registry, "v1", "restarts");
    let device = Device::native(&broker, &registry.addr);
    let mut agent = Agent::start(&device.config);
    let doc = format!(
        "[deployments.app]\nimage = \"{}/hello:v1\"\ncommand = [\"sh\", \"-c\"]\nargs = [\"echo up; sleep 1; exit 3\"]\n\
         restart = \"always\"\n",
        registry.addr
    );
    let file = device.write_doc("crashy.toml", &doc);
    let out = support::jetship(&["deploy", &device.id, "-f", file.to_str().unwrap(), "--broker", &broker.url()]);
    assert!(out.status.success(), "{}", text(&out));
    let app = |rep: &Value| rep["deployments"]["app"].clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    let before = loop {
        let a = app(&reported_soon(&broker, &device.id));
        if a["restarts"].as_u64() >= Some(2) && a["exit_code"] == 3 {
            break a["restarts"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "no restarts counted: {a}\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(300));
    };

    // SIGKILL, then a new agent on the same state dir: what it reports goes on from the count, not from 0.
    agent.kill();
    let restarted = chrono::Utc::now();
    let agent = Agent::start(&device.config);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (first, rep) = loop {
        let rep = reported_soon(&broker, &device.id);
        let at = rep["at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if at.is_some_and(|t| t > restarted) && app(&rep)["restarts"].is_u64() {
            break (app(&rep)["restarts"].as_u64().unwrap(), rep);
        }
        assert!(Instant::now() < deadline, "the new agent reported nothing: {rep}\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(first >= before, "restarts went from {before} back to {first} after the agent restart: {rep}");
    assert_eq!(app(&rep)["exit_code"], 3, "the last exit code is kept: {rep}");
    wait_until("the count to go on", Duration::from_secs(60), || {
        app(&reported_soon(&broker, &device.id))["restarts"].as_u64() > Some(first)
    });
    println!("restart state: {before} restarts before the kill, {first} reported first by the new agent");
}
