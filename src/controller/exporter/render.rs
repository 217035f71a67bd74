//! The metrics: which families the exporter serves, their names, units and help, and which devices' values
//! appear in each (docs/monitoring.md lists them). Offline devices keep their identity (`online`, `last seen`,
//! `info`, counters) but export no measurements, so nothing stale is ever scraped.
//!
//! Pure: a projection of [`Fleet`] through the [`Encoder`]; it must not change the state or know the formats.

use super::exposition::{Encoder, Family, Format, Kind};
use super::state::{Device, Discard, Fleet, Sample, EVENT_KINDS, STATES, TOPICS};

/// What the subscriber says about its broker connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinkStatus {
    pub connected: bool,
    /// Connections made since the exporter started.
    pub connects: u64,
}

const fn gauge(name: &'static str, unit: Option<&'static str>, help: &'static str) -> Family {
    Family { name, kind: Kind::Gauge, unit, help }
}
const fn counter(name: &'static str, help: &'static str) -> Family {
    Family { name, kind: Kind::Counter, unit: None, help }
}
const fn info(name: &'static str, help: &'static str) -> Family {
    Family { name, kind: Kind::Info, unit: None, help }
}

const ONLINE: Family = gauge(
    "jetship_device_online",
    None,
    "1 while the device's agent is connected to the broker (retained status), 0 after its goodbye or will.",
);
const LAST_SEEN: Family = gauge(
    "jetship_device_last_seen_timestamp_seconds",
    Some("seconds"),
    "Unix time of the device's newest telemetry sample (the device's clock).",
);
const INFO: Family =
    info("jetship_device_info", "Device facts: Jetson model, SoC, module, L4T and JetPack release, agent version.");
const GROUP: Family =
    info("jetship_device_group_info", "One series per fleet group whose documents the device applies.");
const CPU: Family =
    gauge("jetship_cpu_usage_ratio", Some("ratio"), "Busy share of all CPU cores since the previous sample (0-1).");
const MEM_USED: Family = gauge(
    "jetship_memory_used_bytes",
    Some("bytes"),
    "RAM in use (total - available); the Jetson GPU allocates from the same RAM.",
);
const MEM_TOTAL: Family = gauge("jetship_memory_total_bytes", Some("bytes"), "RAM size.");
const GPU_LOAD: Family = gauge("jetship_gpu_load_ratio", Some("ratio"), "Integrated GPU load (0-1).");
const GPU_FREQ: Family = gauge("jetship_gpu_frequency_hertz", Some("hertz"), "Integrated GPU clock.");
const TEMP: Family = gauge(
    "jetship_temperature_celsius",
    Some("celsius"),
    "Thermal zone temperature; zones that cannot be read (Orin cv* while off) are absent.",
);
const POWER: Family = gauge(
    "jetship_power_watts",
    Some("watts"),
    "Power of one INA3221 rail (VDD_IN is the module's input on Orin Nano/NX).",
);
const FAN: Family = gauge("jetship_fan_pwm_ratio", Some("ratio"), "Fan PWM duty (0-1).");
const MODE: Family = info("jetship_power_mode_info", "The nvpmodel power mode: its id and name.");
const DISK_FREE: Family = gauge(
    "jetship_disk_free_bytes",
    Some("bytes"),
    "Space free for the agent on the file system of its state dir (images, layers, logs).",
);
const DISK_TOTAL: Family =
    gauge("jetship_disk_total_bytes", Some("bytes"), "Size of the file system of the agent's state dir.");
// One series per deployment, for its current state only: a state change ends the old series (Prometheus marks
// it stale at the next scrape), which keeps 13 states from multiplying the series of every deployment.
const DEP_STATE: Family = gauge("jetship_deployment_state", None, "1, labelled with the deployment's current state.");
const DEP_RESTARTS: Family = counter(
    "jetship_deployment_restarts_total",
    "Restarts of the deployment's current version, as the device reports them.",
);
const SPOOL_DROPPED: Family = counter(
    "jetship_spool_dropped_total",
    "Telemetry and event messages the device's full spool dropped before delivery, as reported since the exporter started.",
);
const EVENTS: Family =
    counter("jetship_events_total", "Events the device published since the exporter started, by kind.");

const X_BUILD: Family = info("jetship_exporter_build_info", "The exporter's version.");
const X_CONNECTED: Family =
    gauge("jetship_exporter_broker_connected", None, "1 while the exporter is connected and subscribed to the broker.");
