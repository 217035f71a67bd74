//! What the exporter knows about the fleet: per device, the last presence, host facts, telemetry sample and
//! deployment states read from the device topics, plus counters of telemetry drops and events, all bounded by
//! [`Limits`]. Every payload is parsed into the few fields the metrics need ([`parse`]) before the state is
//! touched, so the lock around the state is held only to merge.
//!
//! Pure: no IO and no clock; callers pass the time (Unix ms). It must not format metrics (`render`) or talk to
//! the broker (`subscriber`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::deploy::plan::DeploymentState;
use crate::deploy::report::Reported;
use crate::host::metrics::{zone_measures_temperature, Cpu, Disk, Fan, Gpu, Memory, PowerMode, PowerRail, ThermalZone};
use crate::link::protocol::{self, DeviceTopic, Status};

/// The bounds on memory and cardinality. What happens at each is in docs/monitoring.md and is counted in
/// `jetship_exporter_dropped_total{reason}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Devices tracked at once; messages of further devices are dropped (`device_limit`).
    pub max_devices: usize,
    /// Deployments per device; the ones after it (in name order) are left out (`deployment_limit`).
    pub max_deployments: usize,
    /// Thermal zones per device; later zones are left out (`zone_limit`).
    pub max_zones: usize,
    /// Power rails per device; later rails are left out (`rail_limit`).
    pub max_rails: usize,
    /// Groups per device (from `reported.sources`); later groups are left out (`group_limit`).
    pub max_groups: usize,
    /// Longest label value in bytes; longer ones are cut at a character boundary (counted in
    /// `jetship_exporter_label_values_truncated_total`).
    pub max_label_bytes: usize,
    /// Largest payload parsed; larger messages are dropped (`too_large`).
    pub max_payload_bytes: usize,
    /// An offline device whose last sign of life is older than this is forgotten (ms).
    pub forget_after_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_devices: 10_000,
            max_deployments: 32,
            max_zones: 32,
            max_rails: 16,
            max_groups: 8,
            max_label_bytes: 128,
            max_payload_bytes: protocol::MAX_INCOMING_BYTES,
            forget_after_ms: 24 * 3600 * 1000,
        }
    }
}

/// Why a message, or part of one, was not kept. The names are the `reason` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Discard {
    DeviceLimit,
    DeploymentLimit,
    ZoneLimit,
    RailLimit,
    GroupLimit,
    TooLarge,
    Invalid,
}

impl Discard {
    pub(crate) const ALL: [Discard; 7] = [
        Discard::DeviceLimit,
        Discard::DeploymentLimit,
        Discard::ZoneLimit,
        Discard::RailLimit,
        Discard::GroupLimit,
        Discard::TooLarge,
        Discard::Invalid,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Discard::DeviceLimit => "device_limit",
            Discard::DeploymentLimit => "deployment_limit",
            Discard::ZoneLimit => "zone_limit",
            Discard::RailLimit => "rail_limit",
            Discard::GroupLimit => "group_limit",
            Discard::TooLarge => "too_large",
            Discard::Invalid => "invalid",
        }
    }
}

/// The device topics the exporter reads, in `jetship_exporter_messages_total{topic}` order.
pub(crate) const TOPICS: [&str; 5] = ["status", "host", "telemetry", "reported", "events"];

/// Every deployment state name, in [`state_index`] order (`jetship_deployment_state{state}`).
pub(crate) const STATES: [&str; 13] = [
    "pending",
    "resolving",
    "pulling",
    "starting",
    "health-checking",
    "running",
    "unhealthy",
    "restarting",
    "waiting-for-device",
    "failed",
    "rolled-back",
    "completed",
    "removing",
];

/// The index of a state in [`STATES`]. Exhaustive, so a new state cannot be forgotten here.
pub(crate) fn state_index(s: &DeploymentState) -> usize {
    use DeploymentState as S;
    match s {
        S::Pending => 0,
        S::Resolving => 1,
        S::Pulling { .. } => 2,
        S::Starting => 3,
        S::HealthChecking => 4,
        S::Running => 5,
        S::Unhealthy { .. } => 6,
        S::Restarting { .. } => 7,
        S::WaitingForDevice { .. } => 8,
        S::Failed { .. } => 9,
        S::RolledBack { .. } => 10,
        S::Completed => 11,
        S::Removing => 12,
    }
}

/// Event kinds counted by name (docs/protocol.md); any other kind counts as `other`.
pub(crate) const EVENT_KINDS: [&str; 8] = [
    "agent_started",
    "agent_stopping",
    "host_changed",
    "desired_accepted",
    "desired_rejected",
    "deployment",
    "pull-progress",
    "other",
];

