//! Housekeeping: checking the stored state at start, adopting what the backend runs, rotating container logs,
//! and the agent's own memory.

use super::*;

// ---- containers: adoption is logged at start, logs rotate on a tick ---------------------------------------

/// How often container logs are checked against `runtime.log_max_bytes`.
pub(super) const LOG_ROTATE_PERIOD: Duration = Duration::from_secs(30);

/// Logs the containers the backend already owns (the executor adopts them: never started twice) and spawns the
/// log-rotation tick.
pub(super) async fn start_containers_housekeeping(
    backend: Arc<dyn crate::runtime::ContainerRuntime>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    match crate::runtime::adopt(backend.as_ref()).await {
        Ok(owned) => info!(backend = backend.name(), containers = owned.len(), "containers adopted"),
        Err(err) => warn!(%err, "listing owned containers failed"),
    }
    tracker.spawn(crate::runtime::rotate_loop(backend, LOG_ROTATE_PERIOD, shutdown.clone()));
}

// ---- stored state: checked once at start, before anything uses it ----------------------------------------

/// Checks the image store (records, manifests and configs hashed, layer sizes, small blobs hashed, partial
/// downloads) and every snapshot (completion record and tree) under `state_dir`; what fails is removed or moved
/// aside and noted in the repair journal, and rebuilt when it is next used. Blocking.
pub(super) fn check_state(state_dir: &Path) {
    let started = std::time::Instant::now();
    match crate::image::store::ImageStore::open(state_dir).and_then(|s| s.check()) {
        Ok(r) => info!(
            records = r.records,
            blobs = r.blobs,
            hashed_bytes = r.hashed_bytes,
            partials = r.partials,
            repairs = r.repairs,
            ms = started.elapsed().as_millis() as u64,
            "image store checked"
        ),
        Err(err) => warn!(%err, "cannot check the image store"),
    }
    let started = std::time::Instant::now();
    match crate::image::snapshot::SnapshotStore::open(state_dir).and_then(|s| s.check()) {
        Ok((sound, entries)) => {
            info!(snapshots = sound, entries, ms = started.elapsed().as_millis() as u64, "snapshots checked")
        }
        Err(err) => warn!(%err, "cannot check the snapshots"),
    }
}

// ---- the agent's own memory ---------------------------------------------------------------------------------

/// When start-up is over: config, probe, the first connection, sample and host publish are done by then.
pub(super) const STARTUP_OVER: Duration = Duration::from_secs(20);
/// How often freed heap is handed back to the kernel.
pub(super) const HEAP_TRIM_PERIOD: Duration = Duration::from_secs(30);

/// Once start-up is over, unmaps its code and read-only data (only what the idle loops use is mapped again); then hands freed
/// heap back to the kernel every [`HEAP_TRIM_PERIOD`] (os::memory; docs/benchmarks.md, agent footprint).
pub(super) async fn memory_loop(shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(STARTUP_OVER) => {}
    }
    crate::os::memory::release_free_heap();
    match crate::os::memory::unmap_startup_code() {
        Ok(bytes) => debug!(bytes, "start-up code unmapped"),
        Err(err) => debug!(%err, "unmapping start-up code failed"),
    }
    let mut tick = tokio::time::interval(HEAP_TRIM_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => crate::os::memory::release_free_heap(),
        }
    }
}