const X_CONNECTS: Family =
    counter("jetship_exporter_broker_connects_total", "Connections to the broker made since the exporter started.");
const X_DEVICES: Family = gauge("jetship_exporter_devices", None, "Devices the exporter tracks.");
const X_DEVICE_LIMIT: Family =
    gauge("jetship_exporter_device_limit", None, "The most devices the exporter tracks (--max-devices).");
const X_MESSAGES: Family = counter("jetship_exporter_messages_total", "Messages received, by device topic.");
const X_DROPPED: Family = counter(
    "jetship_exporter_dropped_total",
    "Messages or items not kept, by reason: a limit was reached, the payload was too large or invalid.",
);
const X_TRUNCATED: Family =
    counter("jetship_exporter_label_values_truncated_total", "Label values cut to --max-label-bytes.");
const X_FORGOTTEN: Family = counter(
    "jetship_exporter_devices_forgotten_total",
    "Devices forgotten: offline for longer than --forget-after, or their status cleared.",
);

/// Every family served, in order (the tests check units and that docs/monitoring.md names each).
#[cfg(test)]
pub(crate) const FAMILIES: [&Family; 28] = [
    &ONLINE,
    &LAST_SEEN,
    &INFO,
    &GROUP,
    &CPU,
    &MEM_USED,
    &MEM_TOTAL,
    &GPU_LOAD,
    &GPU_FREQ,
    &TEMP,
    &POWER,
    &FAN,
    &MODE,
    &DISK_FREE,
    &DISK_TOTAL,
    &DEP_STATE,
    &DEP_RESTARTS,
    &SPOOL_DROPPED,
    &EVENTS,
    &X_BUILD,
    &X_CONNECTED,
    &X_CONNECTS,
    &X_DEVICES,
    &X_DEVICE_LIMIT,
    &X_MESSAGES,
    &X_DROPPED,
    &X_TRUNCATED,
    &X_FORGOTTEN,
];

/// A guess of the exposition size, so the buffer is allocated once.
fn capacity(fleet: &Fleet) -> usize {
    8 * 1024 + fleet.devices.len() * 3 * 1024
}

