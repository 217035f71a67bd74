//! The controller side of the fleet protocol: `jetship devices`, `jetship status <device>` and
//! `jetship ping <device>`. It reads the retained topics (`status`, `host`, `reported`, and the last retained
//! `telemetry`) of every device, builds the fleet table, and sends `cmd/<request_id>` for round trips.
//!
//! Broker access comes from flags, environment or `~/.config/jetship/cli.toml` ([`CliFile`]). This module
//! only reads from the broker (plus `cmd` publishes for ping); it never writes `desired` and never touches an
//! agent's state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::{Event, EventLoop, Incoming, Publish, QoS, Request, Subscribe, SubscribeFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::deploy::report::Reported;
use crate::host::metrics::Sample;
use crate::link::failover::{Brokers, BACKOFF_MAX, BACKOFF_MIN};
use crate::link::mqtt::{backoff, BrokerAccess};
use crate::link::protocol::{self, DeviceTopic, Status, Topics, ROOT};

/// The broker used when nothing else says: the embedded broker of an agent on this machine.
pub(crate) const DEFAULT_BROKER: &str = "mqtt://127.0.0.1:1883";

/// Errors of the controller commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the broker at {url}: {message} (set --broker, JETSHIP_BROKER or url in {})", cli_config_path().display())]
    Connect { url: String, message: String },
    #[error(transparent)]
    Access(#[from] crate::link::mqtt::Error),
    #[error("cli config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(#[from] protocol::Error),
    #[error("no answer from the broker within {0:?}")]
    Timeout(Duration),
}

pub type Result<T> = std::result::Result<T, Error>;

/// `~/.config/jetship/cli.toml`: broker access for the controller commands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CliFile {
    pub broker: CliBroker,
}

/// The `[broker]` table of cli.toml. Every key is optional; flags and environment override it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CliBroker {
    /// Broker URL. Defaults to `mqtt://127.0.0.1:1883`.
    pub url: Option<String>,
    /// PEM CA file for mqtts. Defaults to none.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS. Defaults to none.
    pub client_cert: Option<PathBuf>,
    /// PEM client key. Defaults to none.
    pub client_key: Option<PathBuf>,
    /// Username. Defaults to none.
    pub username: Option<String>,
    /// File whose first line is the password. Defaults to none.
    pub password_file: Option<PathBuf>,

    // Broker failover (docs/protocol.md, "Broker failover and clusters").
    /// Brokers to use instead of `url`, in order: a command connects to the first that answers and continues on
    /// the next one if the connection is lost. Defaults to none (`url`). Set `url` or `urls`, not both.
    pub urls: Option<Vec<String>>,
}

impl CliBroker {
    /// The brokers this layer names, in order: `urls`, else `url`; `None` when it names none.
    fn broker_urls(&self) -> Option<Vec<String>> {
        match (&self.urls, &self.url) {
            (Some(list), _) if !list.is_empty() => Some(list.clone()),
            (_, Some(url)) => Some(vec![url.clone()]),
            _ => None,
        }
    }
}

/// Where cli.toml is read: `JETSHIP_CLI_CONFIG`, else `$XDG_CONFIG_HOME/jetship/cli.toml`, else
/// `~/.config/jetship/cli.toml`.
pub(crate) fn cli_config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("JETSHIP_CLI_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("jetship/cli.toml")
}

/// Reads cli.toml; a missing file is an empty one.
pub(crate) fn load_cli_file(path: &Path) -> Result<CliFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let file: CliFile = toml::from_str(&text)
                .map_err(|e| Error::Config { path: path.to_path_buf(), message: e.to_string().trim().to_owned() })?;
            if file.broker.url.is_some() && file.broker.urls.is_some() {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    message: "[broker] sets `url` and `urls`: keep one (`urls` lists every broker, the first included)"
                        .into(),
                });
            }
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CliFile::default()),
        Err(e) => Err(Error::Config { path: path.to_path_buf(), message: e.to_string() }),
    }
}

/// Merges flag/env values over the file: each `Some` in `over` wins (the broker list as a whole).
pub(crate) fn resolve_access(file: &CliBroker, over: &CliBroker) -> BrokerAccess {
    fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
        a.clone().or_else(|| b.clone())
    }
    let mut urls = over.broker_urls().or_else(|| file.broker_urls()).unwrap_or_else(|| vec![DEFAULT_BROKER.to_owned()]);
    BrokerAccess {
        url: urls.remove(0),
        failover_urls: urls,
        ca_file: pick(&over.ca_file, &file.ca_file),
        client_cert: pick(&over.client_cert, &file.client_cert),
        client_key: pick(&over.client_key, &file.client_key),
        username: pick(&over.username, &file.username),
        password_file: pick(&over.password_file, &file.password_file),
    }
}

