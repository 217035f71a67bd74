//! The agent's periodic loops: telemetry samples into the spool, host re-probes published when they change.

use super::*;

/// Spooled records in flight at once.
pub(super) const WINDOW: usize = 32;

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Appends a lifecycle event `{"seq","ts","kind",...fields}` to the events stream.
pub(super) fn emit(handle: &LinkHandle, kind: &str, fields: serde_json::Value) {
    let mut fields = match fields {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    fields.insert("kind".into(), kind.into());
    if let Err(err) = handle.append(Stream::Events, |seq| protocol::stream_body(seq, now_ms(), 0, &fields)) {
        warn!(%err, kind, "cannot spool event");
    }
}

pub(super) async fn sample_loop(config: Config, handle: LinkHandle, shutdown: CancellationToken) {
    let mut sampler = Sampler::new(config.host.root.clone(), config.state_dir.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(config.telemetry.interval_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                // sysfs reads can block (EAGAIN zones, slow i2c hwmon): keep them off the async workers.
                let (s, sample) = match tokio::task::spawn_blocking(move || { let s = sampler.sample(); (sampler, s) }).await {
                    Ok(done) => done,
                    Err(err) => { warn!(?err, "metrics sampler stopped"); return; }
                };
                sampler = s;
                let appended = handle.append(Stream::Telemetry, |seq| protocol::stream_body(seq, now_ms(), 0, &sample));
                match appended {
                    Ok(seq) => debug!(seq, cpu = ?sample.cpu.as_ref().map(|c| c.total_pct), "telemetry spooled"),
                    Err(err) => warn!(%err, "cannot spool telemetry"),
                }
            }
        }
    }
}

/// The host facts without values that change on their own every probe (free disk space), so a republish
/// happens only when something a controller cares about changed.
pub(super) fn stable(facts: &HostFacts) -> HostFacts {
    let mut f = facts.clone();
    if let Some(d) = f.state_dir_disk.as_mut() {
        d.available_bytes = 0;
    }
    f
}

pub(super) async fn host_loop(config: Config, mut last: HostFacts, handle: LinkHandle, shutdown: CancellationToken) {
    let topic = Topics::new(&config.device_id()).map(|t| t.host());
    let Ok(topic) = topic else { return };
    let period = Duration::from_secs(config.telemetry.host_interval_s);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (root, state_dir) = (config.host.root.clone(), config.state_dir.clone());
        let Ok(facts) = tokio::task::spawn_blocking(move || probe::probe(&root, &state_dir)).await else {
            return;
        };
        if stable(&facts) != stable(&last) {
            info!("host facts changed; republishing");
            handle.set_state(topic.clone(), serde_json::to_vec(&facts).unwrap_or_default());
            emit(&handle, "host_changed", serde_json::json!({ "cameras": facts.cameras.len() }));
            last = facts;
        }
    }
}

/// How often the repair journal is drained into events and `reported`.
pub(super) const REPAIR_PERIOD: Duration = Duration::from_secs(1);

/// Publishes what the agent repaired in its own state: one `repair` event each (`subject`, `problem`, `action`,
/// `lost`) and the newest ones in `reported.repairs`.
pub(super) async fn repair_loop(handle: LinkHandle, topics: Topics, reported: Shared, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(REPAIR_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (repairs, overflow) = crate::os::journal::drain();
        if repairs.is_empty() && overflow == 0 {
            continue;
        }
        let at = chrono::Utc::now();
        for r in &repairs {
            emit(&handle, "repair", serde_json::to_value(r).unwrap_or_default());
        }
        if overflow > 0 {
            emit(
                &handle,
                "repair",
                serde_json::json!({ "subject": "-", "problem": format!("{overflow} more repairs"),
                "action": "not listed: the journal was full" }),
            );
        }
        reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add_repairs(repairs.into_iter().map(|repair| crate::deploy::report::ReportedRepair { repair, at }));
        publish_reported(&handle, &topics, &reported);
    }
}