/// The exposition of the fleet in `format`.
pub(crate) fn render(fleet: &Fleet, link: LinkStatus, format: Format) -> String {
    let mut e = Encoder::new(format, capacity(fleet));
    let devices = || fleet.devices.iter().map(|(id, d)| (id.as_str(), d));
    let live = || devices().filter_map(|(id, d)| d.live_sample().map(|s| (id, d, s)));

    e.family(&ONLINE);
    for (id, d) in devices() {
        if let Some(online) = d.online {
            e.sample(&[("device", id), ("group", &d.groups)], if online { 1.0 } else { 0.0 });
        }
    }
    e.family(&LAST_SEEN);
    for (id, d) in devices() {
        if let Some(ms) = d.last_seen_ms {
            e.sample(&[("device", id), ("group", &d.groups)], ms as f64 / 1000.0);
        }
    }
    e.family(&INFO);
    for (id, d) in devices() {
        let h = &d.host;
        e.sample(
            &[
                ("device", id),
                ("group", &d.groups),
                ("model", &h.model),
                ("soc", &h.soc),
                ("module", &h.module),
                ("l4t", &h.l4t),
                ("jetpack", &h.jetpack),
                ("agent_version", &d.agent_version),
            ],
            1.0,
        );
    }
    e.family(&GROUP);
    for (id, d) in devices() {
        for g in &d.group_list {
            e.sample(&[("device", id), ("group", g)], 1.0);
        }
    }

    let scalar = |e: &mut Encoder, f: &Family, get: fn(&Sample) -> Option<f64>| {
        e.family(f);
        for (id, d, s) in live() {
            if let Some(v) = get(s) {
                e.sample(&[("device", id), ("group", &d.groups)], v);
            }
        }
    };
    scalar(&mut e, &CPU, |s| s.cpu_ratio);
    scalar(&mut e, &MEM_USED, |s| s.memory_used_bytes.map(|v| v as f64));
    scalar(&mut e, &MEM_TOTAL, |s| s.memory_total_bytes.map(|v| v as f64));
    scalar(&mut e, &GPU_LOAD, |s| s.gpu_load_ratio);
    scalar(&mut e, &GPU_FREQ, |s| s.gpu_frequency_hz.map(|v| v as f64));
    e.family(&TEMP);
    for (id, d, s) in live() {
        for (zone, c) in &s.zones {
            e.sample(&[("device", id), ("group", &d.groups), ("zone", zone)], *c);
        }
    }
    e.family(&POWER);
    for (id, d, s) in live() {
        for (rail, w) in &s.rails_watts {
            e.sample(&[("device", id), ("group", &d.groups), ("rail", rail)], *w);
        }
    }
    scalar(&mut e, &FAN, |s| s.fan_pwm_ratio);
    e.family(&MODE);
    for (id, d, s) in live() {
        if let Some((mode_id, name)) = &s.power_mode {
            let mode_id = mode_id.to_string();
            e.sample(&[("device", id), ("group", &d.groups), ("mode_id", &mode_id), ("mode", name)], 1.0);
        }
    }
    scalar(&mut e, &DISK_FREE, |s| s.disk_free_bytes.map(|v| v as f64));
    scalar(&mut e, &DISK_TOTAL, |s| s.disk_total_bytes.map(|v| v as f64));

    let live_devices = || devices().filter(|(_, d)| d.live());
    e.family(&DEP_STATE);
    for (id, d) in live_devices() {
        for dep in &d.deployments {
            let state = STATES[dep.state];
            e.sample(&[("device", id), ("group", &d.groups), ("deployment", &dep.name), ("state", state)], 1.0);
        }
    }
    e.family(&DEP_RESTARTS);
    for (id, d) in live_devices() {
        for dep in &d.deployments {
            e.sample(&[("device", id), ("group", &d.groups), ("deployment", &dep.name)], f64::from(dep.restarts));
        }
    }
    e.family(&SPOOL_DROPPED);
    for (id, d) in devices() {
        e.sample(&[("device", id), ("group", &d.groups)], d.spool_dropped as f64);
    }
    e.family(&EVENTS);
    for (id, d) in devices() {
        counters_by_kind(&mut e, id, d);
    }

    let c = &fleet.counters;
    e.family(&X_BUILD);
    e.sample(&[("version", crate::VERSION)], 1.0);
    e.family(&X_CONNECTED);
    e.sample(&[], if link.connected { 1.0 } else { 0.0 });
    e.family(&X_CONNECTS);
    e.sample(&[], link.connects as f64);
    e.family(&X_DEVICES);
    e.sample(&[], fleet.devices.len() as f64);
    e.family(&X_DEVICE_LIMIT);
    e.sample(&[], fleet.limits.max_devices as f64);
    e.family(&X_MESSAGES);
    for (topic, n) in TOPICS.iter().zip(c.messages) {
        e.sample(&[("topic", topic)], n as f64);
    }
    e.family(&X_DROPPED);
    for reason in Discard::ALL {
        e.sample(&[("reason", reason.name())], c.dropped.get(&reason).copied().unwrap_or(0) as f64);
    }
    e.family(&X_TRUNCATED);
    e.sample(&[], c.truncated_labels as f64);
    e.family(&X_FORGOTTEN);
    e.sample(&[], c.forgotten as f64);
    e.finish()
}

