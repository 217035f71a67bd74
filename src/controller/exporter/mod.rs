//! `jetship exporter`: a controller-side service that follows the fleet's retained and streamed topics on the
//! broker and serves them as Prometheus metrics on `/metrics` (docs/monitoring.md). Parts, one job each:
//! `state` (what is known per device, bounded), `render` (which metrics), `exposition` (text and OpenMetrics
//! formats), `subscriber` (the broker connection), `http` (the endpoint).
//!
//! It only reads from the broker: it never publishes to device topics and never touches an agent's state.

mod exposition;
mod http;
mod render;
mod state;
mod subscriber;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use state::Limits;

use crate::link::mqtt::BrokerAccess;

/// Errors of the exporter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source} (another process may hold the port: pick another with --listen)")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{flag} {value}: {expected}")]
    Flag { flag: &'static str, value: u64, expected: &'static str },
    #[error(transparent)]
    Access(#[from] crate::link::mqtt::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Arguments of `jetship exporter` besides broker access.
#[derive(Debug, Clone, Args)]
pub struct ExporterArgs {
    /// Address to serve /metrics on; 0.0.0.0:9883 lets a Prometheus on another host scrape it.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9883")]
    pub listen: SocketAddr,
    /// Most devices tracked; messages of more devices are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_devices: u64,
    /// Most deployments exported per device (the first in name order).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_deployments: u64,
    /// Most thermal zones exported per device.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_zones: u64,
    /// Most power rails exported per device.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_rails: u64,
    /// Longest label value in bytes; longer values are cut.
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    pub max_label_bytes: u64,
    /// Forget a device that has been offline, with no telemetry newer than this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    pub forget_after: u64,
}

impl ExporterArgs {
    /// The limits these flags ask for, each checked.
    pub fn limits(&self) -> Result<Limits> {
        let count = |flag: &'static str, value: u64, max: u64| {
            if (1..=max).contains(&value) {
                Ok(value as usize)
            } else {
                Err(Error::Flag { flag, value, expected: "must be at least 1 and at most 1000000" })
            }
        };
        let forget_after = match self.forget_after {
            v @ 1..=31_536_000 => v * 1000,
            v => {
                return Err(Error::Flag { flag: "--forget-after", value: v, expected: "must be 1 to 31536000 seconds" })
            }
        };
        Ok(Limits {
            max_devices: count("--max-devices", self.max_devices, 1_000_000)?,
            max_deployments: count("--max-deployments", self.max_deployments, 1_000_000)?,
            max_zones: count("--max-zones", self.max_zones, 1_000_000)?,
            max_rails: count("--max-rails", self.max_rails, 1_000_000)?,
            max_label_bytes: match self.max_label_bytes {
                v @ 16..=4096 => v as usize,
                v => return Err(Error::Flag { flag: "--max-label-bytes", value: v, expected: "must be 16 to 4096" }),
            },
            forget_after_ms: forget_after,
            ..Limits::default()
        })
    }
}

/// State shared by the subscriber, the forget loop and the HTTP endpoint.
pub(crate) struct Shared {
    fleet: Mutex<state::Fleet>,
    limits: Limits,
    connected: AtomicBool,
    connects: AtomicU64,
}

impl Shared {
    fn new(limits: Limits) -> Shared {
        Shared {
            fleet: Mutex::new(state::Fleet::new(limits.clone())),
            limits,
            connected: AtomicBool::new(false),
            connects: AtomicU64::new(0),
        }
    }

    /// The fleet, locked. Never held across an `.await`.
    fn fleet(&self) -> MutexGuard<'_, state::Fleet> {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn link(&self) -> render::LinkStatus {
        render::LinkStatus {
            connected: self.connected.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
        }
    }

    fn render(&self, format: exposition::Format) -> String {
        let link = self.link();
        render::render(&self.fleet(), link, format)
    }
}

/// How often long-offline devices are looked for.
fn forget_period(limits: &Limits) -> Duration {
    Duration::from_millis((limits.forget_after_ms / 4).clamp(1000, 60_000))
}

/// Runs the exporter until SIGTERM or SIGINT: listens on `args.listen`, follows the broker, serves `/metrics`.
pub fn run(access: BrokerAccess, args: ExporterArgs) -> anyhow::Result<()> {
    let limits = args.limits()?;
    // A bad URL or unreadable TLS file is an error now, not a warning in a retry loop.
    access.brokers("jetship-exporter-check", Duration::from_secs(30))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let shutdown = crate::agent::shutdown_on_signals()?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|source| Error::Listen { addr: args.listen, source })?;
        let addr = listener.local_addr().unwrap_or(args.listen);
        let shared = Arc::new(Shared::new(limits.clone()));
        let tracker = TaskTracker::new();
        let sub = tracker.spawn(subscriber::run(access.clone(), shared.clone(), shutdown.clone()));
        tracker.spawn(subscriber::forget_loop(shared.clone(), forget_period(&limits), shutdown.clone()));
        tracker.spawn(http::serve(listener, shared, shutdown.clone()));
        tracker.close();
        info!(listen = %addr, brokers = %access.urls().join(", "), "exporter serving /metrics");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        shutdown.cancelled().await;
        info!("shutting down");
        if tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.is_err() {
            warn!("tasks did not stop within 10 s");
        }
        match sub.await {
            Ok(Err(e)) => Err(anyhow::Error::new(e)),
            _ => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ExporterArgs {
        ExporterArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_devices: 10_000,
            max_deployments: 32,
            max_zones: 32,
            max_rails: 16,
            max_label_bytes: 128,
            forget_after: 86_400,
        }
    }

    #[test]
    fn default_flags_are_the_documented_limits() {
        assert_eq!(args().limits().unwrap(), Limits::default());
    }

    #[test]
    fn out_of_range_flags_name_the_flag() {
        let e = ExporterArgs { max_devices: 0, ..args() }.limits().unwrap_err().to_string();
        assert!(e.starts_with("--max-devices 0: must be at least 1"), "{e}");
        let e = ExporterArgs { forget_after: 0, ..args() }.limits().unwrap_err().to_string();
        assert!(e.contains("--forget-after"), "{e}");
        let e = ExporterArgs { max_label_bytes: 3, ..args() }.limits().unwrap_err().to_string();
        assert!(e.contains("--max-label-bytes 3"), "{e}");
    }

    #[test]
    fn forget_sweeps_are_frequent_enough_but_not_busy() {
        assert_eq!(forget_period(&Limits::default()), Duration::from_secs(60));
        assert_eq!(forget_period(&Limits { forget_after_ms: 2000, ..Limits::default() }), Duration::from_secs(1));
    }
}
