//! What the agent found damaged in its own state and what it did about it: one [`Repair`] per file or
//! container, reported as a `repair` event and in `reported.repairs`. A plain value type: the subsystems that
//! verify their files make these, `os::journal` collects them, the agent publishes them.

use serde::{Deserialize, Serialize};

/// One repair: which file or container, what was wrong, what was done, and what (if anything) was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    /// What was damaged: a path under the state dir (`images/blobs/sha256/<hex>`) or `container <id>`.
    pub subject: String,
    /// What was wrong with it (`truncated: 812 of 4096 bytes`, `digest mismatch`, `monitor gone`).
    pub problem: String,
    /// What the agent did (`removed; pulled again when next used`, `restarted under a new monitor`).
    pub action: String,
    /// What could not be recovered, if anything (`up to 14 undelivered telemetry records`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
}

impl Repair {
    /// A repair that lost nothing.
    pub fn new(subject: impl Into<String>, problem: impl Into<String>, action: impl Into<String>) -> Self {
        Self { subject: subject.into(), problem: problem.into(), action: action.into(), lost: None }
    }

    /// The same repair, noting what was lost.
    pub fn lost(mut self, lost: impl Into<String>) -> Self {
        self.lost = Some(lost.into());
        self
    }
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}; {}", self.subject, self.problem, self.action)?;
        if let Some(l) = &self.lost {
            write!(f, " (lost: {l})")?;
        }
        Ok(())
    }
}
