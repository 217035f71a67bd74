//! `jetship exporter` end to end: a real `jetship agent` on a fixture host -> a real Mosquitto -> the real
//! exporter binary -> a real Prometheus (Debian's package) scraping it every second with monitoring/alerts.yml
//! loaded; every query of monitoring/grafana/jetship-fleet.json runs against it. Other tests publish device
//! payloads with mosquitto_pub and read /metrics directly (limits, hostile input, forgetting, reconnects).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::mosquitto::{orin_host_root, publish, Mosquitto};
use support::prometheus::{http_get, monitoring_file, promtool_check_metrics, Prometheus};

/// A child process killed on drop, with its stderr in a file.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[&str], log: PathBuf) -> Proc {
        let child = Command::new(support::jetship_bin())
            .args(args)
            .env_remove("JETSHIP_STATE_DIR")
            .env_remove("JETSHIP_BROKER")
            .env("RUST_LOG", "jetship=debug,info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child: Some(child), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Exporter {
    proc: Proc,
    port: u16,
    _reserved: support::Port,
}

impl Exporter {
    /// Starts `jetship exporter` on a free port and waits until it is subscribed to the broker.
    fn start(broker: &Mosquitto, dir: &Path, extra: &[&str]) -> Exporter {
        let reserved = support::reserve_port();
        let port = reserved.port;
        let listen = format!("127.0.0.1:{port}");
        let url = broker.url();
        let mut args = vec!["exporter", "--broker", &url, "--listen", &listen];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(&args, dir.join(format!("exporter-{port}.log")));
        let mut e = Exporter { proc, port, _reserved: reserved };
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && http_get(port, "/-/ready", &[]).0 == 200 {
                return e;
            }
            assert!(e.proc.running(), "exporter exited: {}", e.proc.log());
            assert!(start.elapsed() < Duration::from_secs(20), "exporter not ready: {}", e.proc.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The text exposition.
    fn metrics(&self) -> String {
        let (status, headers, body) = http_get(self.port, "/metrics", &[]);
        assert_eq!(status, 200);
        assert!(
            headers.iter().any(|(k, v)| k == "content-type" && v == "text/plain; version=0.0.4; charset=utf-8"),
            "{headers:?}"
        );
        String::from_utf8(body).unwrap()
    }

    /// The value of the sample written exactly as `series` (name and labels as the exporter orders them).
    fn value(&self, series: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits until `series` has the value `want`.
    fn wait_value(&self, series: &str, want: f64, limit: Duration) {
        let start = Instant::now();
        while self.value(series) != Some(want) {
            assert!(
                start.elapsed() < limit,
                "`{series}` is not {want} after {limit:?}:\n{}\n{}",
                self.metrics(),
                self.proc.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

const DEVICE: &str = "orin-e2e";

/// The agent config for the fixture Jetson: 1 s telemetry, a 5 s keep-alive (will within 7.5 s), group `lab`,
/// the native backend (runc under conmon) so deployments are planned and reported.
fn agent_config(dir: &Path, broker: &Mosquitto) -> PathBuf {
    assert!(nix::unistd::geteuid().is_root(), "the agent's native backend needs root (scripts/test runs as root)");
    support::require_tool("conmon", "conmon");
    support::require_tool("runc", "runc");
    let host = orin_host_root(dir);
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "device_id = \"{DEVICE}\"\nstate_dir = \"{}\"\ngroups = [\"lab\"]\n[host]\nroot = \"{}\"\n\
             [telemetry]\ninterval_s = 1\n\
             [mqtt]\nurl = \"{}\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\nkeep_alive_s = 5\n\
             [runtime]\nbackend = \"oci\"\noci_runtime = \"runc\"\nrun_dir = \"{}\"\nstop_grace_s = 1\n",
            dir.join("state").display(),
            host.display(),
            broker.url(),
            dir.join("run").display(),
        ),
    )
    .unwrap();
    path
}

/// Every expression of the dashboard's panels, with the template variables Grafana would fill in.
fn dashboard_queries(group: &str, device: &str) -> Vec<(String, String)> {
    let dash: Value = serde_json::from_slice(&std::fs::read(monitoring_file("grafana/jetship-fleet.json")).unwrap())
        .expect("the dashboard is JSON");
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("panel {} has a target without expr", p["title"]));
            let expr = expr
                .replace("$group", group)
                .replace("$device", device)
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m");
            assert!(!expr.contains('$'), "unknown variable in {expr}");
            out.push((p["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    out
}

fn labels_of(r: &[(serde_json::Map<String, Value>, f64)], label: &str) -> Vec<String> {
    r.iter().filter_map(|(m, _)| m.get(label).and_then(Value::as_str).map(str::to_owned)).collect()
}

fn one(prom: &Prometheus, expr: &str) -> f64 {
    let r = prom.query(expr);
    assert_eq!(r.len(), 1, "`{expr}` should give one series: {r:?}");
    r[0].1
}

/// A deployment whose image is on a registry port nothing listens on: the agent reports it failed.
fn failing_document(dir: &Path) -> PathBuf {
    // Reserved for the rest of the test process, so no other test listens there meanwhile.
    let port = std::mem::ManuallyDrop::new(support::reserve_port()).port;
    let doc = dir.join("broken.toml");
    std::fs::write(&doc, format!("[deployments.app]\nimage = \"127.0.0.1:{port}/missing/app:1\"\n")).unwrap();
    doc
}

#[test]
fn agent_metrics_reach_prometheus_with_fixture_values_and_go_offline_after_sigkill() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(&broker, dir.path(), &[]);
    let prom = Prometheus::start(&[format!("127.0.0.1:{}", exporter.port)], &[monitoring_file("alerts.yml")]);
    let mut agent = Proc::spawn(
        &["--config", agent_config(dir.path(), &broker).to_str().unwrap(), "agent"],
        dir.path().join("agent.log"),
    );
    // A group document with a deployment that cannot pull: the device applies group `lab` and reports `failed`.
    let out = Command::new(support::jetship_bin())
        .args(["deploy", "group:lab", "-f", failing_document(dir.path()).to_str().unwrap(), "--broker", &broker.url()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let sel = format!("{{device=\"{DEVICE}\"}}");
    let limit = Duration::from_secs(60);
    prom.wait_for(&format!("jetship_device_online{sel}"), limit, |r| r.len() == 1 && r[0].1 == 1.0);
    prom.wait_for(
        &format!("jetship_deployment_state{{device=\"{DEVICE}\",deployment=\"app\",state=\"failed\"}}"),
        limit,
        |r| r.len() == 1 && r[0].1 == 1.0,
    );
    // The first sample counts CPU time since boot; later ones the (static) fixture counters' change: none.
    prom.wait_for(&format!("jetship_cpu_usage_ratio{sel}"), limit, |r| r.len() == 1 && r[0].1 == 0.0);

    // Exact values of the fixture host (tests/fixtures/hosts/orin-nano-super-jp62; docs/metrics.md, Text form).
    let info = prom.query(&format!("jetship_device_info{sel}"));
    assert_eq!(info.len(), 1, "{info:?}");
    let m = &info[0].0;
    let label = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    assert_eq!(label("model"), "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super");
    assert_eq!((label("soc"), label("module")), ("tegra234".into(), "p3767-0005-super".into()));
    assert_eq!((label("l4t"), label("jetpack")), ("36.4.3".into(), "6.2".into()));
    assert_eq!(label("agent_version"), jetship::VERSION);
    assert_eq!(label("group"), "lab", "the group comes from the applied documents");
    assert_eq!(one(&prom, &format!("jetship_memory_total_bytes{sel}")), 7_989_399_552.0);
    let meminfo = std::fs::read_to_string(support::fixture_host("orin-nano-super-jp62").join("proc/meminfo")).unwrap();
    let kib = |key: &str| -> f64 {
        meminfo.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap()
    };
    assert_eq!(
        one(&prom, &format!("jetship_memory_used_bytes{sel}")),
        (kib("MemTotal:") - kib("MemAvailable:")) * 1024.0
    );
    assert_eq!(one(&prom, &format!("jetship_gpu_load_ratio{sel}")), 0.305);
    assert_eq!(one(&prom, &format!("jetship_gpu_frequency_hertz{sel}")), 612_000_000.0);
    let temps = prom.query(&format!("jetship_temperature_celsius{sel}"));
    let mut temps: Vec<(String, f64)> =
        temps.iter().map(|(m, v)| (m["zone"].as_str().unwrap().to_owned(), *v)).collect();
    temps.sort_by(|a, b| a.0.cmp(&b.0));
    let want = [
        ("cpu-thermal", 44.125),
        ("gpu-thermal", 44.531),
        ("soc0-thermal", 42.125),
        ("soc1-thermal", 43.156),
        ("soc2-thermal", 43.375),
        ("tj-thermal", 44.531),
    ];
    assert_eq!(temps, want.map(|(z, c)| (z.to_owned(), c)), "cv0-2 cannot be read while off and are absent");
    let rails = prom.query(&format!("jetship_power_watts{sel}"));
    let mut rails: Vec<(String, f64)> =
        rails.iter().map(|(m, v)| (m["rail"].as_str().unwrap().to_owned(), *v)).collect();
    rails.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        rails,
        [("VDD_CPU_GPU_CV".to_owned(), 0.486), ("VDD_IN".to_owned(), 2.957), ("VDD_SOC".to_owned(), 1.012)]
    );
    assert_eq!(one(&prom, &format!("jetship_fan_pwm_ratio{sel}")), 77.0 / 255.0);
    let mode = prom.query(&format!("jetship_power_mode_info{sel}"));
    assert_eq!(labels_of(&mode, "mode"), ["MAXN_SUPER"]);
    assert_eq!(labels_of(&mode, "mode_id"), ["2"]);
    let st = nix::sys::statvfs::statvfs(&dir.path().join("state")).unwrap();
    let frag = st.fragment_size() as f64;
    assert_eq!(one(&prom, &format!("jetship_disk_total_bytes{sel}")), st.blocks() as f64 * frag);
    let free = one(&prom, &format!("jetship_disk_free_bytes{sel}"));
    assert!(free > 0.0 && free <= st.blocks() as f64 * frag, "{free}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let seen = one(&prom, &format!("jetship_device_last_seen_timestamp_seconds{sel}"));
    assert!((now - seen).abs() < 30.0, "last seen {seen}, now {now}");
    assert_eq!(
        one(&prom, &format!("jetship_deployment_restarts_total{{device=\"{DEVICE}\",deployment=\"app\"}}")),
        0.0
    );
    assert_eq!(one(&prom, &format!("jetship_spool_dropped_total{sel}")), 0.0);
    assert_eq!(one(&prom, &format!("jetship_events_total{{device=\"{DEVICE}\",kind=\"agent_started\"}}")), 1.0);
    assert!(one(&prom, &format!("jetship_events_total{{device=\"{DEVICE}\",kind=\"desired_accepted\"}}")) >= 1.0);
    assert_eq!(one(&prom, "jetship_exporter_broker_connected"), 1.0);
    assert_eq!(one(&prom, &format!("jetship:device_throttle_celsius{sel}")), 99.0, "tegra234's throttle point");

    // Every rule of alerts.yml evaluates without error on real data, and the failed deployment's alert is on
    // its way (pending for its 5 minutes).
    let groups = prom.api("rules", &[]);
    let rules: Vec<&Value> =
        groups["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert_eq!(rules.len(), 15, "{groups}");
    prom.wait_for("ALERTS{alertname=\"JetshipDeploymentFailed\"}", limit, |r| !r.is_empty());
    for r in prom.api("rules", &[])["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        assert_eq!(r["health"], "ok", "rule {} does not evaluate: {}", r["name"], r["lastError"]);
    }
    let alerts = prom.api("alerts", &[]);
    let failed: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == "JetshipDeploymentFailed")
        .collect();
    assert_eq!(failed.len(), 1, "{alerts}");
    assert_eq!(failed[0]["labels"]["device"], DEVICE);
    assert_eq!(failed[0]["state"], "pending");

    // Every dashboard query returns data for this device; the template variables list it.
    let queries = dashboard_queries("lab", DEVICE);
    assert!(queries.len() >= 25, "{queries:?}");
    for (title, expr) in &queries {
        // Shown with the failure: which panel's query returned nothing.
        eprintln!("dashboard panel `{title}`: {expr}");
        prom.wait_for(expr, Duration::from_secs(20), |r| !r.is_empty());
    }
    let values = |label: &str, m: &str| -> Vec<String> {
        let v = prom.api(&format!("label/{label}/values"), &[("match[]", m)]);
        v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(values("group", "jetship_device_info"), ["lab"]);
    assert_eq!(values("device", "jetship_device_info{group=~\"lab\"}"), [DEVICE]);

    // SIGKILL: the broker publishes the will, the exporter says offline and stops exporting measurements;
    // Prometheus marks them stale.
    agent.kill();
    prom.wait_for(&format!("jetship_device_online{sel}"), Duration::from_secs(30), |r| r.len() == 1 && r[0].1 == 0.0);
    for gone in [
        "jetship_cpu_usage_ratio",
        "jetship_temperature_celsius",
        "jetship_power_watts",
        "jetship_memory_used_bytes",
        "jetship_deployment_state",
        "jetship_power_mode_info",
    ] {
        prom.wait_for(&format!("{gone}{sel}"), Duration::from_secs(10), |r| r.is_empty());
    }
    assert_eq!(prom.query(&format!("jetship_device_info{sel}")).len(), 1, "its identity stays");
    assert!((one(&prom, &format!("jetship_device_last_seen_timestamp_seconds{sel}")) - seen).abs() < 30.0);
    assert_eq!(one(&prom, "count(jetship_device_online == 0) or vector(0)"), 1.0);
}

#[test]
fn text_is_the_default_openmetrics_is_served_on_request_and_both_survive_hostile_labels() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(&broker, dir.path(), &["--max-label-bytes", "48"]);
    let evil_zone = "zone \"quoted\" \\back\\ new\nline} {x=\"1\"} é";
    let long = "r".repeat(100);
    publish(
        &broker,
        "jetship/v1/evil/status",
        br#"{"online":true,"agent_version":"9\"9","started_at":"x","boot_id":null}"#,
        true,
    );
    let telemetry = serde_json::json!({"seq": 1, "ts": 1000, "thermal": [{"name": evil_zone, "temp_c": 50.5}],
        "power": [{"name": long, "power_mw": 1500}]});
    publish(&broker, "jetship/v1/evil/telemetry", telemetry.to_string().as_bytes(), true);
    exporter.wait_value("jetship_exporter_messages_total{topic=\"telemetry\"}", 1.0, Duration::from_secs(10));

    let text = exporter.metrics();
    assert_eq!(promtool_check_metrics(text.as_bytes()).trim(), "", "promtool lint findings");
    assert!(text.contains(r#"zone="zone \"quoted\" \\back\\ new\nline} {x=\"1\"} é"} 50.5"#), "{text}");
    assert!(text.contains(&format!("rail=\"{}\"}} 1.5", "r".repeat(48))), "cut to --max-label-bytes: {text}");
    assert_eq!(exporter.value("jetship_exporter_label_values_truncated_total"), Some(1.0));

    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let (status, headers, body) = http_get(exporter.port, "/metrics", &[("Accept", accept)]);
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("application/openmetrics-text; version=1.0.0")));
    let om = String::from_utf8(body).unwrap();
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE jetship_spool_dropped counter\n"), "{om}");

    // gzip when asked.
    let (_, headers, body) = http_get(exporter.port, "/metrics", &[("Accept-Encoding", "gzip")]);
    assert!(headers.iter().any(|(k, v)| k == "content-encoding" && v == "gzip"), "{headers:?}");
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain).unwrap();
    assert!(plain.contains("jetship_device_online{device=\"evil\"} 1"), "{plain}");

    // A real Prometheus reads the hostile values back exactly (it scrapes OpenMetrics).
    let prom = Prometheus::start(&[format!("127.0.0.1:{}", exporter.port)], &[]);
    let r = prom.wait_for("jetship_temperature_celsius{device=\"evil\"}", Duration::from_secs(30), |r| r.len() == 1);
    assert_eq!(r[0].0["zone"], evil_zone);
    assert_eq!(r[0].1, 50.5);
    let r = prom.query("jetship_device_info{device=\"evil\"}");
    assert_eq!(r[0].0["agent_version"], "9\"9");
    let up = prom.wait_for("up{job=\"jetship\"}", Duration::from_secs(10), |r| r.len() == 1);
    assert_eq!(up[0].1, 1.0);

    // Other paths and methods.
    assert_eq!(http_get(exporter.port, "/nope", &[]).0, 404);
    assert_eq!(http_get(exporter.port, "/-/healthy", &[]).0, 200);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", exporter.port)).unwrap();
    std::io::Write::write_all(&mut s, b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut resp = String::new();
    std::io::Read::read_to_string(&mut s, &mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.0 405") || resp.starts_with("HTTP/1.1 405"), "{resp}");
}

#[test]
fn limits_cap_devices_zones_and_payloads_and_count_what_was_dropped() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(&broker, dir.path(), &["--max-devices", "2", "--max-zones", "1"]);
    let status = br#"{"online":true,"agent_version":"0.1.0","started_at":"x","boot_id":null}"#;
    for d in ["a", "b", "c"] {
        publish(&broker, &format!("jetship/v1/{d}/status"), status, true);
    }
    exporter.wait_value("jetship_exporter_dropped_total{reason=\"device_limit\"}", 1.0, Duration::from_secs(10));
    assert_eq!(exporter.value("jetship_exporter_devices"), Some(2.0));
    assert_eq!(exporter.value("jetship_exporter_device_limit"), Some(2.0));
    let text = exporter.metrics();
    assert!(text.contains("jetship_device_online{device=\"a\"} 1") && !text.contains("device=\"c\""), "{text}");

    let zones = serde_json::json!({"seq": 1, "ts": 1, "thermal": [{"name": "z1", "temp_c": 1.0}, {"name": "z2", "temp_c": 2.0}, {"name": "z3", "temp_c": 3.0}]});
    publish(&broker, "jetship/v1/a/telemetry", zones.to_string().as_bytes(), false);
    exporter.wait_value("jetship_exporter_dropped_total{reason=\"zone_limit\"}", 2.0, Duration::from_secs(10));
    let text = exporter.metrics();
    assert!(text.contains("zone=\"z1\"") && !text.contains("zone=\"z2\""), "{text}");

    // Over 1 MiB, and garbage: counted, nothing changes, the exporter goes on.
    let mut big = br#"{"seq":2,"ts":2,"pad":""#.to_vec();
    big.resize(1024 * 1024 + 10, b'x');
    big.extend_from_slice(b"\"}");
    publish(&broker, "jetship/v1/a/telemetry", &big, false);
    publish(&broker, "jetship/v1/a/status", b"\xff\xfe not json", false);
    exporter.wait_value("jetship_exporter_dropped_total{reason=\"too_large\"}", 1.0, Duration::from_secs(10));
    exporter.wait_value("jetship_exporter_dropped_total{reason=\"invalid\"}", 1.0, Duration::from_secs(10));
    assert_eq!(exporter.value("jetship_device_online{device=\"a\"}"), Some(1.0));
    assert!(exporter.metrics().contains("zone=\"z1\""));
}

#[test]
fn long_offline_devices_are_forgotten_and_a_cleared_status_forgets_at_once() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(&broker, dir.path(), &["--forget-after", "2"]);
    let offline = br#"{"online":false,"agent_version":"0.1.0","started_at":"x","boot_id":null}"#;
    let online = br#"{"online":true,"agent_version":"0.1.0","started_at":"x","boot_id":null}"#;
    // Offline with a sample from long ago (retained, as a real device leaves them).
    publish(&broker, "jetship/v1/old/status", offline, true);
    publish(&broker, "jetship/v1/old/telemetry", br#"{"seq":5,"ts":1000}"#, true);
    publish(&broker, "jetship/v1/live/status", online, true);
    exporter.wait_value("jetship_exporter_devices_forgotten_total", 1.0, Duration::from_secs(10));
    let text = exporter.metrics();
    assert!(!text.contains("device=\"old\"") && text.contains("jetship_device_online{device=\"live\"} 1"), "{text}");
    // Online devices are never forgotten, however quiet.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(exporter.value("jetship_device_online{device=\"live\"}"), Some(1.0));
    // Clearing the retained status (how an operator retires a device) forgets it at once.
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-q",
            "1",
            "-r",
            "-n",
            "-t",
            "jetship/v1/live/status",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    exporter.wait_value("jetship_exporter_devices", 0.0, Duration::from_secs(10));
}

#[test]
fn exporter_reports_a_lost_broker_and_resubscribes_when_it_returns() {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(&broker, dir.path(), &[]);
    let online = br#"{"online":true,"agent_version":"0.1.0","started_at":"x","boot_id":null}"#;
    publish(&broker, "jetship/v1/d1/status", online, true);
    exporter.wait_value("jetship_device_online{device=\"d1\"}", 1.0, Duration::from_secs(10));
    broker.stop();
    exporter.wait_value("jetship_exporter_broker_connected", 0.0, Duration::from_secs(10));
    assert_eq!(http_get(exporter.port, "/-/ready", &[]).0, 503);
    assert_eq!(http_get(exporter.port, "/-/healthy", &[]).0, 200);
    broker.restart();
    exporter.wait_value("jetship_exporter_broker_connected", 1.0, Duration::from_secs(20));
    exporter.wait_value("jetship_exporter_broker_connects_total", 2.0, Duration::from_secs(5));
    // Retained state comes again after the new subscription; news after the outage is taken.
    let offline = br#"{"online":false,"agent_version":"0.1.0","started_at":"x","boot_id":null}"#;
    publish(&broker, "jetship/v1/d1/status", offline, true);
    exporter.wait_value("jetship_device_online{device=\"d1\"}", 0.0, Duration::from_secs(10));
}

#[test]
fn idle_connections_cannot_lock_out_the_scraper() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(&broker, dir.path(), &[]);
    let probe = || {
        std::net::TcpStream::connect(("127.0.0.1", exporter.port))
            .ok()
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                std::io::Write::write_all(&mut s, b"GET /-/healthy HTTP/1.0\r\n\r\n").ok()?;
                let mut r = String::new();
                std::io::Read::read_to_string(&mut s, &mut r).ok()?;
                Some(r.contains(" 200 "))
            })
            .unwrap_or(false)
    };
    // More idle connections than the exporter serves at once (64), sending nothing.
    let start = Instant::now();
    let idle: Vec<std::net::TcpStream> =
        (0..80).map(|_| std::net::TcpStream::connect(("127.0.0.1", exporter.port)).unwrap()).collect();
    // While they hold every slot a scrape is turned away; only once the header timeout (10 s, counted from
    // when each idle connection was accepted, so at most from `start`) may one get through.
    let first = probe();
    assert!(!first || start.elapsed() >= Duration::from_secs(10), "a scrape got a slot next to 80 idle connections");
    // They are closed after the header timeout; then a scrape gets through.
    while !probe() {
        assert!(start.elapsed() < Duration::from_secs(30), "still locked out: {}", exporter.proc.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(idle);
}

#[test]
fn bad_flags_and_a_taken_port_are_explained() {
    let out = Command::new(support::jetship_bin()).args(["exporter", "--max-devices", "0"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--max-devices 0: must be at least 1"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(support::jetship_bin()).args(["exporter", "--listen", &addr]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("cannot listen on {addr}")) && err.contains("--listen"),
        "{err}"
    );
    let out = Command::new(support::jetship_bin()).args(["exporter", "--broker", "http://x"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("http://x"), "{err}");
}

/// The fenced block of docs/monitoring.md that starts with `first_line`.
fn docs_block(first_line: &str) -> String {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring.md")).unwrap();
    let start = docs.find(first_line).unwrap_or_else(|| panic!("docs/monitoring.md has no `{first_line}`"));
    let end = docs[start..].find("```").unwrap();
    docs[start..start + end].to_owned()
}

#[test]
fn the_prometheus_and_alertmanager_configs_in_the_docs_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = monitoring_file("alerts.yml");
    let prom = docs_block("# prometheus.yml").replace("/etc/prometheus/jetship-alerts.yml", alerts.to_str().unwrap());
    std::fs::write(dir.path().join("prometheus.yml"), prom).unwrap();
    let out = Command::new(support::require_tool("promtool", "prometheus"))
        .args(["check", "config"])
        .arg(dir.path().join("prometheus.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.path().join("alertmanager.yml"), docs_block("# alertmanager.yml")).unwrap();
    let out = Command::new(support::require_tool("amtool", "prometheus-alertmanager"))
        .arg("check-config")
        .arg(dir.path().join("alertmanager.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
