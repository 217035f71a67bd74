//! A real Prometheus (Debian's `prometheus` package) on a free loopback port, with a private TSDB dir,
//! scraping given targets every second and evaluating given rule files every second; killed on drop. Plus a
//! minimal HTTP GET for its API and for exporters (HTTP/1.0, so no chunked bodies to decode).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{require_tool, reserve_port, Port};

pub struct Prometheus {
    pub port: u16,
    _reserved: Port,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

/// `GET path` on 127.0.0.1:port with extra request headers; returns the status, the headers (lowercased
/// names) and the body. Panics on connection errors.
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect :{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, job `jetship`) and evaluating `rule_files`.
    pub fn start(targets: &[String], rule_files: &[PathBuf]) -> Prometheus {
        let bin = require_tool("prometheus", "prometheus");
        let dir = tempfile::tempdir().unwrap();
        let reserved = reserve_port();
        let port = reserved.port;
        let quote = |s: &str| serde_json::to_string(s).unwrap();
        let targets: Vec<String> = targets.iter().map(|t| quote(t)).collect();
        let rules: Vec<String> = rule_files.iter().map(|r| quote(&r.display().to_string())).collect();
        // YAML is a superset of JSON for these flow values.
        let conf = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\nscrape_configs:\n  - job_name: jetship\n    static_configs:\n      - targets: [{}]\n",
            rules.join(", "),
            targets.join(", ")
        );
        let conf_path = dir.path().join("prometheus.yml");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", conf_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { port, _reserved: reserved, dir, child: Some(child) };
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && http_get(port, "/-/ready", &[]).0 == 200 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "prometheus did not get ready: {}", p.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>?<query>` and its `data`; panics on an API error, showing it.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        let (status, _, body) = http_get(self.port, &format!("/api/v1/{path}?{}", q.join("&")), &[]);
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{path} {params:?}: {e}: {}", String::from_utf8_lossy(&body)));
        assert!(status == 200 && v["status"] == "success", "{path} {params:?}: HTTP {status}: {v}");
        v["data"].clone()
    }

    /// The instant vector of `expr` now: (labels, value) pairs.
    pub fn query(&self, expr: &str) -> Vec<(serde_json::Map<String, Value>, f64)> {
        let data = self.api("query", &[("query", expr)]);
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let v = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (r["metric"].as_object().unwrap().clone(), v)
            })
            .collect()
    }

    /// Waits until `pred` holds for the result of `expr`, or panics after `limit` showing the last result.
    pub fn wait_for(
        &self,
        expr: &str,
        limit: Duration,
        pred: impl Fn(&[(serde_json::Map<String, Value>, f64)]) -> bool,
    ) -> Vec<(serde_json::Map<String, Value>, f64)> {
        let start = Instant::now();
        loop {
            let r = self.query(expr);
            if pred(&r) {
                return r;
            }
            assert!(start.elapsed() < limit, "timed out after {limit:?} waiting on `{expr}`; last result: {r:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `promtool check metrics` on an exposition: its output (empty when clean) or a panic when it fails.
pub fn promtool_check_metrics(exposition: &[u8]) -> String {
    let bin = require_tool("promtool", "prometheus");
    let mut child = Command::new(bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(exposition).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics failed: {text}");
    text
}

/// The repository's monitoring/ file `name`.
pub fn monitoring_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring").join(name)
}