/// `access` with the local agent's embedded-broker credentials (`<state_dir>/broker-password`, readable only by
/// root) when it names a broker on loopback and carries no username or client certificate of its own: root's
/// CLI on a device talks to that device's embedded broker without further setup.
pub(crate) fn with_local_credentials(mut access: BrokerAccess, state_dir: &Path) -> BrokerAccess {
    let loopback = crate::base::BrokerUrl::parse(&access.url).is_ok_and(|u| {
        let host = u.host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    if loopback
        && access.username.is_none()
        && access.client_cert.is_none()
        && crate::link::broker::local_embedded_password(state_dir).is_some()
    {
        access.username = Some(crate::link::broker::EMBEDDED_USER.to_owned());
        access.password_file = Some(crate::link::broker::embedded_password_path(state_dir));
    }
    access
}

/// What the retained topics say about one device.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceView {
    pub id: String,
    pub status: Option<Status>,
    pub host: Option<Value>,
    pub telemetry: Option<Value>,
    pub reported: Option<Reported>,
    /// How far the device's clock is ahead of this controller's (negative: behind), measured with a `ping` when
    /// the device is online but its telemetry time looked wrong; `None` when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_ms: Option<i64>,
}

/// One line of `jetship devices`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceRow {
    pub device: String,
    /// `None` when no status was ever published.
    pub online: Option<bool>,
    pub model: Option<String>,
    pub l4t: Option<String>,
    pub jetpack: Option<String>,
    pub deployments_running: usize,
    pub deployments_total: usize,
    pub cpu_pct: Option<f64>,
    pub gpu_pct: Option<f64>,
    pub ram_used_bytes: Option<u64>,
    pub ram_total_bytes: Option<u64>,
    /// The hottest zone that measures a temperature (PMIC-Die does not).
    pub hottest_zone: Option<String>,
    pub hottest_c: Option<f64>,
    /// The VDD_IN (R32: POM_5V_IN) rail alone; `None` on boards without one (AGX Orin): see `power_mw`.
    pub vdd_in_mw: Option<u64>,
    /// The total power: the input rail, or the sum of the rails (`power_source` says which).
    pub power_mw: Option<u64>,
    /// `VDD_IN`, `POM_5V_IN` or `sum`.
    pub power_source: Option<String>,
    /// RAM the GPU holds through NvMap.
    pub gpu_shared_bytes: Option<u64>,
    /// Engines whose clock is on (NVDEC, NVENC, VIC, DLA0, ...).
    pub engines_on: Vec<String>,
    /// Whether jetson_clocks is on.
    pub jetson_clocks: Option<bool>,
    /// The power mode as `id name`.
    pub power_mode: Option<String>,
    /// CUDA and TensorRT as dpkg lists them installed (the probe's `installed`).
    pub cuda: Option<String>,
    pub tensorrt: Option<String>,
    /// The groups the device's status lists.
    pub groups: Vec<String>,
    /// Unix ms (this controller's clock) of the last telemetry sample: the device's time stamp, corrected by
    /// `clock_skew_ms` when that was measured.
    pub last_seen_ms: Option<u64>,
    /// The device's clock skew, when measured (see [`DeviceView::clock_skew_ms`]).
    pub clock_skew_ms: Option<i64>,
}

impl DeviceView {
    /// Builds the table row (pure).
    pub fn row(&self) -> DeviceRow {
        let host = self.host.as_ref();
        let s = |v: Option<&Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
        let sample: Option<Sample> = self.telemetry.clone().and_then(|t| serde_json::from_value(t).ok());
        let hottest = sample.as_ref().and_then(|s| s.hottest().cloned());
        let total = sample.as_ref().and_then(|s| s.total_power());
        let deployments: Vec<&crate::deploy::report::ReportedDeployment> =
            self.reported.as_ref().map(|r| r.deployments.values().collect()).unwrap_or_default();
        DeviceRow {
            device: self.id.clone(),
            online: self.status.as_ref().map(|s| s.online),
            model: s(host.and_then(|h| h.get("model"))),
            l4t: s(host.and_then(|h| h.pointer("/l4t/version"))),
            jetpack: s(host.and_then(|h| h.get("jetpack"))),
            deployments_running: deployments.iter().filter(|d| d.state.name() == "running").count(),
            deployments_total: deployments.len(),
            cpu_pct: sample.as_ref().and_then(|s| s.cpu.as_ref().map(|c| c.total_pct)),
            gpu_pct: sample.as_ref().and_then(|s| s.gpu.as_ref().and_then(|g| g.load_pct)),
            ram_used_bytes: sample.as_ref().and_then(|s| s.memory.as_ref().map(|m| m.used_bytes)),
            ram_total_bytes: sample.as_ref().and_then(|s| s.memory.as_ref().map(|m| m.total_bytes)),
            hottest_zone: hottest.as_ref().map(|z| z.name.clone()),
            hottest_c: hottest.and_then(|z| z.temp_c),
            vdd_in_mw: sample.as_ref().and_then(|s| s.input_power_mw()),
            power_mw: total.as_ref().map(|t| t.power_mw),
            power_source: total.map(|t| t.source),
            gpu_shared_bytes: sample.as_ref().and_then(|s| s.memory.as_ref().and_then(|m| m.gpu_shared_bytes)),
            engines_on: sample
                .as_ref()
                .map(|s| s.engines.iter().filter(|e| e.on).map(|e| e.name.clone()).collect())
                .unwrap_or_default(),
            jetson_clocks: sample.as_ref().and_then(|s| s.jetson_clocks),
            power_mode: sample.as_ref().and_then(|s| s.power_mode.as_ref()).map(|m| match &m.name {
                Some(n) => format!("{} {n}", m.id),
                None => m.id.to_string(),
            }),
            cuda: s(host.and_then(|h| h.pointer("/installed/cuda"))),
            tensorrt: s(host.and_then(|h| h.pointer("/installed/tensorrt"))),
            groups: self.status.as_ref().map(|s| s.groups.clone()).unwrap_or_default(),
            last_seen_ms: self.telemetry.as_ref().and_then(|t| t.get("ts")).and_then(|t| t.as_u64()).map(|ts| {
                let skew = self.clock_skew_ms.unwrap_or(0);
                if skew >= 0 {
                    ts.saturating_sub(skew as u64)
                } else {
                    ts.saturating_add(skew.unsigned_abs())
                }
            }),
            clock_skew_ms: self.clock_skew_ms,
        }
    }

    /// Whether the device says it is online but its last sample's time is off from `now_ms` by more than a
    /// working device's samples can be: in the future, or older than [`STALE_MS`]. Its clock is then measured.
    pub(crate) fn time_looks_wrong(&self, now_ms: u64) -> bool {
        let online = self.status.as_ref().is_some_and(|s| s.online);
        let ts = self.telemetry.as_ref().and_then(|t| t.get("ts")).and_then(Value::as_u64);
        online && ts.is_some_and(|ts| ts > now_ms + FUTURE_MS || now_ms.saturating_sub(ts) > STALE_MS)
    }
}

/// A sample this much older than now, from a device that is online, means its clock is off (or its sampler is
/// stuck; the clock measurement tells which).
pub(crate) const STALE_MS: u64 = 60_000;
/// A sample this far in the future means the device's clock is ahead.
pub(crate) const FUTURE_MS: u64 = 5_000;
/// Skews up to this are not shown: network and sampling jitter.
const SKEW_SHOWN_MS: i64 = 5_000;
/// How long `devices`/`status` wait for clock answers.
const SKEW_WAIT: Duration = Duration::from_secs(3);

