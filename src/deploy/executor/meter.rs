//! The pull meter: bytes of the pull in progress, from the backend's progress events, for the `pulling` state
//! and the `pull-progress` events.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

/// Bytes of the pull in progress, fed by the backend's progress events. The executor pulls one image at a time
/// (a device's link is the bottleneck anyway), so every event belongs to the deployment whose pull holds the
/// turn; each round reads the meter into the deployment's `pulling` state.
#[derive(Clone, Default)]
pub struct PullMeter {
    inner: Arc<std::sync::Mutex<MeterState>>,
}

#[derive(Default)]
struct MeterState {
    deployment: Option<String>,
    sizes: HashMap<String, u64>,
    done: u64,
}

impl PullMeter {
    /// The sink to give the backend.
    pub fn sink(&self) -> crate::image::pull::ProgressSink {
        let inner = self.inner.clone();
        Arc::new(move |p: &crate::image::pull::Progress| {
            use crate::image::pull::Progress;
            let mut m = inner.lock().unwrap_or_else(|e| e.into_inner());
            match p {
                Progress::Planned { total_bytes, present_bytes, .. } => {
                    m.sizes.insert(String::new(), *total_bytes);
                    m.done = *present_bytes;
                }
                Progress::BlobStarted { digest, size, offset } => {
                    if *size > 0 {
                        m.sizes.insert(digest.clone(), *size);
                    }
                    m.done += offset;
                }
                Progress::BlobBytes { bytes, .. } => m.done += bytes,
                Progress::BlobRetry { .. } | Progress::BlobDone { .. } => {}
            }
        })
    }

    pub(super) fn start(&self, deployment: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m = MeterState { deployment: Some(deployment.to_owned()), ..Default::default() };
    }

    pub(super) fn finish(&self) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = MeterState::default();
    }

    /// The deployment pulling now, with bytes done and in all (when the backend said).
    pub(super) fn read(&self) -> Option<(String, u64, Option<u64>)> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let total: u64 = match m.sizes.get("") {
            Some(t) => *t,
            None => m.sizes.values().sum(),
        };
        m.deployment.clone().map(|d| (d, m.done, (total > 0).then_some(total)))
    }
}

/// A `pull-progress` event: at most one per second per deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullProgress {
    pub deployment: String,
    pub done_bytes: u64,
    pub total_bytes: Option<u64>,
}