fn counters_by_kind(e: &mut Encoder, id: &str, d: &Device) {
    for (kind, n) in EVENT_KINDS.iter().zip(d.events) {
        e.sample(&[("device", id), ("group", &d.groups), ("kind", kind)], n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::{parse, Limits};
    use super::*;

    fn fleet() -> Fleet {
        let mut f = Fleet::new(Limits::default());
        let mut put = |topic: &str, payload: &str, now: u64| {
            let p = parse(topic, payload.as_bytes(), &f.limits.clone()).unwrap();
            f.apply(p, now);
        };
        put("jetship/v1/on/status", r#"{"online":true,"agent_version":"0.1.0","started_at":"x","boot_id":null}"#, 1);
        put(
            "jetship/v1/on/host",
            r#"{"model":"NVIDIA \"Jetson\" Orin","soc":"tegra234","l4t":{"version":"36.4.3"},"jetpack":"6.2"}"#,
            1,
        );
        put(
            "jetship/v1/on/telemetry",
            r#"{"seq":1,"ts":1795324214285,"thermal":[{"name":"tj-thermal","temp_c":51.5}],"power":[{"name":"VDD_IN","power_mw":7345}],"gpu":{"load_pct":40.0}}"#,
            2,
        );
        put(
            "jetship/v1/on/reported",
            r#"{"generation":1,"applied_generation":1,"sources":{"group:lab":1},"at":"2026-01-01T00:00:00Z","deployments":{"yolo":{"state":"failed","reason":"x","image":"i","digest":null,"started_at":null,"restarts":4,"exit_code":null,"health":null,"error":null,"source":null}}}"#,
            2,
        );
        put("jetship/v1/off/status", r#"{"online":false,"agent_version":"0.0.9","started_at":"x","boot_id":null}"#, 1);
        put(
            "jetship/v1/off/telemetry",
            r#"{"seq":9,"ts":1000,"dropped":2,"cpu":{"total_pct":50,"per_core_pct":[]}}"#,
            2,
        );
        f
    }

    #[test]
    fn families_are_served_in_one_place_with_their_units() {
        for f in FAMILIES {
            if let Some(u) = f.unit {
                assert!(f.name.ends_with(&format!("_{u}")), "{}", f.name);
            }
        }
        let text = render(&fleet(), LinkStatus { connected: true, connects: 1 }, Format::Text);
        for f in FAMILIES {
            assert!(text.contains(&format!("# TYPE {} ", f.name)), "{} missing:\n{text}", f.name);
        }
    }

    #[test]
    fn docs_name_every_family() {
        let docs = include_str!("../../../docs/monitoring.md");
        for f in FAMILIES {
            assert!(docs.contains(&format!("`{}", f.name)), "docs/monitoring.md does not describe {}", f.name);
        }
    }

    #[test]
    fn online_devices_export_measurements_and_offline_ones_only_identity() {
        let text = render(&fleet(), LinkStatus::default(), Format::Text);
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(has(r#"jetship_device_online{device="on",group="lab"} 1"#), "{text}");
        assert!(has(r#"jetship_device_online{device="off"} 0"#), "{text}");
        assert!(has(r#"jetship_temperature_celsius{device="on",group="lab",zone="tj-thermal"} 51.5"#), "{text}");
        assert!(has(r#"jetship_power_watts{device="on",group="lab",rail="VDD_IN"} 7.345"#), "{text}");
        assert!(has(r#"jetship_gpu_load_ratio{device="on",group="lab"} 0.4"#), "{text}");
        assert!(has(r#"jetship_device_last_seen_timestamp_seconds{device="on",group="lab"} 1795324214.285"#), "{text}");
        assert!(has(r#"jetship_device_last_seen_timestamp_seconds{device="off"} 1"#), "{text}");
        assert!(
            has(
                r#"jetship_device_info{device="on",group="lab",model="NVIDIA \"Jetson\" Orin",soc="tegra234",l4t="36.4.3",jetpack="6.2",agent_version="0.1.0"} 1"#
            ),
            "{text}"
        );
        assert!(has(r#"jetship_device_group_info{device="on",group="lab"} 1"#), "{text}");
        assert!(has(r#"jetship_deployment_state{device="on",group="lab",deployment="yolo",state="failed"} 1"#));
        assert_eq!(text.matches("jetship_deployment_state{").count(), 1, "the current state only");
        assert!(has(r#"jetship_deployment_restarts_total{device="on",group="lab",deployment="yolo"} 4"#));
        assert!(has(r#"jetship_spool_dropped_total{device="off"} 2"#), "{text}");
        assert!(has(r#"jetship_events_total{device="off",kind="agent_started"} 0"#), "{text}");
        // The offline device's sample (cpu 50 %) is stale: not exported.
        assert!(!text.contains("jetship_cpu_usage_ratio{"), "{text}");
        assert!(has(r#"jetship_exporter_devices 2"#) && has(r#"jetship_exporter_broker_connected 0"#), "{text}");
        assert!(has(r#"jetship_exporter_messages_total{topic="telemetry"} 2"#), "{text}");
        assert!(has(r#"jetship_exporter_dropped_total{reason="device_limit"} 0"#), "{text}");
    }

    #[test]
    fn openmetrics_output_ends_with_eof_and_names_counter_families() {
        let om = render(&fleet(), LinkStatus::default(), Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"));
        assert!(om.contains("# TYPE jetship_spool_dropped counter\n"));
        assert!(om.contains("# TYPE jetship_device info\n"));
        assert!(om.contains("# UNIT jetship_temperature_celsius celsius\n"));
    }
}
