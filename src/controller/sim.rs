//! `jetship sim-fleet` (hidden): many simulated devices in one process, each with the agent's own link
//! ([`crate::link::mqtt::Link`]), spool, status/host/reported state topics and 1 Hz telemetry, for benchmarks
//! (scripts/bench-mqtt). The payloads come from one real probe and one real metrics sample of `--host-root`.
//!
//! It must not be used as an agent: it never applies desired state and answers only `ping`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::deploy::report::Reported;
use crate::host::metrics::Sampler;
use crate::link::mqtt::{BrokerAccess, Delivery, Link, LinkHandle, LinkOptions};
use crate::link::protocol::{self, Reply, Status, Stream, Topics};
use crate::link::spool::Spool;

/// Arguments of `jetship sim-fleet`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Broker URL (plain mqtt://).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// Number of simulated devices.
    #[arg(long, default_value_t = 500)]
    pub devices: usize,
    /// Milliseconds between telemetry samples per device.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Seconds to run before a clean shutdown.
    #[arg(long, default_value_t = 60)]
    pub duration_s: u64,
    /// Directory for the devices' spools (use a tmpfs to measure the link rather than the disk).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Host root whose probe and metrics sample every simulated device publishes.
    #[arg(long, default_value = "/")]
    pub host_root: PathBuf,
    /// Device ids are PREFIX-0000, PREFIX-0001, ...
    #[arg(long, default_value = "sim")]
    pub prefix: String,
}

/// Runs the simulation until `duration_s` passes or SIGINT/SIGTERM.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let shutdown = crate::agent::shutdown_on_signals()?;
        let facts = crate::host::probe::probe(&args.host_root, &args.state_dir);
        let host = serde_json::to_vec(&facts)?;
        let sample = Sampler::new(args.host_root.clone(), args.state_dir.clone()).sample();
        let access = BrokerAccess { url: args.broker.clone(), ..Default::default() };
        let stop_links = CancellationToken::new();
        let mut links = Vec::new();
        let devices = CancellationToken::new();
        let mut device_tasks = Vec::new();
        for i in 0..args.devices {
            let id = format!("{}-{i:04}", args.prefix);
            let topics = Topics::new(&id)?;
            let spool = Spool::open(&args.state_dir.join(&id).join("spool"), 8 * 1024 * 1024, false)?;
            let status = |online| {
                serde_json::to_vec(&Status {
                    online,
                    agent_version: crate::VERSION.into(),
                    started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    boot_id: None,
                    groups: Vec::new(),
                })
                .unwrap_or_default()
            };
            let (link, handle, incoming) = Link::new(
                LinkOptions {
                    brokers: access.brokers(&id, Duration::from_secs(30))?,
                    topics: topics.clone(),
                    subscriptions: vec![topics.desired(), topics.cmd_filter()],
                    offline_status: status(false),
                    backoff_min: Duration::from_millis(500),
                    backoff_max: Duration::from_secs(5),
                    window: 32,
                },
                spool,
            );
            handle.set_state(topics.status(), status(true));
            handle.set_state(topics.host(), host.clone());
            handle.set_state(
                topics.reported(),
                serde_json::to_vec(&Reported {
                    generation: None,
                    applied_generation: None,
                    sources: Default::default(),
                    rejected: None,
                    deployments: Default::default(),
                    repairs: Vec::new(),
                    at: chrono::Utc::now(),
                })?,
            );
            links.push(tokio::spawn(link.run(stop_links.clone())));
            device_tasks.push(tokio::spawn(device(
                topics,
                handle.clone(),
                incoming,
                sample.clone(),
                Duration::from_millis(args.interval_ms.max(10)),
                devices.clone(),
            )));
            device_tasks.push(tokio::spawn(crate::link::mqtt::flush_spool(
                handle.spool().clone(),
                Duration::from_secs(1),
                devices.clone(),
            )));
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(args.duration_s)) => {}
        }
        devices.cancel();
        for t in device_tasks {
            let _ = t.await;
        }
        stop_links.cancel();
        for l in links {
            let _ = l.await;
        }
        Ok(())
    })
}

async fn device(
    topics: Topics,
    handle: LinkHandle,
    mut incoming: tokio::sync::mpsc::Receiver<Delivery>,
    sample: crate::host::metrics::Sample,
    interval: Duration,
    shutdown: CancellationToken,
) {
    // Spread the devices over the interval, as a real fleet's clocks are.
    let offset = interval.mul_f64(rand::random::<f64>());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let _ = handle.append(Stream::Telemetry, |seq| protocol::stream_body(seq, ts, 0, &sample));
            }
            m = incoming.recv() => {
                let Some(m) = m else { return };
                let Delivery::Message(m) = m else { continue };
                if let protocol::Incoming::Cmd { request_id: Ok(id) } = protocol::classify(&topics, &[], &m.topic) {
                    let reply = match protocol::parse_command(&m.payload) {
                        Ok(protocol::Command::Ping) => Reply::ok(&id, serde_json::json!({ "agent_version": crate::VERSION })),
                        Ok(_) => Reply { ok: false, error: Some("a simulated device runs no deployments".into()), request_id: id.clone(), result: None },
                        Err(e) => Reply::error(&id, &e),
                    };
                    handle.send(topics.reply(&id), serde_json::to_vec(&reply).unwrap_or_default());
                }
            }
        }
    }
}