/// Applies one retained/live message to the fleet map (pure). Unknown topics and unparsable payloads are
/// skipped: one broken device must not hide the others.
pub fn apply(devices: &mut BTreeMap<String, DeviceView>, topic: &str, payload: &[u8]) {
    let Some((id, kind)) = protocol::parse_device_topic(topic) else {
        return;
    };
    if payload.is_empty() {
        return;
    }
    let view = devices.entry(id.to_owned()).or_insert_with(|| DeviceView { id: id.to_owned(), ..Default::default() });
    match kind {
        DeviceTopic::Status => view.status = serde_json::from_slice(payload).ok().or(view.status.take()),
        DeviceTopic::Host => view.host = serde_json::from_slice(payload).ok().or(view.host.take()),
        DeviceTopic::Telemetry => {
            if let Ok(v) = serde_json::from_slice::<Value>(payload) {
                let newer = match (&view.telemetry, v.get("seq").and_then(Value::as_u64)) {
                    (Some(old), Some(seq)) => old.get("seq").and_then(Value::as_u64).is_none_or(|o| seq >= o),
                    _ => true,
                };
                if newer {
                    view.telemetry = Some(v);
                }
            }
        }
        DeviceTopic::Reported => view.reported = serde_json::from_slice(payload).ok().or(view.reported.take()),
        DeviceTopic::Events | DeviceTopic::Desired => {}
    }
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// "last seen" with the device's clock skew when it matters: `5s ago (clock +60m)`.
fn seen(r: &DeviceRow, now_ms: u64) -> String {
    let age = ago(r.last_seen_ms, now_ms);
    match r.clock_skew_ms {
        Some(skew) if skew.abs() > SKEW_SHOWN_MS => {
            let sign = if skew > 0 { "+" } else { "-" };
            let s = skew.unsigned_abs() / 1000;
            let amount = match s {
                0..=119 => format!("{s}s"),
                120..=7199 => format!("{}m", s / 60),
                _ => format!("{}h", s / 3600),
            };
            format!("{age} (clock {sign}{amount})")
        }
        _ => age,
    }
}

fn ago(ms: Option<u64>, now_ms: u64) -> String {
    match ms {
        None => "-".into(),
        Some(t) => {
            let s = now_ms.saturating_sub(t) / 1000;
            match s {
                0..=119 => format!("{s}s ago"),
                120..=7199 => format!("{}m ago", s / 60),
                7200..=172_799 => format!("{}h ago", s / 3600),
                _ => format!("{}d ago", s / 86_400),
            }
        }
    }
}

fn on_off(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "-",
    }
}

/// `8.2W`, or `11.0W (sum)` where the total is the sum of the rails (no input rail).
fn power_cell(mw: Option<u64>, source: Option<&str>) -> String {
    match (mw, source) {
        (Some(mw), Some(crate::host::metrics::POWER_TOTAL_SUM)) => format!("{:.1}W (sum)", mw as f64 / 1000.0),
        (Some(mw), _) => format!("{:.1}W", mw as f64 / 1000.0),
        _ => "-".into(),
    }
}

fn gib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1024.0 * 1024.0 * 1024.0))
}

