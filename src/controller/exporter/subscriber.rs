//! The exporter's broker connection: one task polls the rumqttc event loop, subscribes to every device's
//! `status`, `host`, `telemetry`, `reported` and `events` after each ConnAck (clean session, so the broker
//! sends the retained state again), and merges each message into the shared fleet state. A lost connection is
//! retried with the agent's backoff (500 ms doubling to 30 s, randomised to 50-100 %), on the next broker of the
//! list when there are several (`link::failover`).
//!
//! It only reads: it never publishes to device topics.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{Event, EventLoop, Incoming, QoS, Request, Subscribe, SubscribeFilter};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::state;
use super::Shared;
use crate::link::failover::{BACKOFF_MAX, BACKOFF_MIN};
use crate::link::mqtt::{backoff, BrokerAccess};
use crate::link::protocol::ROOT;

/// The subscriptions: retained state at QoS 0 (the broker resends it on every connect, and the newest wins),
/// events at QoS 1 because they are counted.
fn filters() -> Vec<SubscribeFilter> {
    let f = |kind: &str, qos| SubscribeFilter::new(format!("{ROOT}/+/{kind}"), qos);
    vec![
        f("status", QoS::AtLeastOnce),
        f("host", QoS::AtMostOnce),
        f("telemetry", QoS::AtMostOnce),
        f("reported", QoS::AtLeastOnce),
        f("events", QoS::AtLeastOnce),
    ]
}

/// Unix time in ms.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Follows the broker until `shutdown`.
pub async fn run(
    access: BrokerAccess,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<(), crate::link::mqtt::Error> {
    let id = format!("jetship-exporter-{:08x}", rand::random::<u32>());
    let mut brokers = access.brokers(&id, Duration::from_secs(30))?;
    let mut el = EventLoop::new(brokers.current().clone(), 64);
    let limits = shared.limits.clone();
    let mut attempt = 0;
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = el.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                attempt = 0;
                shared.connects.fetch_add(1, Ordering::Relaxed);
                el.pending.push_back(Request::Subscribe(Subscribe::new_many(filters())));
                info!(broker = %brokers.label(), "connected to the broker");
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) => shared.connected.store(true, Ordering::Relaxed),
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                // Parsed before the lock: the lock only covers the merge.
                if let Some(parsed) = state::parse(&p.topic, &p.payload, &limits) {
                    shared.fleet().apply(parsed, now_ms());
                }
            }
            Ok(_) => {}
            Err(e) => {
                shared.connected.store(false, Ordering::Relaxed);
                let delay = backoff(BACKOFF_MIN, BACKOFF_MAX, attempt);
                let failed = brokers.label().to_owned();
                // rumqttc holds no connection after an error: the next poll connects to these options.
                el.mqtt_options = brokers.advance().clone();
                warn!(broker = %failed, error = %e, retry_in_ms = delay.as_millis() as u64, next = %brokers.label(), "broker connection lost");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                attempt += 1;
            }
        }
    }
    shared.connected.store(false, Ordering::Relaxed);
    el.pending.push_back(Request::Disconnect(rumqttc::Disconnect));
    let _ = tokio::time::timeout(Duration::from_millis(500), el.poll()).await;
    Ok(())
}

/// Forgets long-offline devices every `period` until `shutdown`.
pub(crate) async fn forget_loop(shared: Arc<Shared>, period: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let n = shared.fleet().forget_stale(now_ms());
                if n > 0 {
                    info!(devices = n, "forgot devices offline for longer than --forget-after");
                }
            }
        }
    }
}
