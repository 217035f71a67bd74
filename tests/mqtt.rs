//! The MQTT link and fleet protocol against a real Mosquitto, with `mosquitto_sub` as an independent observer
//! and the real `jetship agent` binary.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::agent::{agent_config, check_order, max_seq, seqs, Agent};
use support::mosquitto::{publish, Mosquitto, Observer, Tls};

/// Broker outage demanded by the acceptance criteria.
const OUTAGE: Duration = Duration::from_secs(60);

#[test]
fn agent_announces_itself_and_goes_offline_through_the_will_on_sigkill() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let obs = Observer::start(&broker, &["jetship/v1/presence-1/#"], false, &[]);
    let cfg = agent_config(dir.path(), "presence-1", &format!("url = \"{}\"", broker.url()), "");
    let mut agent = Agent::start(&cfg);

    obs.wait_for("online status, host facts and telemetry", Duration::from_secs(10), |l| {
        l.iter().any(|(t, p)| t.ends_with("/status") && p.contains("\"online\":true"))
            && l.iter().any(|(t, _)| t.ends_with("/host"))
            && l.iter().any(|(t, _)| t.ends_with("/telemetry"))
    });
    let status = obs.json("jetship/v1/presence-1/status").pop().unwrap();
    assert_eq!(status["agent_version"], jetship::VERSION);
    assert_eq!(status["boot_id"], "0f6c3a2e-8d1b-4a53-9d0e-5b1c2f3a4d5e");
    let host = obs.json("jetship/v1/presence-1/host").pop().unwrap();
    assert_eq!(host["model"], "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super");
    assert_eq!(host["jetpack"], "6.2");
    let events = obs.json("jetship/v1/presence-1/events");
    assert_eq!(events[0]["kind"], "agent_started");
    assert_eq!(events[0]["seq"], 1);

    // SIGKILL: no goodbye from the agent, the broker publishes the will after the keep-alive runs out.
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    obs.wait_for("offline status from the will", Duration::from_secs(15), |l| {
        l.iter().any(|(t, p)| t.ends_with("/status") && p.contains("\"online\":false"))
    });
    // A new subscriber sees the retained offline status.
    let late = Observer::start(&broker, &["jetship/v1/presence-1/status"], false, &[]);
    late.wait_for("retained offline status", Duration::from_secs(5), |l| {
        l.last().is_some_and(|(_, p)| p.contains("\"online\":false"))
    });
}

#[test]
fn a_handshake_slower_than_the_telemetry_tick_completes_and_leaves_no_offline_will() {
    // A broker slow to answer CONNECT (here: SIGSTOPped for 3 s, less than rumqttc's 5 s connection timeout)
    // must not make the agent drop the handshake when its next telemetry record is ready: a dropped handshake
    // leaves the broker a will to publish (retained `online:false`) for an agent that is connecting.
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = agent_config(dir.path(), "stall-1", &format!("url = \"{}\"", broker.url()), "");
    // Subscribed before the stall, the observer gets every status the broker publishes after it, in order.
    let obs = Observer::start(&broker, &["jetship/v1/stall-1/status"], false, &[]);
    broker.pause();
    let mut agent = Agent::start(&cfg);
    std::thread::sleep(Duration::from_secs(3));
    broker.resume();
    obs.wait_for("online status", Duration::from_secs(15), |l| l.iter().any(|(_, p)| p.contains("\"online\":true")));
    // Wills of abandoned handshakes would have come before the online status; give stragglers a moment.
    std::thread::sleep(Duration::from_millis(500));
    let offline: Vec<_> = obs.lines().into_iter().filter(|(_, p)| p.contains("\"online\":false")).collect();
    assert!(offline.is_empty(), "wills of abandoned handshakes: {offline:?}\n{}", agent.log());
    assert!(agent.running());
}