/// The fleet table for people (pure; `now_ms` for the "last seen" column).
pub fn table(rows: &[DeviceRow], now_ms: u64) -> String {
    let header = [
        "DEVICE",
        "ONLINE",
        "MODEL",
        "L4T/JETPACK",
        "CUDA/TRT",
        "DEPLOY",
        "CPU",
        "GPU",
        "RAM GiB",
        "GPU MEM",
        "HOTTEST",
        "POWER",
        "MODE",
        "CLOCKS",
        "ENGINES",
        "LAST SEEN",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let model = r
            .model
            .as_deref()
            .map(|m| {
                m.trim_start_matches("NVIDIA ")
                    .replace("Engineering Reference ", "")
                    .replace(" Developer Kit", " DevKit")
            })
            .unwrap_or_else(|| "-".into());
        lines.push(vec![
            r.device.clone(),
            match r.online {
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => "?".into(),
            },
            model,
            match (&r.l4t, &r.jetpack) {
                (Some(l), Some(j)) => format!("{l}/{j}"),
                (Some(l), None) => l.clone(),
                _ => "-".into(),
            },
            match (&r.cuda, &r.tensorrt) {
                (None, None) => "-".into(),
                (c, t) => format!("{}/{}", c.as_deref().unwrap_or("-"), t.as_deref().unwrap_or("-")),
            },
            format!("{}/{}", r.deployments_running, r.deployments_total),
            r.cpu_pct.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "-".into()),
            r.gpu_pct.map(|v| format!("{v:.0}%")).unwrap_or_else(|| "-".into()),
            match (r.ram_used_bytes, r.ram_total_bytes) {
                (Some(u), Some(t)) => format!("{}/{}", gib(u), gib(t)),
                _ => "-".into(),
            },
            r.gpu_shared_bytes.map(gib).unwrap_or_else(|| "-".into()),
            match (&r.hottest_zone, r.hottest_c) {
                (Some(z), Some(c)) => format!("{z} {c:.0}C"),
                _ => "-".into(),
            },
            power_cell(r.power_mw, r.power_source.as_deref()),
            r.power_mode.clone().unwrap_or_else(|| "-".into()),
            on_off(r.jetson_clocks).into(),
            if r.engines_on.is_empty() { "-".into() } else { r.engines_on.join(",") },
            seen(r, now_ms),
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for l in lines {
        let cells: Vec<String> = l.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `jetship status <device>` for people (pure).
pub(crate) fn detail(view: &DeviceView, now_ms: u64) -> String {
    let r = view.row();
    let mut out = String::new();
    out.push_str(&format!("device:       {}\n", view.id));
    match &view.status {
        Some(s) => out.push_str(&format!(
            "online:       {}\nagent:        {} (started {}, boot {})\n",
            if s.online { "yes" } else { "no" },
            s.agent_version,
            s.started_at,
            s.boot_id.as_deref().unwrap_or("-")
        )),
        None => out.push_str("online:       unknown (no status published)\n"),
    }
    out.push_str(&format!("model:        {}\n", fmt_opt(r.model.as_deref())));
    out.push_str(&format!(
        "l4t:          {}\njetpack:      {}\n",
        fmt_opt(r.l4t.as_deref()),
        fmt_opt(r.jetpack.as_deref())
    ));
    if !r.groups.is_empty() {
        out.push_str(&format!("groups:       {}\n", r.groups.join(", ")));
    }
    if let Some(h) = &view.host {
        let installed: Vec<String> = ["cuda", "cudnn", "tensorrt", "vpi", "opencv"]
            .iter()
            .filter_map(|k| h.pointer(&format!("/installed/{k}")).and_then(Value::as_str).map(|v| format!("{k} {v}")))
            .collect();
        if !installed.is_empty() {
            out.push_str(&format!("installed:    {}\n", installed.join("  ")));
        }
        let part = h.pointer("/inventory/part_number").and_then(Value::as_str);
        let serial = h.pointer("/inventory/serial_number").and_then(Value::as_str);
        if part.is_some() || serial.is_some() {
            out.push_str(&format!("serial:       {}  part {}\n", fmt_opt(serial), fmt_opt(part)));
        }
        if let Some(c) = h.get("cameras").and_then(Value::as_array) {
            out.push_str(&format!("cameras:      {}\n", c.len()));
        }
    }
    out.push_str(&format!("deployments:  {}/{} running\n", r.deployments_running, r.deployments_total));
    if let Some(rep) = &view.reported {
        out.push_str(&format!(
            "generation:   {} (applied {})\n",
            fmt_opt(rep.generation),
            fmt_opt(rep.applied_generation)
        ));
        for (name, d) in &rep.deployments {
            out.push_str(&format!(
                "  {name}: {} {}{}\n",
                d.state.name(),
                d.digest.as_deref().unwrap_or(&d.image),
                d.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
            ));
        }
        if let Some(rj) = &rep.rejected {
            out.push_str(&format!("rejected:     {} document: {}\n", rj.source, rj.reasons.join("; ")));
        }
    }
    out.push_str(&format!(
        "cpu:          {}\ngpu:          {}\n",
        r.cpu_pct.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into()),
        r.gpu_pct.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into())
    ));
    let sample: Option<Sample> = view.telemetry.clone().and_then(|t| serde_json::from_value(t).ok());
    let memory = sample.as_ref().and_then(|s| s.memory.as_ref());
    if let (Some(u), Some(t)) = (r.ram_used_bytes, r.ram_total_bytes) {
        let tegrastats = memory
            .and_then(|m| m.used_tegrastats_bytes)
            .map(|b| format!(", {} GiB as tegrastats counts", gib(b)))
            .unwrap_or_default();
        out.push_str(&format!("ram:          {} / {} GiB used (not available){tegrastats}\n", gib(u), gib(t)));
    }
    if let Some(g) = r.gpu_shared_bytes {
        out.push_str(&format!("gpu memory:   {} GiB (NvMap, out of the same RAM)\n", gib(g)));
    }
    if let Some(s) = &sample {
        if !s.engines.is_empty() {
            let on: Vec<String> = s
                .engines
                .iter()
                .filter(|e| e.on)
                .map(|e| match e.clocks.iter().filter(|c| c.on == Some(true)).find_map(|c| c.rate_hz) {
                    Some(hz) => format!("{} {} MHz", e.name, hz / 1_000_000),
                    None => e.name.clone(),
                })
                .collect();
            let off: Vec<&str> = s.engines.iter().filter(|e| !e.on).map(|e| e.name.as_str()).collect();
            out.push_str(&format!(
                "engines:      {}{}\n",
                if on.is_empty() { "none on".to_owned() } else { on.join(", ") },
                if off.is_empty() { String::new() } else { format!("; off: {}", off.join(" ")) }
            ));
        }
        let offline: Vec<String> = s.cpu_cores.iter().filter(|c| !c.online).map(|c| c.id.to_string()).collect();
        if !offline.is_empty() {
            out.push_str(&format!(
                "cores:        {} of {} online (offline: {})\n",
                s.cpu_cores.len() - offline.len(),
                s.cpu_cores.len(),
                offline.join(",")
            ));
        }
    }
    if let (Some(z), Some(c)) = (&r.hottest_zone, r.hottest_c) {
        out.push_str(&format!("hottest:      {z} {c:.1} C\n"));
    }
    if let Some(mw) = r.power_mw {
        let what = match r.power_source.as_deref() {
            Some(crate::host::metrics::POWER_TOTAL_SUM) => "the sum of the rails: no input rail".to_owned(),
            Some(rail) => rail.to_owned(),
            None => "?".to_owned(),
        };
        out.push_str(&format!("power:        {mw} mW ({what})\n"));
    }
    if r.power_mode.is_some() || r.jetson_clocks.is_some() {
        let default = view
            .host
            .as_ref()
            .and_then(|h| h.pointer("/power_modes/default_id"))
            .and_then(Value::as_u64)
            .map(|d| format!(" (default {d})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "power mode:   {}{default}  jetson_clocks {}\n",
            r.power_mode.as_deref().unwrap_or("-"),
            on_off(r.jetson_clocks)
        ));
    }
    let seq = view.telemetry.as_ref().and_then(|t| t.get("seq")).and_then(Value::as_u64);
    out.push_str(&format!("last seen:    {} (telemetry seq {})\n", seen(&r, now_ms), fmt_opt(seq)));
    out
}

/// A short-lived controller connection: one event loop polled inline.
///
/// Failover: `connect` takes the first broker of the list that answers. With more than one broker, a connection
/// lost later moves the session to the next brokers in order, with the usual backoff, until one answers or the
/// deadline passes; the session then renews its subscriptions and [`Session::next`] returns that broker's
/// ConnAck, so a caller that published something whose PubAck it waits for publishes it again.
pub(crate) struct Session {
    el: EventLoop,
    brokers: Brokers,
    /// Subscriptions made so far, renewed after a failover (clean sessions keep none).
    subscriptions: Vec<(Vec<String>, QoS)>,
}

impl Session {
    pub(crate) async fn connect(access: &BrokerAccess, deadline: Instant) -> Result<Session> {
        let id = format!("jetship-cli-{:08x}", rand::random::<u32>());
        let mut brokers = access.brokers(&id, Duration::from_secs(30))?;
        brokers.for_each_mut(|o| {
            o.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        });
        let mut el = EventLoop::new(brokers.current().clone(), 16);
        let mut net = el.network_options();
        net.set_tcp_nodelay(true);
        el.set_network_options(net);
        let mut s = Session { el, brokers, subscriptions: Vec::new() };
        let mut failed = Vec::new();
        for _ in 0..s.brokers.count() {
            match s.handshake(deadline).await {
                Ok(_) => return Ok(s),
                Err(Error::Connect { url, message }) => failed.push((url, message)),
                Err(e) => return Err(e),
            }
            s.el.mqtt_options = s.brokers.advance().clone();
        }
        // An agent's embedded broker closes the connection of a client without its credentials.
        let hint = |message: String| {
            match access.username {
            Some(_) => message,
            None => format!(
                "{message}; if this is an agent's embedded broker, it needs the agent's credentials: run as root on the device (the CLI then reads {}/{}) or pass --username {} --password-file",
                crate::config::DEFAULT_STATE_DIR,
                crate::link::broker::EMBEDDED_PASSWORD_FILE,
                crate::link::broker::EMBEDDED_USER
            ),
        }
        };
        if failed.len() == 1 {
            let (url, message) = failed.remove(0);
            return Err(Error::Connect { url, message: hint(message) });
        }
        let message = failed.iter().map(|(u, m)| format!("{u}: {m}")).collect::<Vec<_>>().join("; ");
        Err(Error::Connect { url: s.brokers.labels(), message: hint(message) })
    }

    /// Polls the event loop, which connects to the current broker, until its ConnAck.
    async fn handshake(&mut self, deadline: Instant) -> Result<Event> {
        loop {
            match tokio::time::timeout_at(deadline, self.el.poll()).await {
                Ok(Ok(ev @ Event::Incoming(Incoming::ConnAck(_)))) => return Ok(ev),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => {
                    return Err(Error::Connect { url: self.brokers.label().to_owned(), message: e.to_string() })
                }
                Err(_) => return Err(Error::Timeout(Duration::ZERO)),
            }
        }
    }

    pub(crate) async fn next(&mut self, deadline: Instant) -> Result<Event> {
        match tokio::time::timeout_at(deadline, self.el.poll()).await {
            Ok(Ok(ev)) => Ok(ev),
            Ok(Err(e)) if self.brokers.has_failover() => self.fail_over(e, deadline).await,
            Ok(Err(e)) => Err(Error::Connect { url: self.brokers.label().to_owned(), message: e.to_string() }),
            Err(_) => Err(Error::Timeout(Duration::ZERO)),
        }
    }

    /// After a lost connection: the next brokers in order, each after the usual backoff, until one answers
    /// (subscriptions renewed, its ConnAck returned) or the deadline passes.
    async fn fail_over(&mut self, lost: rumqttc::ConnectionError, deadline: Instant) -> Result<Event> {
        warn!(broker = %self.brokers.label(), error = %lost, "broker connection lost; trying the next broker");
        let mut attempt = 0;
        loop {
            let delay = backoff(BACKOFF_MIN, BACKOFF_MAX, attempt);
            if Instant::now() + delay >= deadline {
                return Err(Error::Timeout(Duration::ZERO));
            }
            tokio::time::sleep(delay).await;
            self.el.mqtt_options = self.brokers.advance().clone();
            match self.handshake(deadline).await {
                Ok(ev) => {
                    debug!(broker = %self.brokers.label(), "connected to the next broker");
                    for (filters, qos) in self.subscriptions.clone() {
                        self.push_subscribe(filters, qos);
                    }
                    return Ok(ev);
                }
                Err(Error::Connect { url, message }) => debug!(broker = %url, error = %message, "broker not reachable"),
                Err(e) => return Err(e),
            }
            attempt += 1;
        }
    }

    pub(crate) fn subscribe(&mut self, filters: Vec<String>, qos: QoS) {
        self.subscriptions.push((filters.clone(), qos));
        self.push_subscribe(filters, qos);
    }

    fn push_subscribe(&mut self, filters: Vec<String>, qos: QoS) {
        let f = filters.into_iter().map(|f| SubscribeFilter::new(f, qos));
        self.el.pending.push_back(Request::Subscribe(Subscribe::new_many(f)));
    }

    pub(crate) fn publish(&mut self, topic: String, payload: Vec<u8>, qos: QoS) {
        self.el.pending.push_back(Request::Publish(Publish::new(topic, qos, payload)));
    }

    /// Publishes a retained message (QoS 1; the caller waits for the PubAck).
    pub(crate) fn publish_retained(&mut self, topic: String, payload: Vec<u8>) {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
        p.retain = true;
        self.el.pending.push_back(Request::Publish(p));
    }

    pub(crate) fn disconnect(mut self) {
        self.el.pending.push_back(Request::Disconnect(rumqttc::Disconnect));
        // Best effort: the broker drops the session anyway when the socket closes.
        let _ = futures_util::FutureExt::now_or_never(self.el.poll());
    }
}

/// Collects the retained device topics matching `device` (`+` for all) until the broker has sent them all
/// (a sync message published after subscribing comes back after the retained ones) or `limit` passes.
pub async fn snapshot(access: &BrokerAccess, device: &str, limit: Duration) -> Result<BTreeMap<String, DeviceView>> {
    let deadline = Instant::now() + limit;
    let mut s = Session::connect(access, deadline).await.map_err(|e| timeout_as(e, limit))?;
    let sync = format!("jetship/cli/{:016x}/sync", rand::random::<u64>());
    let mut filters: Vec<String> =
        ["status", "host", "telemetry", "reported"].iter().map(|k| format!("{ROOT}/{device}/{k}")).collect();
    filters.push(sync.clone());
    s.subscribe(filters, QoS::AtMostOnce);
    let mut devices = BTreeMap::new();
    loop {
        let ev = match s.next(deadline).await {
            Ok(ev) => ev,
            // Out of time: show what arrived rather than nothing.
            Err(Error::Timeout(_)) => break,
            Err(e) => return Err(e),
        };
        match ev {
            Event::Incoming(Incoming::SubAck(_)) => s.publish(sync.clone(), b"sync".to_vec(), QoS::AtMostOnce),
            Event::Incoming(Incoming::Publish(p)) if p.topic == sync => break,
            Event::Incoming(Incoming::Publish(p)) => apply(&mut devices, &p.topic, &p.payload),
            _ => {}
        }
    }
    measure_skew(&mut s, &mut devices, deadline).await;
    s.disconnect();
    Ok(devices)
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Pings every online device whose telemetry time looks wrong ([`DeviceView::time_looks_wrong`]) and sets its
/// clock skew from the answer's `ts` against this controller's clock at the middle of the round trip. Waits at
/// most [`SKEW_WAIT`] (and never past `deadline`); devices that do not answer stay unmeasured.
async fn measure_skew(s: &mut Session, devices: &mut BTreeMap<String, DeviceView>, deadline: Instant) {
    let now = wall_ms();
    let suspects: Vec<String> = devices.values().filter(|d| d.time_looks_wrong(now)).map(|d| d.id.clone()).collect();
    if suspects.is_empty() {
        return;
    }
    let deadline = deadline.min(Instant::now() + SKEW_WAIT);
    let request_id = format!("skew-{:016x}", rand::random::<u64>());
    let suffix = format!("/reply/{request_id}");
    s.subscribe(vec![format!("{ROOT}/+/reply/{request_id}")], QoS::AtLeastOnce);
    let mut sent: BTreeMap<String, (u64, std::time::Instant)> = BTreeMap::new();
    let mut left = suspects.len();
    while left > 0 {
        let Ok(ev) = s.next(deadline).await else { return };
        match ev {
            Event::Incoming(Incoming::SubAck(_)) if sent.is_empty() => {
                for id in &suspects {
                    let Ok(topics) = Topics::new(id) else { continue };
                    s.publish(topics.cmd(&request_id), br#"{"cmd":"ping"}"#.to_vec(), QoS::AtLeastOnce);
                    sent.insert(id.clone(), (wall_ms(), std::time::Instant::now()));
                }
            }
            Event::Incoming(Incoming::Publish(p)) if p.topic.ends_with(&suffix) => {
                let id = p.topic.strip_prefix(ROOT).and_then(|r| r.strip_prefix('/')).and_then(|r| r.split_once('/'));
                let Some(id) = id.map(|(id, _)| id.to_owned()) else { continue };
                let Some((sent_wall, sent_at)) = sent.get(&id).copied() else { continue };
                let reply: Option<protocol::Reply> = serde_json::from_slice(&p.payload).ok();
                let device_ts = reply.and_then(|r| r.result).and_then(|v| v.get("ts").and_then(Value::as_u64));
                if let (Some(ts), Some(view)) = (device_ts, devices.get_mut(&id)) {
                    let mid = sent_wall + sent_at.elapsed().as_millis() as u64 / 2;
                    view.clock_skew_ms = Some(ts as i64 - mid as i64);
                    left -= 1;
                }
            }
            _ => {}
        }
    }
}

pub(crate) fn timeout_as(e: Error, limit: Duration) -> Error {
    match e {
        Error::Timeout(_) => Error::Timeout(limit),
        e => e,
    }
}

/// Result of one ping.
#[derive(Debug, Clone, Serialize)]
pub struct Pong {
    pub device: String,
    pub request_id: String,
    pub rtt_ms: f64,
    pub reply: protocol::Reply,
}

/// Sends `ping` to `device` and waits for the reply.
pub async fn ping(access: &BrokerAccess, device: &str, limit: Duration) -> Result<Pong> {
    let topics = Topics::new(device)?;
    let deadline = Instant::now() + limit;
    let mut s = Session::connect(access, deadline).await.map_err(|e| timeout_as(e, limit))?;
    let request_id = format!("ping-{:016x}", rand::random::<u64>());
    let reply_topic = topics.reply(&request_id);
    s.subscribe(vec![reply_topic.clone()], QoS::AtLeastOnce);
    let mut sent_at = None;
    loop {
        let ev = s.next(deadline).await.map_err(|e| timeout_as(e, limit))?;
        match ev {
            Event::Incoming(Incoming::SubAck(_)) => {
                s.publish(topics.cmd(&request_id), br#"{"cmd":"ping"}"#.to_vec(), QoS::AtLeastOnce);
                sent_at = Some(std::time::Instant::now());
            }
            Event::Incoming(Incoming::Publish(p)) if p.topic == reply_topic => {
                let rtt = sent_at.map(|t| t.elapsed()).unwrap_or_default();
                let reply: protocol::Reply = serde_json::from_slice(&p.payload)
                    .map_err(|e| Error::Invalid(protocol::Error::NotJson { message: e.to_string() }))?;
                s.disconnect();
                return Ok(Pong { device: device.to_owned(), request_id, rtt_ms: rtt.as_secs_f64() * 1000.0, reply });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(seq: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "seq": seq, "ts": 1_000_000, "ts_ms": 1_000_000,
            "cpu": {"total_pct": 12.5, "per_core_pct": []},
            "memory": {"total_bytes": 8u64 << 30, "available_bytes": 6u64 << 30, "used_bytes": 2u64 << 30},
            "gpu": {"load_pct": 40.0},
            "net": [], "warnings": [],
            "thermal": [{"name": "cpu-thermal", "temp_c": 51.0}, {"name": "gpu-thermal", "temp_c": 55.5}, {"name": "cv0-thermal", "temp_c": null}],
            "power": [{"name": "VDD_IN", "power_mw": 7345}, {"name": "VDD_CPU_GPU_CV", "power_mw": 1200}]
        }))
        .unwrap()
    }

    #[test]
    fn rows_combine_status_host_telemetry_and_reported() {
        let mut d = BTreeMap::new();
        apply(
            &mut d,
            "jetship/v1/orin-1/status",
            br#"{"online":true,"agent_version":"0.1.0","started_at":"x","boot_id":null}"#,
        );
        apply(&mut d, "jetship/v1/orin-1/host", br#"{"model":"NVIDIA Jetson Orin Nano Developer Kit","l4t":{"version":"36.4.3","source":"nv_tegra_release"},"jetpack":"6.2"}"#);
        apply(&mut d, "jetship/v1/orin-1/telemetry", &telemetry(9));
        apply(&mut d, "jetship/v1/orin-1/reported", br#"{"generation":3,"applied_generation":3,"at":"2026-01-02T03:04:05Z","deployments":{"a":{"state":"running","image":"x","digest":null,"started_at":null,"restarts":0,"exit_code":null,"health":null,"error":null,"source":null},"b":{"state":"pulling","done":1,"total":null,"image":"y","digest":null,"started_at":null,"restarts":0,"exit_code":null,"health":null,"error":null,"source":null}}}"#);
        let r = d["orin-1"].row();
        assert_eq!(r.online, Some(true));
        assert_eq!(r.l4t.as_deref(), Some("36.4.3"));
        assert_eq!(r.jetpack.as_deref(), Some("6.2"));
        assert_eq!((r.deployments_running, r.deployments_total), (1, 2));
        assert_eq!(r.cpu_pct, Some(12.5));
        assert_eq!(r.gpu_pct, Some(40.0));
        assert_eq!(r.hottest_zone.as_deref(), Some("gpu-thermal"));
        assert_eq!(r.vdd_in_mw, Some(7345));
        assert_eq!(r.last_seen_ms, Some(1_000_000));
        let t = table(&[r], 1_005_000);
        assert!(
            t.contains("orin-1")
                && t.contains("36.4.3/6.2")
                && t.contains("1/2")
                && t.contains("7.3W")
                && t.contains("5s ago"),
            "{t}"
        );
        assert!(t.contains("Jetson Orin Nano DevKit"), "{t}");
    }

    /// The retained topics of a device whose host facts and telemetry come from a fixture tree.
    fn fixture_view(host: &str, id: &str) -> DeviceView {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts").join(host);
        let state = tempfile::tempdir().unwrap();
        let facts = crate::host::probe::probe(&root, state.path());
        let sample = crate::host::metrics::Sampler::new(root, state.path().to_path_buf()).sample();
        let mut d = BTreeMap::new();
        let status = r#"{"online":true,"agent_version":"0.1.0","started_at":"x","boot_id":null,"groups":["lab"]}"#;
        apply(&mut d, &format!("jetship/v1/{id}/status"), status.as_bytes());
        apply(&mut d, &format!("jetship/v1/{id}/host"), &serde_json::to_vec(&facts).unwrap());
        let telemetry = crate::link::protocol::stream_body(1, sample.ts_ms, 0, &sample);
        apply(&mut d, &format!("jetship/v1/{id}/telemetry"), &telemetry);
        d.remove(id).unwrap()
    }

    #[test]
    fn fleet_view_shows_the_jtop_fields_of_fixture_hosts() {
        let agx = fixture_view("agx-orin-jp62", "agx-1");
        let r = agx.row();
        // No VDD_IN: the power figure is the sum of the rails, marked so; VDD_IN alone stays empty.
        assert_eq!((r.power_mw, r.power_source.as_deref(), r.vdd_in_mw), (Some(10990), Some("sum"), None));
        assert_eq!(r.gpu_shared_bytes, Some(1_843_200 * 1024));
        assert_eq!(r.engines_on, ["APE", "NVDEC", "SE", "VIC"]);
        assert_eq!((r.jetson_clocks, r.power_mode.as_deref()), (Some(false), Some("2 30W")));
        assert_eq!((r.cuda.as_deref(), r.tensorrt.as_deref()), (Some("12.6.68"), Some("10.3.0.30")));
        assert_eq!(r.groups, ["lab"]);
        let xavier = fixture_view("xavier-nx-jp513", "xavier-1");
        let x = xavier.row();
        // PMIC-Die's fixed 100 °C is not the hottest.
        assert_eq!((x.hottest_zone.as_deref(), x.hottest_c), (Some("CPU-therm"), Some(44.5)));
        assert_eq!((x.power_mw, x.power_source.as_deref(), x.vdd_in_mw), (Some(8184), Some("VDD_IN"), Some(8184)));
        assert_eq!(x.jetson_clocks, Some(true));
        let t = table(&[r, x], 0);
        let lines: Vec<&str> = t.lines().collect();
        let cols: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "DEVICE",
                "ONLINE",
                "MODEL",
                "L4T/JETPACK",
                "CUDA/TRT",
                "DEPLOY",
                "CPU",
                "GPU",
                "RAM",
                "GiB",
                "GPU",
                "MEM",
                "HOTTEST",
                "POWER",
                "MODE",
                "CLOCKS",
                "ENGINES",
                "LAST",
                "SEEN"
            ]
        );
        for want in ["12.6.68/10.3.0.30", "1.8", "tj-thermal 47C", "11.0W (sum)", "2 30W", "APE,NVDEC,SE,VIC"] {
            assert!(lines[1].contains(want), "agx line lacks `{want}`:\n{t}");
        }
        for want in ["11.4.298/8.5.2", "0.5", "CPU-therm 44C", "8.2W", "8 MODE_20W_6CORE", "on", "APE,DLA0,NVENC,VIC"] {
            assert!(lines[2].contains(want), "xavier line lacks `{want}`:\n{t}");
        }
        assert!(!t.contains("PMIC"), "{t}");
        let detail = detail(&agx, 0);
        for want in [
            "groups:       lab\n",
            "installed:    cuda 12.6.68  cudnn 9.3.0.75  tensorrt 10.3.0.30  vpi 3.2.4  opencv 4.8.0\n",
            "serial:       1421623021393  part 699-13701-0005-500 M.0\n",
            "ram:          7.7 / 61.4 GiB used (not available), 7.9 GiB as tegrastats counts\n",
            "gpu memory:   1.8 GiB (NvMap, out of the same RAM)\n",
            "engines:      APE 200 MHz, NVDEC 704 MHz, SE 633 MHz, VIC 729 MHz; off: DLA0 DLA1 NVENC NVJPG OFA PVA0\n",
            "cores:        8 of 12 online (offline: 8,9,10,11)\n",
            "hottest:      tj-thermal 47.2 C\n",
            "power:        10990 mW (the sum of the rails: no input rail)\n",
            "power mode:   2 30W (default 2)  jetson_clocks off\n",
        ] {
            assert!(detail.contains(want), "status lacks `{want}`:\n{detail}");
        }
        assert!(super::detail(&xavier, 0).contains("power:        8184 mW (VDD_IN)\n"));
    }

    #[test]
    fn older_telemetry_does_not_replace_newer_and_garbage_is_skipped() {
        let mut d = BTreeMap::new();
        apply(&mut d, "jetship/v1/a/telemetry", &telemetry(9));
        apply(&mut d, "jetship/v1/a/telemetry", &telemetry(3));
        apply(&mut d, "jetship/v1/a/status", b"not json");
        apply(&mut d, "jetship/v1/bad.id/status", br#"{"online":true}"#);
        apply(&mut d, "jetship/v1/a/cmd/x", b"{}");
        assert_eq!(d["a"].telemetry.as_ref().unwrap()["seq"], 9);
        assert!(d["a"].status.is_none());
        assert_eq!(d.len(), 1);
        let r = d["a"].row();
        assert_eq!(r.online, None);
        assert!(table(&[r], 0).contains("?"));
    }

    #[test]
    fn a_skewed_clock_is_measured_not_shown_as_a_stale_age() {
        let mut d = BTreeMap::new();
        apply(&mut d, "jetship/v1/a/status", br#"{"online":true,"agent_version":"0","started_at":"x","boot_id":null}"#);
        apply(&mut d, "jetship/v1/a/telemetry", &telemetry(9)); // ts 1_000_000
        let hour = 3_600_000;
        // The device's clock is an hour behind: its fresh sample looks an hour old.
        let now = 1_000_000 + hour + 2_000;
        assert!(d["a"].time_looks_wrong(now));
        assert!(table(&[d["a"].row()], now).contains("60m ago"), "unmeasured, the raw age shows");
        d.get_mut("a").unwrap().clock_skew_ms = Some(-(hour as i64));
        let r = d["a"].row();
        assert_eq!(r.last_seen_ms, Some(1_000_000 + hour));
        let t = table(&[r], now);
        assert!(t.contains("2s ago (clock -60m)"), "{t}");
        // Ahead, and a device that is offline: no measurement wanted.
        assert!(d["a"].time_looks_wrong(1_000_000 - 10_000));
        assert!(!d["a"].time_looks_wrong(1_000_000 + 3_000));
        apply(
            &mut d,
            "jetship/v1/a/status",
            br#"{"online":false,"agent_version":"0","started_at":"x","boot_id":null}"#,
        );
        assert!(!d["a"].time_looks_wrong(now));
    }

    #[test]
    fn flags_and_env_override_the_cli_file() {
        let file =
            CliBroker { url: Some("mqtts://file:8883".into()), username: Some("ops".into()), ..Default::default() };
        let over = CliBroker { url: Some("mqtt://flag:1883".into()), ..Default::default() };
        let a = resolve_access(&file, &over);
        assert_eq!(a.url, "mqtt://flag:1883");
        assert!(a.failover_urls.is_empty());
        assert_eq!(a.username.as_deref(), Some("ops"));
        assert_eq!(resolve_access(&CliBroker::default(), &CliBroker::default()).url, DEFAULT_BROKER);
    }

    #[test]
    fn a_broker_list_replaces_the_other_layers_list_as_a_whole() {
        let list = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let file = CliBroker { urls: list(&["mqtt://f1", "mqtt://f2"]), ..Default::default() };
        let a = resolve_access(&file, &CliBroker::default());
        assert_eq!(a.urls(), ["mqtt://f1", "mqtt://f2"]);
        let over = CliBroker { urls: list(&["mqtt://a", "mqtt://b", "mqtt://c"]), ..Default::default() };
        assert_eq!(resolve_access(&file, &over).urls(), ["mqtt://a", "mqtt://b", "mqtt://c"]);
        let over = CliBroker { url: Some("mqtt://one".into()), ..Default::default() };
        assert_eq!(resolve_access(&file, &over).urls(), ["mqtt://one"], "one flag url replaces the file's list");
        let file = CliBroker { url: Some("mqtt://f".into()), urls: list(&[]), ..Default::default() };
        assert_eq!(resolve_access(&file, &CliBroker::default()).urls(), ["mqtt://f"], "an empty list names none");
    }

    #[test]
    fn cli_file_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cli.toml");
        std::fs::write(&p, "[broker]\nurll = \"x\"\n").unwrap();
        let err = load_cli_file(&p).unwrap_err().to_string();
        assert!(err.contains("cli.toml") && err.contains("urll"), "{err}");
        std::fs::write(&p, "[broker]\nurl = \"mqtt://h\"\n").unwrap();
        assert_eq!(load_cli_file(&p).unwrap().broker.url.as_deref(), Some("mqtt://h"));
        std::fs::write(&p, "[broker]\nurl = \"mqtt://h\"\nurls = [\"mqtt://a\", \"mqtt://b\"]\n").unwrap();
        let err = load_cli_file(&p).unwrap_err().to_string();
        assert!(err.contains("cli.toml") && err.contains("`url` and `urls`"), "{err}");
        assert_eq!(load_cli_file(&dir.path().join("none.toml")).unwrap(), CliFile::default());
    }
}