/// Host facts that become labels of `jetship_device_info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostFacts {
    pub model: String,
    pub l4t: String,
    pub jetpack: String,
    pub soc: String,
    pub module: String,
}

/// The part of one telemetry sample that becomes metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sample {
    pub cpu_ratio: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub gpu_load_ratio: Option<f64>,
    pub gpu_frequency_hz: Option<u64>,
    /// Zones with a reading; unreadable ones (Orin's cv* zones while off) are left out.
    pub zones: Vec<(String, f64)>,
    pub rails_watts: Vec<(String, f64)>,
    pub fan_pwm_ratio: Option<f64>,
    /// nvpmodel id and name (empty when not named).
    pub power_mode: Option<(u32, String)>,
    pub disk_free_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
}

/// One deployment as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Deployment {
    pub name: String,
    /// Index into [`STATES`].
    pub state: usize,
    pub restarts: u32,
}

/// What is known about one device.
#[derive(Debug, Clone, Default)]
pub(crate) struct Device {
    /// From `status`; `None` until one arrives.
    pub online: Option<bool>,
    pub agent_version: String,
    /// Exporter time when the device was last seen going online: a sample received before it is stale.
    pub online_since_ms: u64,
    pub host: HostFacts,
    pub sample: Option<Sample>,
    /// Exporter time the sample arrived.
    pub sample_at_ms: u64,
    /// `ts` of the newest telemetry (the device's clock, Unix ms).
    pub last_seen_ms: Option<u64>,
    /// Exporter time of the last message of any kind.
    pub heard_at_ms: u64,
    /// `seq` and `ts` of the newest telemetry and event, to drop resent duplicates.
    telemetry_mark: Option<(u64, u64)>,
    events_mark: Option<(u64, u64)>,
    /// Sum of `dropped` over the telemetry received.
    pub spool_dropped: u64,
    /// Events received, by [`EVENT_KINDS`] index.
    pub events: [u64; EVENT_KINDS.len()],
    /// In name order, at most `max_deployments`.
    pub deployments: Vec<Deployment>,
    /// The groups whose documents the device applies, sorted, joined with `,` (the `group` label).
    pub groups: String,
    /// The same, one by one.
    pub group_list: Vec<String>,
}

impl Device {
    /// Whether the device's measurements (telemetry, deployment states) are exported: it is online.
    pub(crate) fn live(&self) -> bool {
        self.online == Some(true)
    }

    /// The current sample: the device is online and the sample arrived while it was (a sample from before it
    /// went offline is stale until a new one replaces it).
    pub(crate) fn live_sample(&self) -> Option<&Sample> {
        self.sample.as_ref().filter(|_| self.live() && self.sample_at_ms >= self.online_since_ms)
    }
}

/// A payload reduced to what the state keeps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Update {
    Status {
        online: bool,
        agent_version: String,
    },
    Host(HostFacts),
    Telemetry {
        seq: Option<u64>,
        ts: Option<u64>,
        dropped: u64,
        sample: Sample,
    },
    Reported {
        deployments: Vec<Deployment>,
        groups: Vec<String>,
        /// The `group` label: the groups joined with `,`, cut to the label limit like any label value.
        joined: String,
    },
    Event {
        seq: Option<u64>,
        ts: Option<u64>,
        kind: usize,
    },
    /// An empty retained payload: the topic was cleared. For `status` the device is forgotten.
    Cleared(DeviceTopic),
}

/// One parsed message: its device, its update, and what was cut to fit the limits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    pub device: String,
    pub topic: usize,
    pub update: Result<Update, Discard>,
    /// Items left out per reason (zones over the limit, ...).
    pub cut: Vec<(Discard, u64)>,
    pub truncated_labels: u64,
}

/// The telemetry fields the exporter reads. Sub-objects are the sampler's own types, so the names cannot drift
/// from what the agent sends.
#[derive(Deserialize)]
struct TelemetryMsg {
    seq: Option<u64>,
    ts: Option<u64>,
    #[serde(default)]
    dropped: u64,
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    gpu: Option<Gpu>,
    #[serde(default)]
    thermal: Vec<ThermalZone>,
    #[serde(default)]
    power: Vec<PowerRail>,
    fan: Option<Fan>,
    power_mode: Option<PowerMode>,
    disk: Option<Disk>,
}

#[derive(Deserialize)]
struct HostMsg {
    model: Option<String>,
    l4t: Option<L4tMsg>,
    jetpack: Option<String>,
    soc: Option<String>,
    module: Option<String>,
}

