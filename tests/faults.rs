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
        Kind {
            name: "bundle config",
            path: PathBuf::from("bundles").join(&id).join("config.json"),
            reported: truncation_only,
        },
        Kind {
            name: "container record",
            path: PathBuf::from("containers").join(&id).join("meta.json"),
            reported: truncation_only,
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
