//! `jetship agent`: the long-running service on each device. It owns start-up order (config, state dir, host
//! probe), the periodic tasks, and shutdown on SIGTERM/SIGINT; the work itself lives in the other modules.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::metrics::Sampler;
use crate::probe;

/// How long running tasks get to finish after SIGTERM before the agent exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!("cannot create state dir {}: check `state_dir` and permissions", config.state_dir.display())
    })?;
    let root = config.host.root.clone();
    let state_dir = config.state_dir.clone();
    let facts = tokio::task::spawn_blocking(move || probe::probe(&root, &state_dir)).await?;
    for w in &facts.warnings {
        warn!(warning = %w, "host probe");
    }
    info!(
        device_id = %config.device_id(),
        kind = ?facts.kind,
        model = facts.model.as_deref().unwrap_or("-"),
        l4t = %facts.l4t.as_ref().map(|l| l.version.to_string()).unwrap_or_else(|| "-".into()),
        jetpack = facts.jetpack.as_deref().unwrap_or("-"),
        "agent started"
    );

    let tracker = TaskTracker::new();
    tracker.spawn(sample_loop(config.clone(), shutdown.clone()));
    start_containers_housekeeping(&config, &tracker, &shutdown).await;
    tracker.close();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    shutdown.cancelled().await;
    info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "tasks did not stop in time");
    }
    Ok(())
}

async fn sample_loop(config: Config, shutdown: CancellationToken) {
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
                debug!(cpu = ?sample.cpu.as_ref().map(|c| c.total_pct), warnings = sample.warnings.len(), "metrics sample");
            }
        }
    }
}

// ---- containers (native runtime branch): adopt on start, rotate logs ---------------------------------------

/// How often container logs are checked against `runtime.log_max_bytes`.
const LOG_ROTATE_PERIOD: Duration = Duration::from_secs(30);

/// Opens the container backend, logs the containers it already owns (adopted: never started twice), and
/// spawns the log-rotation tick. A missing backend is a warning, not a failed agent: telemetry still runs.
async fn start_containers_housekeeping(config: &Config, tracker: &TaskTracker, shutdown: &CancellationToken) {
    let backend: std::sync::Arc<dyn crate::runtime::ContainerRuntime> = match crate::runtime::open(config) {
        Ok(b) => b.into(),
        Err(err) => {
            warn!(%err, "no container backend; containers cannot run");
            return;
        }
    };
    match crate::runtime::adopt(backend.as_ref()).await {
        Ok(owned) => info!(backend = backend.name(), containers = owned.len(), "containers adopted"),
        Err(err) => warn!(%err, "listing owned containers failed"),
    }
    tracker.spawn(crate::runtime::rotate_loop(backend, LOG_ROTATE_PERIOD, shutdown.clone()));
}

/// Cancels the returned token on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        t.cancel();
    });
    Ok(token)
}