#[derive(Deserialize)]
struct L4tMsg {
    version: Option<String>,
}

#[derive(Deserialize)]
struct EventMsg {
    seq: Option<u64>,
    ts: Option<u64>,
    kind: Option<String>,
}

/// Cuts label values to the limit.
struct Labels<'a> {
    max: usize,
    truncated: &'a mut u64,
}

impl Labels<'_> {
    fn cut(&mut self, s: String) -> String {
        if s.len() <= self.max {
            return s;
        }
        *self.truncated += 1;
        let mut end = self.max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    }

    fn opt(&mut self, s: Option<String>) -> String {
        s.map(|s| self.cut(s)).unwrap_or_default()
    }
}

/// Percent (rounded to 0.01 by the agent) to a ratio without binary noise: 24.2 -> 0.242.
fn ratio(pct: f64) -> f64 {
    (pct * 100.0).round() / 10_000.0
}

/// Parses a message on a device topic. `None` for topics the exporter does not read (and invalid device ids:
/// a topic level is never trusted unchecked).
pub(crate) fn parse(topic: &str, payload: &[u8], limits: &Limits) -> Option<Parsed> {
    let (device, kind) = protocol::parse_device_topic(topic)?;
    let topic_index = match kind {
        DeviceTopic::Status => 0,
        DeviceTopic::Host => 1,
        DeviceTopic::Telemetry => 2,
        DeviceTopic::Reported => 3,
        DeviceTopic::Events => 4,
        DeviceTopic::Desired => return None,
    };
    let mut p = Parsed {
        device: device.to_owned(),
        topic: topic_index,
        update: Err(Discard::Invalid),
        cut: Vec::new(),
        truncated_labels: 0,
    };
    if payload.is_empty() {
        p.update = Ok(Update::Cleared(kind));
        return Some(p);
    }
    if payload.len() > limits.max_payload_bytes {
        p.update = Err(Discard::TooLarge);
        return Some(p);
    }
    let mut truncated = 0;
    let mut labels = Labels { max: limits.max_label_bytes, truncated: &mut truncated };
    let mut cut = Vec::new();
    let update = match kind {
        DeviceTopic::Status => serde_json::from_slice::<Status>(payload)
            .ok()
            .map(|s| Update::Status { online: s.online, agent_version: labels.cut(s.agent_version) }),
        DeviceTopic::Host => serde_json::from_slice::<HostMsg>(payload).ok().map(|h| {
            Update::Host(HostFacts {
                model: labels.opt(h.model),
                l4t: labels.opt(h.l4t.and_then(|l| l.version)),
                jetpack: labels.opt(h.jetpack),
                soc: labels.opt(h.soc),
                module: labels.opt(h.module),
            })
        }),
        DeviceTopic::Telemetry => serde_json::from_slice::<TelemetryMsg>(payload).ok().map(|t| {
            // A zone that is no temperature (PMIC-Die's fixed 100 °C) would trip the temperature alerts.
            let zones: Vec<(String, f64)> = t
                .thermal
                .into_iter()
                .filter(|z| z.measures_temperature && zone_measures_temperature(&z.name))
                .filter_map(|z| z.temp_c.filter(|c| c.is_finite()).map(|c| (z.name, c)))
                .collect();
            let rails = t.power;
            let (zones, over) = take(zones, limits.max_zones);
            cut.push((Discard::ZoneLimit, over));
            let (rails, over) = take(rails, limits.max_rails);
            cut.push((Discard::RailLimit, over));
            let sample = Sample {
                cpu_ratio: t.cpu.map(|c| ratio(c.total_pct)).filter(|r| r.is_finite()),
                memory_used_bytes: t.memory.as_ref().map(|m| m.used_bytes),
                memory_total_bytes: t.memory.as_ref().map(|m| m.total_bytes),
                gpu_load_ratio: t.gpu.as_ref().and_then(|g| g.load_pct).map(ratio).filter(|r| r.is_finite()),
                gpu_frequency_hz: t.gpu.as_ref().and_then(|g| g.cur_freq_hz),
                zones: zones.into_iter().map(|(n, c)| (labels.cut(n), c)).collect(),
                rails_watts: rails.into_iter().map(|r| (labels.cut(r.name), r.power_mw as f64 / 1000.0)).collect(),
                fan_pwm_ratio: t.fan.and_then(|f| f.pwm).map(|p| f64::from(p.min(255)) / 255.0),
                power_mode: t.power_mode.map(|m| (m.id, labels.opt(m.name))),
                disk_free_bytes: t.disk.as_ref().map(|d| d.available_bytes),
                disk_total_bytes: t.disk.as_ref().map(|d| d.total_bytes),
            };
            Update::Telemetry { seq: t.seq, ts: t.ts, dropped: t.dropped, sample }
        }),
        DeviceTopic::Reported => serde_json::from_slice::<Reported>(payload).ok().map(|r| {
            let all: Vec<Deployment> = r
                .deployments
                .into_iter()
                .map(|(name, d)| Deployment { name, state: state_index(&d.state), restarts: d.restarts })
                .collect();
            let (deployments, over) = take(all, limits.max_deployments);
            cut.push((Discard::DeploymentLimit, over));
            let mut groups: Vec<String> =
                r.sources.into_keys().filter_map(|s| s.strip_prefix("group:").map(str::to_owned)).collect();
            groups.sort();
            let (groups, over) = take(groups, limits.max_groups);
            cut.push((Discard::GroupLimit, over));
            let groups: Vec<String> = groups.into_iter().map(|g| labels.cut(g)).collect();
            Update::Reported {
                deployments: deployments.into_iter().map(|d| Deployment { name: labels.cut(d.name), ..d }).collect(),
                joined: labels.cut(groups.join(",")),
                groups,
            }
        }),
        DeviceTopic::Events => serde_json::from_slice::<EventMsg>(payload).ok().map(|e| {
            let kind = e.kind.as_deref().unwrap_or("");
            let kind = EVENT_KINDS.iter().position(|k| *k == kind).unwrap_or(EVENT_KINDS.len() - 1);
            Update::Event { seq: e.seq, ts: e.ts, kind }
        }),
        DeviceTopic::Desired => None,
    };
    p.update = update.ok_or(Discard::Invalid);
    p.cut = cut.into_iter().filter(|(_, n)| *n > 0).collect();
    p.truncated_labels = truncated;
    Some(p)
}