#[test]
fn clean_shutdown_publishes_offline_status_at_once() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let obs = Observer::start(&broker, &["jetship/v1/clean-1/status"], false, &[]);
    // A long keep-alive: only the agent's own goodbye can make it offline within the wait below.
    let cfg =
        agent_config(dir.path(), "clean-1", &format!("url = \"{}\"", broker.url()), "").to_string_lossy().into_owned();
    let text = std::fs::read_to_string(&cfg).unwrap().replace("keep_alive_s = 5", "keep_alive_s = 600");
    std::fs::write(&cfg, text).unwrap();
    let mut agent = Agent::start(Path::new(&cfg));
    obs.wait_for("online", Duration::from_secs(10), |l| l.iter().any(|(_, p)| p.contains("\"online\":true")));
    let started = Instant::now();
    let status = agent.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    obs.wait_for("offline", Duration::from_secs(3), |l| l.last().is_some_and(|(_, p)| p.contains("\"online\":false")));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn telemetry_survives_a_60s_broker_outage_in_order_without_gaps() {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topic = "jetship/v1/outage-1/telemetry";
    let obs = Observer::start(&broker, &[topic], true, &[]);
    let cfg = agent_config(dir.path(), "outage-1", &format!("url = \"{}\"", broker.url()), "");
    let mut agent = Agent::start(&cfg);
    obs.wait_for("telemetry before the outage", Duration::from_secs(10), |l| max_seq(l, topic) >= 3);

    broker.stop();
    let before = max_seq(&obs.lines(), topic);
    std::thread::sleep(OUTAGE);
    assert!(agent.running(), "agent exited during the outage: {}", agent.log());
    broker.restart();

    // 60 samples were taken during the outage; all must arrive.
    obs.wait_for("the spooled telemetry", Duration::from_secs(30), |l| max_seq(l, topic) >= before + 62);
    let (order, missing) = check_order(&seqs(&obs, topic));
    assert_eq!(order[0], 1);
    assert_eq!(missing, 0, "gaps in {order:?}");
    assert!(agent.running());
}

#[test]
fn agent_killed_during_outage_delivers_its_spool_after_restart() {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topic = "jetship/v1/crash-1/telemetry";
    let obs = Observer::start(&broker, &[topic], true, &[]);
    let cfg = agent_config(
        dir.path(),
        "crash-1",
        &format!("url = \"{}\"", broker.url()),
        "[spool]\nfsync_interval_ms = 1000\n",
    );
    let mut agent = Agent::start(&cfg);
    obs.wait_for("telemetry before the outage", Duration::from_secs(10), |l| max_seq(l, topic) >= 2);

    broker.stop();
    let before = max_seq(&obs.lines(), topic);
    std::thread::sleep(Duration::from_secs(6));
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    let mut agent = Agent::start(&cfg);
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();

    // About 6 samples from the killed agent and 3 from the new one, then live ones.
    obs.wait_for("the spooled telemetry of both agent runs", Duration::from_secs(30), |l| {
        max_seq(l, topic) >= before + 11
    });
    let (order, missing) = check_order(&seqs(&obs, topic));
    assert_eq!(order[0], 1);
    // At most the last fsync interval (1 s = 1 sample, plus the one being written) may be lost, and only as a
    // visible gap in seq.
    assert!(missing <= 2, "{missing} samples lost: {order:?}");
    assert!(agent.running(), "{}", agent.log());
}

