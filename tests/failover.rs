//! Broker failover (`mqtt.urls`, `--broker A,B`) against two real Mosquitto brokers: the agent moves to the next
//! broker when one is killed mid-stream and its spool delivers from where the dead one stopped acknowledging
//! (zero telemetry lost, `seq` continuous, in order); the link does the same with a full window in flight; the
//! controller commands and the exporter use the next broker too. Also the Mosquitto ACL that docs/protocol.md
//! gives, loaded into a real mosquitto: a device reaches its own topics only, and the agent works under it.
//!
//! Observers of a broker that gets SIGKILLed subscribe at QoS 0: a QoS 1 observer sends PUBACKs, and a broker
//! killed with unread PUBACKs in its socket resets that connection, discarding what it had already written to it.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::agent::{agent_config, check_order, max_seq, seqs, Agent};
use support::mosquitto::{publish, Mosquitto, Observer};

/// `[mqtt]` lines naming `brokers` as the failover list.
fn urls(brokers: &[&Mosquitto]) -> String {
    let list: Vec<String> = brokers.iter().map(|b| format!("\"{}\"", b.url())).collect();
    format!("urls = [{}]", list.join(", "))
}

/// A QoS 0 observer (see the module doc) of a broker that will be killed.
fn qos0_observer(broker: &Mosquitto, topics: &[&str]) -> Observer {
    Observer::start(broker, topics, false, &["-q", "0"])
}