fn take<T>(mut v: Vec<T>, max: usize) -> (Vec<T>, u64) {
    let over = v.len().saturating_sub(max) as u64;
    v.truncate(max);
    (v, over)
}

/// Whether a stream message is new: a higher `seq`, or a newer `ts` (a device whose spool was reset starts
/// again at seq 1). A resend after a reconnect has neither.
fn newer(mark: Option<(u64, u64)>, seq: Option<u64>, ts: Option<u64>) -> bool {
    match (mark, seq, ts) {
        (None, _, _) => true,
        (Some((s0, t0)), s, t) => {
            s.is_some_and(|s| s > s0) || t.is_some_and(|t| t > t0) || (s.is_none() && t.is_none())
        }
    }
}

/// The exporter's own counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    /// By [`TOPICS`] index.
    pub messages: [u64; TOPICS.len()],
    pub dropped: BTreeMap<Discard, u64>,
    pub truncated_labels: u64,
    pub forgotten: u64,
}

/// The fleet as the exporter sees it.
#[derive(Debug, Default)]
pub(crate) struct Fleet {
    pub devices: BTreeMap<String, Device>,
    pub counters: Counters,
    pub limits: Limits,
}

impl Fleet {
    pub(crate) fn new(limits: Limits) -> Fleet {
        Fleet { limits, ..Default::default() }
    }

    fn count_drop(&mut self, reason: Discard, n: u64) {
        *self.counters.dropped.entry(reason).or_default() += n;
    }