#[test]
fn tiny_spool_drops_the_oldest_and_reports_the_count() {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let topic = "jetship/v1/bound-1/telemetry";
    let obs = Observer::start(&broker, &[topic], true, &[]);
    broker.stop();
    let cfg =
        agent_config(dir.path(), "bound-1", &format!("url = \"{}\"", broker.url()), "[spool]\nmax_bytes = 1024\n");
    let mut agent = Agent::start(&cfg);
    std::thread::sleep(Duration::from_secs(12));
    broker.restart();

    obs.wait_for("a telemetry message reporting drops", Duration::from_secs(20), |l| {
        l.iter().any(|(t, p)| t == topic && p.contains("\"dropped\":"))
    });
    let msgs = obs.json(topic);
    // Count each seq once: a resend (or the retained copy on resubscribe) repeats the same message.
    let mut by_seq = std::collections::BTreeMap::new();
    for v in &msgs {
        by_seq.insert(v["seq"].as_u64(), v["dropped"].as_u64().unwrap_or(0));
    }
    let reported: u64 = by_seq.values().sum();
    let (order, missing) = check_order(&msgs.iter().filter_map(|v| v["seq"].as_u64()).collect::<Vec<_>>());
    assert!(order[0] > 1, "the oldest samples should have been dropped: {order:?}");
    assert!(missing > 0);
    // The count covers the missing telemetry (and the agent_started event, which shares the spool).
    assert!(reported >= missing && reported <= missing + 1, "reported {reported}, missing {missing}: {order:?}");
    assert!(agent.running());

    // Reported once: neither later messages nor a restarted agent report the same drops again. A record the
    // first agent dropped after its report (the bound is 1 KiB) is reported by the next one, rightly: over the
    // whole run, what is reported must still match what is missing, where a repeat would count twice.
    let last = *order.last().unwrap();
    assert_eq!(agent.signal(nix::sys::signal::Signal::SIGTERM).and_then(|s| s.code()), Some(0));
    // Restarted with room in its spool, so it drops nothing itself.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("max_bytes = 1024", "max_bytes = 1048576")).unwrap();
    let _agent = Agent::start(&cfg);
    obs.wait_for("telemetry from the restarted agent", Duration::from_secs(10), |l| max_seq(l, topic) >= last + 3);
    let msgs = obs.json(topic);
    let mut by_seq = std::collections::BTreeMap::new();
    for v in &msgs {
        by_seq.insert(v["seq"].as_u64(), v["dropped"].as_u64().unwrap_or(0));
    }
    let total: u64 = by_seq.values().sum();
    let (order, missing) = check_order(&msgs.iter().filter_map(|v| v["seq"].as_u64()).collect::<Vec<_>>());
    // + 2: each agent's events share the spool (agent_started, agent_stopping), and are counted but not seen here.
    assert!(
        total >= missing && total <= missing + 2,
        "drops reported twice: {total} reported, {missing} missing: {order:?}"
    );
    assert!(reported > 2, "{reported} drops are too few for a repeat to show beyond the margin");
}