#[test]
fn telemetry_moves_to_the_next_broker_when_one_is_killed_mid_stream_without_gaps() {
    let (mut a, mut b) = (Mosquitto::start(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    let root = "jetship/v1/fo-1";
    let (telemetry, status) = (format!("{root}/telemetry"), format!("{root}/status"));
    let mut on_a = qos0_observer(&a, &[&telemetry, &status]);
    let mut on_b = Observer::start(&b, &[&telemetry, &status], true, &[]);
    let cfg = agent_config(dir.path(), "fo-1", &urls(&[&a, &b]), "");
    let mut agent = Agent::start(&cfg);

    on_a.wait_for("telemetry on the first broker", Duration::from_secs(15), |l| max_seq(l, &telemetry) >= 3);
    assert!(on_b.lines().is_empty(), "the agent must use the first broker while it answers: {:?}", on_b.lines());
    a.kill();
    on_a.finish();
    let last_on_a = max_seq(&on_a.lines(), &telemetry);

    on_b.wait_for("the agent online and its telemetry on the second broker", Duration::from_secs(15), |l| {
        l.iter().any(|(t, p)| *t == status && p.contains("\"online\":true")) && max_seq(l, &telemetry) >= last_on_a + 3
    });
    let (order, missing) = check_order(&[seqs(&on_a, &telemetry), seqs(&on_b, &telemetry)].concat());
    assert_eq!(order[0], 1);
    assert_eq!(missing, 0, "telemetry lost across the switch: {order:?}\n{}", agent.log());
    let on_b_only = seqs(&on_b, &telemetry);
    assert!(on_b_only.windows(2).all(|w| w[1] == w[0] + 1), "the second broker got them out of order: {on_b_only:?}");
    assert!(on_b_only[0] <= last_on_a + 1, "a gap at the switch: A ended at {last_on_a}, B began at {on_b_only:?}");

    // After the last broker comes the first again. (mosquitto_sub reconnects by itself: stop the first
    // observer before its broker returns, keeping what it saw.)
    let seen_on_a = seqs(&on_a, &telemetry);
    drop(on_a);
    a.restart();
    let again_on_a = qos0_observer(&a, &[&telemetry]);
    b.kill();
    on_b.finish();
    let last_on_b = max_seq(&on_b.lines(), &telemetry);
    again_on_a.wait_for("telemetry back on the first broker", Duration::from_secs(15), |l| {
        max_seq(l, &telemetry) >= last_on_b + 3
    });
    // The restarted broker may first hand out a retained sample from its persistence file: an old seq, which
    // counts as a duplicate.
    let all = [seen_on_a, seqs(&on_b, &telemetry), seqs(&again_on_a, &telemetry)].concat();
    let (order, missing) = check_order(&all);
    assert_eq!(missing, 0, "telemetry lost on the way back: {order:?}\n{}", agent.log());
    assert!(agent.running(), "{}", agent.log());
    let log = plain(&agent.log());
    assert!(log.contains(&format!("next={}", b.url())) && log.contains(&format!("next={}", a.url())), "{log}");
}

/// `text` without the ANSI colour sequences of the log format.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_full_window_in_flight_crosses_to_the_next_broker_in_order() {
    use jetship::link::mqtt::{BrokerAccess, Link, LinkOptions};
    use jetship::link::protocol::{Stream, Topics};
    use jetship::link::spool::Spool;

    const RECORDS: u64 = 4000;
    let (mut a, b) = (Mosquitto::start(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("burst-1").unwrap();
    let events = topics.stream(Stream::Events);
    let mut on_a = qos0_observer(&a, &[&events]);
    let on_b = Observer::start(&b, &[&events], true, &[]);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let access = BrokerAccess { url: a.url(), failover_urls: vec![b.url()], ..Default::default() };
    let spool = Spool::open(&dir.path().join("spool"), 64 << 20, false).unwrap();
    let (link, handle, _incoming) = rt.block_on(async {
        Link::new(
            LinkOptions {
                brokers: access.brokers("burst-1", Duration::from_secs(5)).unwrap(),
                topics: topics.clone(),
                subscriptions: Vec::new(),
                offline_status: br#"{"online":false}"#.to_vec(),
                backoff_min: Duration::from_millis(50),
                backoff_max: Duration::from_millis(200),
                window: 64,
            },
            spool,
        )
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let task = rt.spawn(link.run(stop.clone()));
    for _ in 0..RECORDS {
        handle.append(Stream::Events, |seq| format!(r#"{{"seq":{seq},"kind":"burst"}}"#).into_bytes()).unwrap();
    }
    // Killed while the link is sending: the first broker has some, the window holds unacknowledged ones.
    on_a.wait_for("the first records on the first broker", Duration::from_secs(20), |l| l.len() >= 300);
    a.kill();
    on_a.finish();
    let got_a = seqs(&on_a, &events);
    assert!((got_a.len() as u64) < RECORDS, "all records went out before the kill: the test proves nothing");

    on_b.wait_for("every record", Duration::from_secs(60), |l| max_seq(l, &events) >= RECORDS);
    let got_b = seqs(&on_b, &events);
    let (order, missing) = check_order(&[got_a.clone(), got_b.clone()].concat());
    assert_eq!((order.len() as u64, missing), (RECORDS, 0), "records lost across the switch");
    assert!(got_b.windows(2).all(|w| w[1] == w[0] + 1), "out of order on the second broker");
    let resent = got_a.iter().filter(|s| got_b.contains(s)).count();
    assert!(resent <= 64, "{resent} records sent twice: more than the window");
    stop.cancel();
    rt.block_on(task).unwrap();
}

/// Runs `jetship args...` and returns stdout, asserting success.
fn jetship_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = support::jetship_env(args, env);
    assert!(out.status.success(), "jetship {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn controller_commands_use_the_next_broker_when_the_first_is_down() {
    let (mut a, b) = (Mosquitto::start(), Mosquitto::start());
    a.kill();
    let dir = tempfile::tempdir().unwrap();
    let cfg = agent_config(dir.path(), "fo-cli", &urls(&[&a, &b]), "");
    let agent = Agent::start(&cfg);
    let (ua, ub) = (a.url(), b.url());

    // Repeated flags, one comma-separated environment variable, and cli.toml's `urls`.
    let start = Instant::now();
    loop {
        let rows: Vec<Value> = serde_json::from_str(&jetship_ok(
            &["devices", "--json", "--broker", &ua, "--broker", &ub, "--timeout", "3"],
            &[],
        ))
        .unwrap();
        if rows.iter().any(|r| r["device"] == "fo-cli" && r["online"] == true) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "device not listed: {rows:?}\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let both = format!("{ua},{ub}");
    let text = jetship_ok(&["status", "fo-cli"], &[("JETSHIP_BROKER", &both)]);
    assert!(text.contains("online:       yes"), "{text}");
    let cli = dir.path().join("cli.toml");
    std::fs::write(&cli, format!("[broker]\nurls = [\"{ua}\", \"{ub}\"]\n")).unwrap();
    let text = jetship_ok(&["ping", "fo-cli", "-c", "2"], &[("JETSHIP_CLI_CONFIG", cli.to_str().unwrap())]);
    assert_eq!(text.matches("reply from fo-cli").count(), 2, "{text}");

    // Nothing answers: the error names every broker and what each said.
    drop(agent);
    drop(b);
    let out = support::jetship(&["devices", "--broker", &both, "--timeout", "5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{ua}: ")) && err.contains(&format!("{ub}: ")), "{err}");
    // A list that names one broker twice is refused before anything is tried.
    let out = support::jetship(&["devices", "--broker", &format!("{ua},{ua}")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("listed twice"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn deploy_wait_follows_the_device_to_the_next_broker() {
    let (mut a, b) = (Mosquitto::start(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.json");
    std::fs::write(&doc, r#"{"generation":3,"deployments":{}}"#).unwrap();
    let desired = "jetship/v1/fo-wait/desired";
    let on_a = qos0_observer(&a, &[desired]);
    let both = format!("{},{}", a.url(), b.url());
    let args = ["deploy", "fo-wait", "-f", doc.to_str().unwrap(), "--wait", "--timeout", "60", "--broker", &both];
    let mut deploy = Agent::command(&args, dir.path().join("deploy.log"));
    on_a.wait_for("the document on the first broker", Duration::from_secs(10), |l| !l.is_empty());

    // The first broker dies while `deploy` waits; the document reaches the second one as a cluster would
    // replicate it, and the device comes up there.
    a.kill();
    publish(&b, desired, br#"{"generation":3,"deployments":{}}"#, true);
    let cfg = agent_config(dir.path(), "fo-wait", &urls(&[&b]), "");
    let agent = Agent::start(&cfg);
    let status = deploy.wait_exit(Duration::from_secs(40));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "deploy --wait did not converge on the second broker:\n{}\n{}\n{}",
        deploy.stdout(),
        deploy.log(),
        agent.log()
    );
    assert!(plain(&deploy.log()).contains("trying the next broker"), "{}", deploy.log());
}

#[test]
fn the_exporter_follows_the_fleet_to_the_next_broker() {
    use support::prometheus::http_get;
    let (mut a, b) = (Mosquitto::start(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    let cfg = agent_config(dir.path(), "fo-exp", &urls(&[&a, &b]), "");
    let agent = Agent::start(&cfg);
    let port = support::reserve_port();
    let listen = format!("127.0.0.1:{}", port.port);
    let both = format!("{},{}", a.url(), b.url());
    let exporter =
        Agent::command(&["exporter", "--broker", &both, "--listen", &listen], dir.path().join("exporter.log"));
    let metric = |name: &str| -> Option<f64> {
        let (status, _, body) = std::net::TcpStream::connect(&listen)
            .ok()
            .map(|_| http_get(port.port, "/metrics", &[]))
            .unwrap_or((0, Vec::new(), Vec::new()));
        (status == 200).then_some(())?;
        String::from_utf8_lossy(&body).lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let wait = |what: &str, pred: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !pred() {
            assert!(start.elapsed() < Duration::from_secs(20), "{what}:\n{}\n{}", exporter.log(), agent.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let seen = r#"jetship_device_last_seen_timestamp_seconds{device="fo-exp"}"#;
    wait("device online on the first broker", &|| {
        metric(r#"jetship_device_online{device="fo-exp"}"#) == Some(1.0) && metric(seen).is_some()
    });
    assert_eq!(metric("jetship_exporter_broker_connects_total"), Some(1.0));
    a.kill();
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    wait("the exporter on the second broker, seeing fresh telemetry", &|| {
        metric("jetship_exporter_broker_connects_total") == Some(2.0)
            && metric(seen).is_some_and(|t| t > killed_at + 1.0)
            && metric(r#"jetship_device_online{device="fo-exp"}"#) == Some(1.0)
    });
}

/// The fenced block of docs/protocol.md that follows the line `marker`.
fn doc_block(marker: &str) -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md")).unwrap();
    let after = &doc[doc.find(marker).unwrap_or_else(|| panic!("`{marker}` not in docs/protocol.md"))..];
    let body = &after[after.find("```").unwrap()..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_owned()
}

#[test]
fn the_documented_mosquitto_acl_keeps_each_device_to_its_own_topics() {
    support::require_tool("mosquitto_passwd", "mosquitto");
    let dir = tempfile::tempdir().unwrap();
    // The documented file, with its example device as this test's `dev-a`.
    let acl = doc_block("<!-- acl: mosquitto -->").replace("orin-nano-01", "dev-a");
    let acl_path = dir.path().join("jetship.acl");
    std::fs::write(&acl_path, &acl).unwrap();
    let passwd = dir.path().join("passwd");
    for (i, user) in ["dev-a", "dev-b", "ops", "exporter"].iter().enumerate() {
        let mut cmd = std::process::Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let st = cmd.arg("-b").arg(&passwd).arg(user).arg(format!("pw-{user}")).status().unwrap();
        assert!(st.success());
        std::fs::write(dir.path().join(format!("{user}.pw")), format!("pw-{user}\n")).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    for f in [&acl_path, &passwd] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let broker =
        Mosquitto::start_with_conf(&format!("password_file {}\nacl_file {}\n", passwd.display(), acl_path.display()));
    let login = |user: &str| vec!["-u".to_owned(), user.to_owned(), "-P".to_owned(), format!("pw-{user}")];
    let pub_as = |user: &str, topic: &str, payload: &str, retain: bool| {
        let mut cmd = std::process::Command::new("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", topic, "-m", payload]);
        cmd.args(login(user));
        if retain {
            cmd.arg("-r");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{user} -> {topic}: {}", String::from_utf8_lossy(&out.stderr));
    };
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let ops = Observer::start(&broker, &["jetship/v1/#"], false, &strs(&login("ops")));

    // Publishing: dev-a cannot write another device's topics, nor its own desired or cmd; each publish is
    // acknowledged (MQTT 3.1.1 has no negative PUBACK) and dropped. Its own telemetry goes through, and
    // because mosquitto handles one publish before acknowledging it, the forbidden ones would have come first.
    for topic in [
        "jetship/v1/dev-b/telemetry",
        "jetship/v1/dev-b/status",
        "jetship/v1/dev-b/reply/x",
        "jetship/v1/dev-a/desired",
        "jetship/v1/dev-a/cmd/x",
        "jetship/v1/groups/lab/desired",
    ] {
        pub_as("dev-a", topic, "forged", false);
    }
    pub_as("exporter", "jetship/v1/dev-a/desired", "forged", false);
    pub_as("dev-a", "jetship/v1/dev-a/telemetry", r#"{"seq":1}"#, false);
    ops.wait_for("dev-a's own telemetry", Duration::from_secs(5), |l| l.iter().any(|(_, p)| p == r#"{"seq":1}"#));
    let forged: Vec<_> = ops.lines().into_iter().filter(|(_, p)| p == "forged").collect();
    assert!(forged.is_empty(), "the ACL let these through: {forged:?}");

    // Reading: dev-a, subscribed to dev-b's desired and cmd and to everything, gets only what is its own.
    let dev_a = Observer::start(
        &broker,
        &["jetship/v1/dev-b/desired", "jetship/v1/+/cmd/#", "jetship/v1/#", "jetship/v1/dev-a/desired"],
        false,
        &strs(&login("dev-a")),
    );
    pub_as("ops", "jetship/v1/dev-b/desired", r#"{"for":"dev-b"}"#, true);
    pub_as("ops", "jetship/v1/dev-b/cmd/r1", r#"{"cmd":"ping"}"#, false);
    pub_as("dev-b", "jetship/v1/dev-b/telemetry", r#"{"seq":9}"#, false);
    pub_as("ops", "jetship/v1/dev-a/desired", r#"{"for":"dev-a"}"#, true);
    dev_a.wait_for("dev-a's own desired", Duration::from_secs(5), |l| l.iter().any(|(_, p)| p.contains("dev-a")));
    let leaked: Vec<_> = dev_a.lines().into_iter().filter(|(t, _)| t.contains("dev-b")).collect();
    assert!(leaked.is_empty(), "dev-a read another device's topics: {leaked:?}");

    // The real agent works under it: presence, telemetry, its group's document, commands and replies.
    let mqtt = format!(
        "url = \"{}\"\nusername = \"dev-a\"\npassword_file = \"{}\"",
        broker.url(),
        dir.path().join("dev-a.pw").display()
    );
    let cfg = agent_config(dir.path(), "dev-a", &mqtt, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("groups = [\"lab\"]\n{text}")).unwrap();
    pub_as("ops", "jetship/v1/groups/lab/desired", r#"{"generation":4,"deployments":{}}"#, true);
    let agent = Agent::start(&cfg);
    ops.wait_for("the agent online, its telemetry and the group document taken", Duration::from_secs(15), |l| {
        l.iter().any(|(t, p)| t == "jetship/v1/dev-a/status" && p.contains("\"online\":true"))
            && max_seq(l, "jetship/v1/dev-a/telemetry") >= 2
            && l.iter().any(|(t, p)| t == "jetship/v1/dev-a/reported" && p.contains("\"group:lab\":4"))
    });
    // The controller commands as `ops`, from cli.toml.
    let cli = dir.path().join("ops-cli.toml");
    let ops_pw = dir.path().join("ops.pw");
    let toml =
        format!("[broker]\nurl = \"{}\"\nusername = \"ops\"\npassword_file = \"{}\"\n", broker.url(), ops_pw.display());
    std::fs::write(&cli, toml).unwrap();
    let env = [("JETSHIP_CLI_CONFIG", cli.to_str().unwrap())];
    assert!(jetship_ok(&["ping", "dev-a"], &env).contains("reply from dev-a"), "{}", agent.log());
    let rows: Vec<Value> = serde_json::from_str(&jetship_ok(&["devices", "--json"], &env)).unwrap();
    assert!(rows.iter().any(|r| r["device"] == "dev-a"), "{rows:?}");
    assert!(!agent.log().contains("refused a subscription"), "{}", agent.log());
}