    /// Merges one parsed message received at `now_ms`.
    pub(crate) fn apply(&mut self, p: Parsed, now_ms: u64) {
        self.counters.messages[p.topic] += 1;
        self.counters.truncated_labels += p.truncated_labels;
        for (reason, n) in &p.cut {
            self.count_drop(*reason, *n);
        }
        let update = match p.update {
            Ok(u) => u,
            Err(reason) => return self.count_drop(reason, 1),
        };
        if let Update::Cleared(DeviceTopic::Status) = update {
            if self.devices.remove(&p.device).is_some() {
                self.counters.forgotten += 1;
            }
            return;
        }
        if !self.devices.contains_key(&p.device) {
            if matches!(update, Update::Cleared(_)) {
                return;
            }
            if self.devices.len() >= self.limits.max_devices {
                return self.count_drop(Discard::DeviceLimit, 1);
            }
        }
        let d = self.devices.entry(p.device).or_default();
        d.heard_at_ms = now_ms;
        match update {
            Update::Status { online, agent_version } => {
                if online && d.online != Some(true) {
                    d.online_since_ms = now_ms;
                }
                d.online = Some(online);
                d.agent_version = agent_version;
            }
            Update::Host(h) => d.host = h,
            Update::Telemetry { seq, ts, dropped, sample } => {
                if newer(d.telemetry_mark, seq, ts) {
                    d.telemetry_mark = Some((seq.unwrap_or(0), ts.unwrap_or(0)));
                    d.spool_dropped += dropped;
                    d.last_seen_ms = ts.or(d.last_seen_ms);
                    d.sample = Some(sample);
                    d.sample_at_ms = now_ms;
                }
            }
            Update::Reported { deployments, groups, joined } => {
                d.groups = joined;
                d.group_list = groups;
                d.deployments = deployments;
            }
            Update::Event { seq, ts, kind } => {
                if newer(d.events_mark, seq, ts) {
                    d.events_mark = Some((seq.unwrap_or(0), ts.unwrap_or(0)));
                    d.events[kind] += 1;
                }
            }
            Update::Cleared(DeviceTopic::Host) => d.host = HostFacts::default(),
            Update::Cleared(DeviceTopic::Telemetry) => d.sample = None,
            Update::Cleared(DeviceTopic::Reported) => {
                d.deployments.clear();
                d.groups.clear();
                d.group_list.clear();
            }
            Update::Cleared(_) => {}
        }
    }