#[test]
fn bad_desired_and_commands_get_errors_and_change_nothing() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let base = "jetship/v1/input-1";
    let obs = Observer::start(&broker, &[&format!("{base}/reply/#"), &format!("{base}/reported")], false, &[]);
    let cfg = agent_config(dir.path(), "input-1", &format!("url = \"{}\"", broker.url()), "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("groups = [\"lab\"]\n{text}")).unwrap();
    let mut agent = Agent::start(&cfg);
    obs.wait_for("first report", Duration::from_secs(10), |l| !l.is_empty());

    // A good document first: it is stored and reported.
    publish(&broker, &format!("{base}/desired"), br#"{"generation":5,"deployments":{}}"#, true);
    obs.wait_for("acceptance", Duration::from_secs(5), |l| {
        l.iter().any(|(t, p)| t.ends_with("/reported") && p.contains("\"generation\":5"))
    });
    let stored = dir.path().join("state-input-1/desired/device.json");
    let good = std::fs::read(&stored).unwrap();

    let big = format!("{{\"generation\":6,\"pad\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let bad_desired: Vec<(&[u8], &str)> = vec![
        (b"{not json", "JSON"),
        (big.as_bytes(), "limit"),
        (br#"{"generation":"7"}"#, "generation"),
        (br#"{"generation":8,"deployments":"all"}"#, "deployments"),
        (b"[]", "(top level)"),
    ];
    for (payload, want) in &bad_desired {
        publish(&broker, &format!("{base}/desired"), payload, false);
        obs.wait_for(want, Duration::from_secs(5), |l| {
            l.last().is_some_and(|(t, p)| {
                t.ends_with("/reported")
                    && serde_json::from_str::<Value>(p).is_ok_and(|v| {
                        v["rejected"]["reasons"]
                            .as_array()
                            .is_some_and(|r| r.iter().any(|x| x.as_str().unwrap_or("").contains(want)))
                    })
            })
        });
        assert_eq!(std::fs::read(&stored).unwrap(), good, "a rejected document replaced the stored one");
    }
    let last: Value = obs.json(&format!("{base}/reported")).pop().unwrap();
    assert_eq!(last["generation"], 5, "{last}");

    let cmds: Vec<(String, Vec<u8>, &str, &str)> = vec![
        (format!("{base}/cmd/r1"), b"ping".to_vec(), "r1", "not UTF-8 JSON"),
        (format!("{base}/cmd/r2"), br#"{"cmd":"format-disk"}"#.to_vec(), "r2", "unknown command `format-disk`"),
        (format!("{base}/cmd/r3"), br#"{"cmd":42}"#.to_vec(), "r3", "`cmd`"),
        (
            format!("{base}/cmd/r4"),
            format!("{{\"cmd\":\"ping\",\"x\":\"{}\"}}", "y".repeat(1024 * 1024)).into_bytes(),
            "r4",
            "over the",
        ),
        (format!("{base}/cmd/a.b"), br#"{"cmd":"ping"}"#.to_vec(), "_invalid", "invalid request id `a.b`"),
        (format!("{base}/cmd/x/y"), br#"{"cmd":"ping"}"#.to_vec(), "_invalid", "invalid request id `x/y`"),
        (format!("{base}/cmd/{}", "z".repeat(65)), br#"{"cmd":"ping"}"#.to_vec(), "_invalid", "invalid request id"),
    ];
    for (topic, payload, reply_id, want) in &cmds {
        publish(&broker, topic, payload, false);
        let reply_topic = format!("{base}/reply/{reply_id}");
        obs.wait_for(want, Duration::from_secs(5), |l| {
            l.iter().any(|(t, p)| *t == reply_topic && p.contains("\"ok\":false") && p.contains(want))
        });
    }
    assert!(agent.running(), "agent exited on bad input: {}", agent.log());

    // Still answering, and the accepted document is untouched.
    publish(&broker, &format!("{base}/cmd/after"), br#"{"cmd":"ping"}"#, false);
    obs.wait_for("ping reply", Duration::from_secs(5), |l| {
        l.iter().any(|(t, p)| t.ends_with("/reply/after") && p.contains("\"ok\":true"))
    });
    assert_eq!(std::fs::read(&stored).unwrap(), good);

    // Group documents: the agent follows its own groups only, and validates them the same way.
    publish(&broker, "jetship/v1/groups/other/desired", br#"{"generation":1}"#, true);
    publish(&broker, "jetship/v1/groups/lab/desired", br#"{"generation":"x"}"#, true);
    obs.wait_for("group rejection", Duration::from_secs(5), |l| {
        l.iter().any(|(_, p)| p.contains("\"source\":\"group:lab\""))
    });
    publish(&broker, "jetship/v1/groups/lab/desired", br#"{"generation":2}"#, true);
    obs.wait_for("group acceptance", Duration::from_secs(5), |l| l.iter().any(|(_, p)| p.contains("\"group:lab\":2")));
    let state = dir.path().join("state-input-1/desired");
    assert!(state.join("group-lab.json").is_file());
    assert!(!state.join("group-other.json").exists());
    let last: Value = obs.json(&format!("{base}/reported")).pop().unwrap();
    assert!(last["sources"].get("group:other").is_none(), "{last}");
    assert_eq!(last["generation"], 5, "a group document must not change the device generation: {last}");
}

fn devices_json(url: &str) -> Vec<Value> {
    let out = support::jetship(&["devices", "--json", "--broker", url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn devices_shows_a_new_agent_within_one_interval_and_offline_after_sigkill() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let url = broker.url();
    let cfg = agent_config(dir.path(), "fleet-1", &format!("url = \"{url}\""), "");
    // One telemetry interval of 3 s: the device must be listed, with facts and a sample, within it.
    let text = std::fs::read_to_string(&cfg).unwrap().replace("interval_s = 1", "interval_s = 3");
    std::fs::write(&cfg, text).unwrap();
    let started = Instant::now();
    let mut agent = Agent::start(&cfg);
    let row = loop {
        let rows = devices_json(&url);
        if let Some(r) = rows.into_iter().find(|r| r["device"] == "fleet-1" && !r["last_seen_ms"].is_null()) {
            break r;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "device not listed within one interval: {}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(row["online"], true);
    assert_eq!(row["model"], "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super");
    assert_eq!(row["l4t"], "36.4.3");
    assert_eq!(row["jetpack"], "6.2");
    assert_eq!(row["deployments_total"], 0);

    // The table for people, with broker access from cli.toml.
    let cli = dir.path().join("cli.toml");
    std::fs::write(&cli, format!("[broker]\nurl = \"{url}\"\n")).unwrap();
    let out = support::jetship_env(&["devices"], &[("JETSHIP_CLI_CONFIG", cli.to_str().unwrap())]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.starts_with("DEVICE") && table.contains("fleet-1") && table.contains("36.4.3/6.2"), "{table}");

    let out = support::jetship(&["status", "fleet-1", "--broker", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("online:       yes") && text.contains("Orin Nano") && text.contains("jetpack:      6.2"),
        "{text}"
    );

    let out = support::jetship(&["ping", "fleet-1", "--broker", &url, "-c", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.matches("reply from fleet-1: time=").count(), 2, "{text}");

    agent.signal(nix::sys::signal::Signal::SIGKILL);
    let killed = Instant::now();
    loop {
        let rows = devices_json(&url);
        if rows.iter().any(|r| r["device"] == "fleet-1" && r["online"] == false) {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "still online after SIGKILL: {rows:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = support::jetship(&["ping", "fleet-1", "--broker", &url, "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no reply from fleet-1"));
}

#[test]
fn controller_commands_explain_bad_input() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let out = support::jetship(&["status", "a+b", "--broker", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid device id `a+b`"));
    let out = support::jetship(&["status", "nobody", "--broker", &url, "--timeout", "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("device `nobody` has published nothing"));
    let out = support::jetship(&["devices", "--broker", "http://127.0.0.1:1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("use mqtt:// or mqtts://"));
    let nobody = support::reserve_port();
    let dead = format!("mqtt://127.0.0.1:{}", nobody.port);
    let out = support::jetship_env(&["devices"], &[("JETSHIP_BROKER", &dead)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("cannot reach the broker") && err.contains(&dead), "{err}");
}

#[test]
fn agent_without_url_runs_an_embedded_broker_that_others_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let reserved = support::reserve_port();
    let port = reserved.port;
    let url = format!("mqtt://127.0.0.1:{port}");
    let cfg = agent_config(dir.path(), "solo-1", &format!("embedded_listen = \"127.0.0.1:{port}\""), "");
    let cfg_arg = cfg.to_str().unwrap();
    let mut agent = Agent::start(&cfg);
    let start = Instant::now();
    let row = loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Root's CLI with the agent's config reads the embedded broker's credentials from its state dir.
            let out = support::jetship(&["--config", cfg_arg, "devices", "--json", "--broker", &url]);
            if out.status.success() {
                let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
                if let Some(r) = rows.into_iter().find(|r| r["device"] == "solo-1" && !r["last_seen_ms"].is_null()) {
                    break r;
                }
            }
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not listed on the embedded broker: {}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(row["online"], true);
    assert_eq!(row["jetpack"], "6.2");
    // An independent client with the credentials sees the retained status on the embedded broker.
    let password = std::fs::read_to_string(dir.path().join("state-solo-1/broker-password")).unwrap();
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-u", "jetship", "-P", password.trim()])
        .args(["-t", "jetship/v1/solo-1/status", "-C", "1", "-W", "5"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"online\":true"), "{out:?}");
    let out = support::jetship(&["--config", cfg_arg, "ping", "solo-1", "--broker", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(agent.signal(nix::sys::signal::Signal::SIGTERM).and_then(|s| s.code()), Some(0), "{}", agent.log());
}

#[test]
fn standalone_broker_serves_agents_and_controllers() {
    let dir = tempfile::tempdir().unwrap();
    let reserved = support::reserve_port();
    let port = reserved.port;
    let url = format!("mqtt://127.0.0.1:{port}");
    // Killed on drop, so a failing assertion does not leave the broker running.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _broker = KillOnDrop(
        Command::new(support::jetship_bin())
            .args(["broker", "--listen", &format!("127.0.0.1:{port}"), "--allow-anonymous"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "jetship broker did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A second broker on the same address fails with a message naming the address.
    let out = support::jetship(&["broker", "--listen", &format!("127.0.0.1:{port}"), "--allow-anonymous"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on 127.0.0.1:{port}")));

    let cfg = agent_config(dir.path(), "lab-1", &format!("url = \"{url}\""), "");
    let mut agent = Agent::start(&cfg);
    let start = Instant::now();
    loop {
        let rows = devices_json(&url);
        if rows.iter().any(|r| r["device"] == "lab-1" && r["online"] == true) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    let start = Instant::now();
    while !devices_json(&url).iter().any(|r| r["device"] == "lab-1" && r["online"] == false) {
        assert!(start.elapsed() < Duration::from_secs(40), "will not delivered by the embedded broker");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(support::require_tool("openssl", "openssl")).current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate for `client_cn`, made with the openssl CLI.
fn make_certs(dir: &Path, client_cn: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=jetship-test-ca"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &ca);
    for (name, cn, ext) in [
        ("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", client_cn, "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
        )
        .unwrap();
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let mut req = vec!["req"];
        req.extend(ec);
        let subj = format!("/CN={cn}");
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        let pem = format!("{name}.pem");
        let extfile = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
        // mosquitto drops root for its own user and must still read its key.
        std::fs::set_permissions(dir.join(&key), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[test]
fn tls_with_client_certificates_connects_and_plain_or_anonymous_clients_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    make_certs(&certs, "tls-1");
    let c = |n: &str| certs.join(n).display().to_string();
    let broker = Mosquitto::start_tls(Tls {
        ca: certs.join("ca.pem"),
        cert: certs.join("server.pem"),
        key: certs.join("server.key"),
        require_client_cert: true,
    });
    let url = broker.url();
    assert!(url.starts_with("mqtts://"));
    let mqtt = format!(
        "url = \"{url}\"\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        c("ca.pem"),
        c("client.pem"),
        c("client.key")
    );
    let cfg = agent_config(dir.path(), "tls-1", &mqtt, "");
    let mut agent = Agent::start(&cfg);
    // The same device without a client certificate must be refused by the broker.
    let no_cert = agent_config(dir.path(), "tls-2", &format!("url = \"{url}\"\nca_file = \"{}\"", c("ca.pem")), "");
    let mut refused = Agent::start(&no_cert);

    let tls_args = ["--ca-file", &c("ca.pem"), "--client-cert", &c("client.pem"), "--client-key", &c("client.key")];
    let start = Instant::now();
    let rows = loop {
        let mut args = vec!["devices", "--json", "--broker", &url];
        args.extend(tls_args);
        let out = support::jetship(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        if rows.iter().any(|r| r["device"] == "tls-1" && !r["last_seen_ms"].is_null())
            && start.elapsed() > Duration::from_secs(3)
        {
            break rows;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "agent not seen over TLS: {}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!rows.iter().any(|r| r["device"] == "tls-2"), "a client without certificate got through: {rows:?}");
    assert!(refused.running() && agent.running());
    let log = refused.log();
    assert!(log.contains("mqtt connection lost"), "{log}");

    let mut args = vec!["ping", "tls-1", "--broker", &url];
    args.extend(tls_args);
    let out = support::jetship(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // Plain MQTT to the TLS port fails with a message naming the broker.
    let out = support::jetship(&["devices", "--broker", &url.replace("mqtts://", "mqtt://"), "--timeout", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn username_and_password_file_authenticate_and_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let out = Command::new(support::require_tool("mosquitto_passwd", "mosquitto"))
        .args(["-b", "-c", passwd.to_str().unwrap(), "auth-1", "s3cret"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    let broker = Mosquitto::start_with_conf(&format!("password_file {}", passwd.display()));
    let url = broker.url();
    let good = dir.path().join("good.pw");
    std::fs::write(&good, "s3cret\n").unwrap();
    let bad = dir.path().join("bad.pw");
    std::fs::write(&bad, "guess\n").unwrap();
    // Status messages seen by an authenticated observer within 6 s. Not just the first one: the retained status
    // may still be the will of a handshake the agent gave up on (a broker slow to answer CONNECT under load)
    // until the connection that succeeded publishes `online:true`.
    let obs_out = |id: &str| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-u", "auth-1", "-P", "s3cret"])
            .args(["-t", &format!("jetship/v1/{id}/status"), "-W", "6"])
            .output()
            .unwrap()
    };
    let cfg = agent_config(
        dir.path(),
        "auth-1",
        &format!("url = \"{url}\"\nusername = \"auth-1\"\npassword_file = \"{}\"", good.display()),
        "",
    );
    let _agent = Agent::start(&cfg);
    let out = obs_out("auth-1");
    assert!(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").contains("\"online\":true"), "{out:?}");

    let cfg = agent_config(
        dir.path(),
        "auth-2",
        &format!("url = \"{url}\"\nusername = \"auth-1\"\npassword_file = \"{}\"", bad.display()),
        "",
    );
    let mut refused = Agent::start(&cfg);
    let out = obs_out("auth-2");
    assert!(out.stdout.is_empty(), "wrong password got through: {out:?}");
    assert!(refused.running());
    assert!(refused.log().contains("broker refused the connection"), "{}", refused.log());
}

#[test]
fn host_is_republished_only_when_it_changes_such_as_a_camera_plugged_in() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let base = "jetship/v1/hotplug-1";
    let obs = Observer::start(&broker, &[&format!("{base}/host"), &format!("{base}/events")], false, &[]);
    let cfg = agent_config(dir.path(), "hotplug-1", &format!("url = \"{}\"", broker.url()), "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("interval_s = 1", "interval_s = 1\nhost_interval_s = 1");
    std::fs::write(&cfg, text).unwrap();
    let _agent = Agent::start(&cfg);
    let host_topic = format!("{base}/host");
    obs.wait_for("host facts", Duration::from_secs(10), |l| l.iter().any(|(t, _)| *t == host_topic));
    let cameras_before = obs.json(&host_topic)[0]["cameras"].as_array().map(Vec::len);
    // Three re-probes with nothing changed: no republish.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(obs.json(&host_topic).len(), 1, "host republished without a change");

    let root = dir.path().join("host");
    let n = 7;
    let sys = root.join(format!("sys/class/video4linux/video{n}"));
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::write(sys.join("name"), "USB Camera: HD Webcam\n").unwrap();
    std::fs::write(sys.join("index"), "0\n").unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::write(root.join(format!("dev/video{n}")), "").unwrap();

    obs.wait_for("republished host with the camera", Duration::from_secs(5), |l| {
        l.iter().filter(|(t, _)| *t == host_topic).count() >= 2
    });
    let after = obs.json(&host_topic).pop().unwrap();
    let cameras = after["cameras"].as_array().unwrap();
    assert_eq!(Some(cameras.len()), cameras_before.map(|c| c + 1), "{after}");
    assert!(cameras.iter().any(|c| c["node"] == format!("/dev/video{n}")), "{after}");
    obs.wait_for("host_changed event", Duration::from_secs(5), |l| l.iter().any(|(_, p)| p.contains("host_changed")));
}
