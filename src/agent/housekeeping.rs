//! Container housekeeping next to the executor: adopting what the backend runs and rotating logs.

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