    /// Forgets devices that are offline (or never said) and whose last sign of life, the newest telemetry `ts`
    /// or else when the exporter last heard of them, is older than `forget_after_ms`. Returns how many.
    pub(crate) fn forget_stale(&mut self, now_ms: u64) -> usize {
        let limit = self.limits.forget_after_ms;
        let before = self.devices.len();
        self.devices.retain(|_, d| {
            let last = d.last_seen_ms.unwrap_or(d.heard_at_ms);
            d.online == Some(true) || now_ms.saturating_sub(last) <= limit
        });
        let n = before - self.devices.len();
        self.counters.forgotten += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn status(online: bool) -> Vec<u8> {
        format!(r#"{{"online":{online},"agent_version":"0.1.0","started_at":"2026-01-01T00:00:00Z","boot_id":null}}"#)
            .into_bytes()
    }

    fn telemetry(seq: u64, ts: u64, dropped: u64, cpu: f64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "seq": seq, "ts": ts, "dropped": dropped, "ts_ms": ts,
            "cpu": {"total_pct": cpu, "per_core_pct": [cpu]},
            "memory": {"total_bytes": 8u64 << 30, "available_bytes": 6u64 << 30, "used_bytes": 2u64 << 30},
            "gpu": {"load_pct": 30.5, "cur_freq_hz": 612_000_000u64, "min_freq_hz": null, "max_freq_hz": null},
            "thermal": [{"name": "cpu-thermal", "temp_c": 44.125}, {"name": "cv0-thermal", "temp_c": null}],
            "power": [{"name": "VDD_IN", "voltage_mv": 5000, "current_ma": 591, "power_mw": 2957}],
            "fan": {"pwm": 77, "rpm": 1529},
            "power_mode": {"id": 2, "name": "MAXN_SUPER"},
            "disk": {"path": "/var/lib/jetship", "total_bytes": 1000, "available_bytes": 400, "used_bytes": 600},
            "net": [], "warnings": []
        }))
        .unwrap()
    }

    fn apply(f: &mut Fleet, topic: &str, payload: &[u8], now: u64) {
        let p = parse(topic, payload, &f.limits.clone()).expect("a device topic");
        f.apply(p, now);
    }

    #[test]
    fn a_telemetry_sample_becomes_base_unit_values() {
        let mut f = Fleet::new(Limits::default());
        apply(&mut f, "jetship/v1/d1/status", &status(true), 10);
        apply(&mut f, "jetship/v1/d1/telemetry", &telemetry(5, 1_000, 0, 24.2), 20);
        let d = &f.devices["d1"];
        let s = d.live_sample().expect("live");
        assert_eq!(s.cpu_ratio, Some(0.242));
        assert_eq!(s.gpu_load_ratio, Some(0.305));
        assert_eq!(s.gpu_frequency_hz, Some(612_000_000));
        assert_eq!((s.memory_used_bytes, s.memory_total_bytes), (Some(2 << 30), Some(8 << 30)));
        assert_eq!(s.zones, [("cpu-thermal".to_owned(), 44.125)], "unreadable zones are left out");
        assert_eq!(s.rails_watts, [("VDD_IN".to_owned(), 2.957)]);
        assert_eq!(s.fan_pwm_ratio, Some(77.0 / 255.0));
        assert_eq!(s.power_mode, Some((2, "MAXN_SUPER".to_owned())));
        assert_eq!((s.disk_free_bytes, s.disk_total_bytes), (Some(400), Some(1000)));
        assert_eq!(d.last_seen_ms, Some(1_000));
    }

    #[test]
    fn the_agents_own_sample_is_read_field_for_field() {
        // A real sample of the Orin Nano fixture, serialized as the agent does: drift in names breaks this.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/orin-nano-super-jp62");
        let dir = tempfile::tempdir().unwrap();
        let sample = crate::host::metrics::Sampler::new(root, dir.path().to_path_buf()).sample();
        let body = protocol::stream_body(1, 5, 0, &sample);
        let p = parse("jetship/v1/orin/telemetry", &body, &Limits::default()).unwrap();
        let Ok(Update::Telemetry { sample: s, .. }) = p.update else { panic!("{p:?}") };
        assert_eq!(s.cpu_ratio, sample.cpu.as_ref().map(|c| ratio(c.total_pct)));
        assert_eq!(s.memory_used_bytes, sample.memory.as_ref().map(|m| m.used_bytes));
        assert_eq!(s.gpu_frequency_hz, sample.gpu.as_ref().and_then(|g| g.cur_freq_hz));
        assert!(s.gpu_frequency_hz.is_some() && s.fan_pwm_ratio.is_some() && s.power_mode.is_some());
        let readable = sample.thermal.iter().filter(|z| z.temp_c.is_some()).count();
        assert!(readable > 0 && s.zones.len() == readable, "{:?}", s.zones);
        assert_eq!(s.rails_watts.len(), sample.power.len());
        assert_eq!(s.disk_total_bytes, sample.disk.as_ref().map(|d| d.total_bytes));
    }

    #[test]
    fn zones_that_are_no_temperature_are_not_exported() {
        // xavier-nx-jp513's PMIC-Die reads a fixed 100 °C: exported, it would fire JetshipTemperatureNearThrottle.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/xavier-nx-jp513");
        let dir = tempfile::tempdir().unwrap();
        let sample = crate::host::metrics::Sampler::new(root, dir.path().to_path_buf()).sample();
        let body = protocol::stream_body(1, 5, 0, &sample);
        let p = parse("jetship/v1/xavier/telemetry", &body, &Limits::default()).unwrap();
        let Ok(Update::Telemetry { sample: s, .. }) = p.update else { panic!("{p:?}") };
        let names: Vec<&str> = s.zones.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["CPU-therm", "GPU-therm", "AUX-therm", "AO-therm", "Tboard_tegra", "Tdiode_tegra", "thermal-fan-est"]
        );
        // An older agent's telemetry has no `measures_temperature`: the zone's name decides.
        let old =
            br#"{"seq":1,"ts":5,"thermal":[{"name":"PMIC-Die","temp_c":100.0},{"name":"CPU-therm","temp_c":44.5}]}"#;
        let p = parse("jetship/v1/old/telemetry", old, &Limits::default()).unwrap();
        let Ok(Update::Telemetry { sample: s, .. }) = p.update else { panic!("{p:?}") };
        assert_eq!(s.zones, [("CPU-therm".to_owned(), 44.5)]);
    }

    #[test]
    fn offline_devices_keep_identity_but_no_samples_and_a_stale_sample_is_not_revived() {
        let mut f = Fleet::new(Limits::default());
        apply(&mut f, "jetship/v1/d1/status", &status(true), 10);
        apply(&mut f, "jetship/v1/d1/telemetry", &telemetry(1, 100, 0, 5.0), 11);
        assert!(f.devices["d1"].live_sample().is_some());
        apply(&mut f, "jetship/v1/d1/status", &status(false), 12);
        assert!(f.devices["d1"].live_sample().is_none());
        assert_eq!(f.devices["d1"].last_seen_ms, Some(100));
        // Back online: the sample from before is stale until a new one arrives.
        apply(&mut f, "jetship/v1/d1/status", &status(true), 13);
        assert!(f.devices["d1"].live_sample().is_none());
        apply(&mut f, "jetship/v1/d1/telemetry", &telemetry(2, 200, 0, 6.0), 14);
        assert_eq!(f.devices["d1"].live_sample().unwrap().cpu_ratio, Some(0.06));
    }

    #[test]
    fn resent_telemetry_is_not_counted_twice_and_a_reset_spool_is_followed() {
        let mut f = Fleet::new(Limits::default());
        apply(&mut f, "jetship/v1/d1/status", &status(true), 1);
        apply(&mut f, "jetship/v1/d1/telemetry", &telemetry(7, 700, 3, 1.0), 2);
        apply(&mut f, "jetship/v1/d1/telemetry", &telemetry(7, 700, 3, 1.0), 3);
        apply(&mut f, "jetship/v1/d1/telemetry", &telemetry(6, 600, 0, 9.0), 4);
        assert_eq!(f.devices["d1"].spool_dropped, 3);
        assert_eq!(f.devices["d1"].live_sample().unwrap().cpu_ratio, Some(0.01));
        apply(&mut f, "jetship/v1/d1/telemetry", &telemetry(8, 800, 2, 2.0), 5);
        assert_eq!(f.devices["d1"].spool_dropped, 5);
        // State dir wiped: seq starts again at 1, with a newer clock.
        apply(&mut f, "jetship/v1/d1/telemetry", &telemetry(1, 900, 0, 4.0), 6);
        assert_eq!(f.devices["d1"].live_sample().unwrap().cpu_ratio, Some(0.04));
        assert_eq!(f.devices["d1"].last_seen_ms, Some(900));
    }

    #[test]
    fn events_are_counted_by_kind_once() {
        let mut f = Fleet::new(Limits::default());
        let ev = |seq: u64, kind: &str| format!(r#"{{"seq":{seq},"ts":{seq},"kind":"{kind}"}}"#).into_bytes();
        apply(&mut f, "jetship/v1/d1/events", &ev(1, "agent_started"), 1);
        apply(&mut f, "jetship/v1/d1/events", &ev(2, "desired_rejected"), 1);
        apply(&mut f, "jetship/v1/d1/events", &ev(2, "desired_rejected"), 1);
        apply(&mut f, "jetship/v1/d1/events", &ev(3, "made-up\\nkind"), 1);
        let e = f.devices["d1"].events;
        let at = |k: &str| e[EVENT_KINDS.iter().position(|x| *x == k).unwrap()];
        assert_eq!((at("agent_started"), at("desired_rejected"), at("other")), (1, 1, 1));
    }

    fn reported(deployments: &[(&str, &str)], sources: &[&str]) -> Vec<u8> {
        let deps: serde_json::Map<String, serde_json::Value> = deployments
            .iter()
            .map(|(n, s)| {
                let mut v = serde_json::json!({"state": s, "image": "x", "digest": null, "started_at": null,
                    "restarts": 2, "exit_code": null, "health": null, "error": null, "source": null});
                if *s == "failed" || *s == "rolled-back" {
                    v["reason"] = "boom".into();
                }
                (n.to_string(), v)
            })
            .collect();
        let sources: serde_json::Map<String, serde_json::Value> =
            sources.iter().map(|s| (s.to_string(), serde_json::json!(1))).collect();
        serde_json::to_vec(&serde_json::json!({"generation": 1, "applied_generation": 1, "sources": sources,
            "deployments": deps, "at": "2026-01-01T00:00:00Z"}))
        .unwrap()
    }

    #[test]
    fn reported_gives_states_restarts_and_groups() {
        let mut f = Fleet::new(Limits::default());
        apply(
            &mut f,
            "jetship/v1/d1/reported",
            &reported(&[("yolo", "rolled-back"), ("cam", "running")], &["device", "group:lab", "group:cameras"]),
            1,
        );
        let d = &f.devices["d1"];
        assert_eq!(d.groups, "cameras,lab");
        assert_eq!(d.group_list, ["cameras", "lab"]);
        let got: Vec<(&str, &str, u32)> =
            d.deployments.iter().map(|x| (x.name.as_str(), STATES[x.state], x.restarts)).collect();
        assert_eq!(got, [("cam", "running", 2), ("yolo", "rolled-back", 2)]);
    }

    #[test]
    fn every_state_name_matches_the_reconciler() {
        use DeploymentState as S;
        let all = [
            S::Pending,
            S::Resolving,
            S::Pulling { done: 0, total: None },
            S::Starting,
            S::HealthChecking,
            S::Running,
            S::Unhealthy { reason: String::new() },
            S::Restarting { attempt: 1, backoff_ms: 1, reason: String::new() },
            S::WaitingForDevice { device: String::new() },
            S::Failed { reason: String::new() },
            S::RolledBack { reason: String::new() },
            S::Completed,
            S::Removing,
        ];
        for s in &all {
            assert_eq!(STATES[state_index(s)], s.name());
        }
        assert_eq!(all.len(), STATES.len());
    }

    #[test]
    fn limits_cut_and_count() {
        let limits =
            Limits { max_devices: 2, max_zones: 1, max_deployments: 1, max_label_bytes: 8, ..Default::default() };
        let mut f = Fleet::new(limits);
        apply(&mut f, "jetship/v1/a/status", &status(true), 1);
        apply(&mut f, "jetship/v1/b/status", &status(true), 1);
        apply(&mut f, "jetship/v1/c/status", &status(true), 1);
        assert_eq!(f.devices.len(), 2);
        assert_eq!(f.counters.dropped[&Discard::DeviceLimit], 1);
        // Known devices go on.
        apply(&mut f, "jetship/v1/a/telemetry", &telemetry(1, 1, 0, 1.0), 2);
        let sources = ["group:lab", "group:cameras"];
        apply(&mut f, "jetship/v1/a/reported", &reported(&[("one", "running"), ("two", "failed")], &sources), 2);
        let host = br#"{"model":"NVIDIA Jetson \u00e9\u00e9\u00e9\u00e9 long","l4t":{"version":"36.4.3"}}"#;
        apply(&mut f, "jetship/v1/a/host", host, 2);
        let a = &f.devices["a"];
        assert_eq!(a.sample.as_ref().unwrap().zones.len(), 1);
        assert_eq!(a.deployments.len(), 1);
        assert_eq!(a.host.model, "NVIDIA J");
        assert_eq!(f.counters.dropped[&Discard::DeploymentLimit], 1);
        assert!(!f.counters.dropped.contains_key(&Discard::ZoneLimit), "the null zone is not a zone");
        assert_eq!(a.sample.as_ref().unwrap().zones[0].0, "cpu-ther");
        assert_eq!((a.groups.as_str(), a.group_list.len()), ("cameras,", 2), "the joined label is cut too");
        // The model, the zone `cpu-thermal`, the power mode `MAXN_SUPER` and the joined groups.
        assert_eq!(f.counters.truncated_labels, 4);
        // A cut inside a multi-byte character backs off to its start.
        let mut t = 0;
        assert_eq!(Labels { max: 3, truncated: &mut t }.cut("aéé".into()), "aé");
        let big = vec![b' '; Limits::default().max_payload_bytes + 1];
        apply(&mut f, "jetship/v1/a/telemetry", &big, 3);
        apply(&mut f, "jetship/v1/a/telemetry", b"{not json", 3);
        apply(&mut f, "jetship/v1/a/status", br#"{"online":"yes"}"#, 3);
        assert_eq!(f.counters.dropped[&Discard::TooLarge], 1);
        assert_eq!(f.counters.dropped[&Discard::Invalid], 2);
        assert_eq!(f.devices["a"].online, Some(true), "a bad message changes nothing");
        assert_eq!(f.counters.messages, [4, 1, 3, 1, 0], "every message counts, kept or not");
    }

    #[test]
    fn foreign_topics_and_bad_ids_are_ignored() {
        let l = Limits::default();
        assert!(parse("jetship/v1/a/desired", b"{}", &l).is_none());
        assert!(parse("jetship/v1/a.b/status", &status(true), &l).is_none());
        assert!(parse("jetship/v1/groups/status", &status(true), &l).is_none());
        assert!(parse("other/a/status", &status(true), &l).is_none());
    }

    #[test]
    fn offline_devices_are_forgotten_after_the_limit_and_a_cleared_status_forgets_at_once() {
        let limits = Limits { forget_after_ms: 1_000, ..Default::default() };
        let mut f = Fleet::new(limits);
        apply(&mut f, "jetship/v1/on/status", &status(true), 0);
        apply(&mut f, "jetship/v1/off/status", &status(false), 0);
        apply(&mut f, "jetship/v1/off/telemetry", &telemetry(1, 5_000, 0, 1.0), 0);
        apply(&mut f, "jetship/v1/quiet/host", br#"{"model":"x"}"#, 0);
        assert_eq!(f.forget_stale(5_900), 1, "quiet, never online, heard of at 0");
        assert!(f.devices.contains_key("off"), "its last telemetry is recent");
        assert_eq!(f.forget_stale(6_001), 1);
        assert_eq!(f.devices.keys().collect::<Vec<_>>(), ["on"], "online devices stay");
        apply(&mut f, "jetship/v1/on/status", b"", 7_000);
        assert!(f.devices.is_empty());
        assert_eq!(f.counters.forgotten, 3);
        // A cleared topic of an unknown device does not create it.
        apply(&mut f, "jetship/v1/ghost/telemetry", b"", 7_000);
        assert!(f.devices.is_empty());
    }
}
