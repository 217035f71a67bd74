//! What a device tells its controller about deployments: the retained `reported` payload (applied generation,
//! per-deployment state, image, digest, start time, restarts, exit code, health, last error, and the reasons a
//! document was refused) and one event per state transition.
//!
//! Types and pure builders only: publishing them is the MQTT module's job, and the states come from
//! `crate::deploy::plan`; nothing here decides what to run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::deploy::plan::{DeploymentState, Health};

/// The retained `reported` payload. Unknown fields are accepted when reading it, so an older CLI can read what a
/// newer agent reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    /// Generation of the desired document being applied (the device document's), if any.
    pub generation: Option<u64>,
    /// The last generation every deployment converged to (`jetship deploy --wait` waits for this).
    pub applied_generation: Option<u64>,
    /// Generation of each source's document in force: `device`, `group:<name>`.
    #[serde(default)]
    pub sources: BTreeMap<String, Option<u64>>,
    /// The last document refused, with every reason; the running deployments were left as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejected>,
    /// Every deployment desired or still being removed.
    #[serde(default)]
    pub deployments: BTreeMap<String, ReportedDeployment>,
    /// The last repairs the agent made to its own state (at most [`REPAIRS_KEPT`], newest last): what file or
    /// container, what was wrong, what it did, what was lost. Each was also an `events` message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<ReportedRepair>,
    /// When this report was made.
    pub at: DateTime<Utc>,
}

/// How many repairs `reported` keeps.
pub const REPAIRS_KEPT: usize = 32;

/// A repair, with when the agent made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedRepair {
    #[serde(flatten)]
    pub repair: crate::base::Repair,
    pub at: DateTime<Utc>,
}

impl Reported {
    /// Adds repairs, keeping the newest [`REPAIRS_KEPT`].
    pub(crate) fn add_repairs(&mut self, repairs: impl IntoIterator<Item = ReportedRepair>) {
        self.repairs.extend(repairs);
        let extra = self.repairs.len().saturating_sub(REPAIRS_KEPT);
        self.repairs.drain(..extra);
    }
}

/// A refused document and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// `device` or `group:<name>`.
    pub source: String,
    /// The refused document's generation, when it could be read.
    pub generation: Option<u64>,
    /// Every problem, one line each with its field path.
    pub reasons: Vec<String>,
    pub at: DateTime<Utc>,
}

impl Rejected {
    /// The rejection of a document that failed to parse or validate.
    pub(crate) fn from_error(
        source: &str,
        generation: Option<u64>,
        err: &crate::deploy::document::Error,
        at: DateTime<Utc>,
    ) -> Self {
        Self { source: source.into(), generation, reasons: err.reasons(), at }
    }

    /// The rejection of a valid document that asks for more than the local policy allows.
    pub(crate) fn from_problems(
        source: &str,
        generation: Option<u64>,
        problems: &[crate::deploy::document::Problem],
        at: DateTime<Utc>,
    ) -> Self {
        Self { source: source.into(), generation, reasons: problems.iter().map(|p| p.to_string()).collect(), at }
    }
}

/// One deployment in `reported`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedDeployment {
    /// `state` (`running`, `rolled-back`, ...) and its fields (`reason`, `done`/`total`, ...).
    #[serde(flatten)]
    pub state: DeploymentState,
    /// The image reference as the document wrote it.
    pub image: String,
    /// The digest it resolved to (`sha256:...`), once known.
    pub digest: Option<String>,
    /// When the running container started.
    pub started_at: Option<DateTime<Utc>>,
    /// Restarts of the current version.
    pub restarts: u32,
    /// Exit code of the last exit.
    pub exit_code: Option<i32>,
    /// The health check's last verdict; `None` without a health check.
    pub health: Option<Health>,
    /// The last error (pull, start, health), if any.
    pub error: Option<String>,
    /// The document source it comes from: `device` or `group:<name>`.
    pub source: Option<String>,
}

/// The digest part of a pinned reference (`name@sha256:...` -> `sha256:...`).
pub(crate) fn digest_of(pinned: &str) -> Option<String> {
    pinned.rsplit_once('@').map(|(_, d)| d.to_owned()).filter(|d| d.starts_with("sha256:"))
}

/// A deployment's state changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub deployment: String,
    /// The state's name before; `None` when the deployment is new.
    pub from: Option<String>,
    /// The state now; `None` when the deployment is gone.
    pub to: Option<DeploymentState>,
    pub at: DateTime<Utc>,
}

/// The events between two rounds' states. A change of state, or of a state's reason, is an event; progress
/// within `pulling` and the countdown within `restarting` are not.
pub(crate) fn transitions(
    before: &BTreeMap<String, DeploymentState>,
    after: &BTreeMap<String, DeploymentState>,
    at: DateTime<Utc>,
) -> Vec<Event> {
    let mut events = Vec::new();
    for (name, now) in after {
        let changed = match before.get(name) {
            None => true,
            Some(prev) if prev.name() != now.name() => true,
            Some(DeploymentState::Pulling { .. }) => false,
            Some(DeploymentState::Restarting { attempt, .. }) => {
                !matches!(now, DeploymentState::Restarting { attempt: a, .. } if a == attempt)
            }
            Some(prev) => prev != now,
        };
        if changed {
            events.push(Event {
                deployment: name.clone(),
                from: before.get(name).map(|s| s.name().to_owned()),
                to: Some(now.clone()),
                at,
            });
        }
    }
    for (name, prev) in before {
        if !after.contains_key(name) {
            events.push(Event { deployment: name.clone(), from: Some(prev.name().to_owned()), to: None, at });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn reported_payload_has_the_documented_shape_and_round_trips() {
        let r = Reported {
            generation: Some(4),
            applied_generation: Some(3),
            sources: BTreeMap::from([("device".to_owned(), Some(4)), ("group:lab".to_owned(), None)]),
            rejected: None,
            deployments: BTreeMap::from([(
                "yolo".to_owned(),
                ReportedDeployment {
                    state: DeploymentState::RolledBack { reason: "health check failed: timeout".into() },
                    image: "ultralytics/ultralytics:latest-jetson-jetpack{jetpack_major}".into(),
                    digest: digest_of(&format!("docker.io/ultralytics/ultralytics@sha256:{}", "a".repeat(64))),
                    started_at: Some(at()),
                    restarts: 2,
                    exit_code: Some(137),
                    health: Some(Health::Healthy),
                    error: Some("health check failed: timeout".into()),
                    source: Some("device".into()),
                },
            )]),
            repairs: Vec::new(),
            at: at(),
        };
        let json = serde_json::to_value(&r).unwrap();
        let y = &json["deployments"]["yolo"];
        assert_eq!(y["state"], "rolled-back");
        assert_eq!(y["reason"], "health check failed: timeout");
        assert_eq!(y["digest"], format!("sha256:{}", "a".repeat(64)));
        assert_eq!(y["health"]["status"], "healthy");
        assert_eq!(json["applied_generation"], 3);
        assert!(json.get("rejected").is_none());
        let back: Reported = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn rejection_lists_every_reason() {
        let big = vec![b' '; 2 << 20];
        let err = crate::deploy::document::parse(&big, None, "desired").unwrap_err();
        let r = Rejected::from_error("device", None, &err, at());
        assert_eq!(r.reasons.len(), 1);
        assert!(r.reasons[0].contains("limit"), "{:?}", r.reasons);
        let err = crate::deploy::document::parse(
            br#"{"deployments": {"Bad": {"image": "x", "colour": 1}}}"#,
            None,
            "desired",
        )
        .unwrap_err();
        let r = Rejected::from_error("group:lab", Some(2), &err, at());
        assert_eq!(r.reasons.len(), 2, "{:?}", r.reasons);
        assert!(r.reasons[0].contains("`deployments.Bad`") && r.reasons[0].contains("[a-z0-9]"), "{:?}", r.reasons);
        assert!(r.reasons[1].contains("deployments.Bad.colour"), "{:?}", r.reasons);
        let p = vec![crate::deploy::document::Problem { key: "deployments.a.privileged".into(), message: "no".into() }];
        assert_eq!(Rejected::from_problems("device", Some(1), &p, at()).reasons, ["`deployments.a.privileged`: no"]);
    }

    #[test]
    fn transitions_report_state_changes_not_progress() {
        use DeploymentState as S;
        let map = |v: Vec<(&str, S)>| v.into_iter().map(|(k, s)| (k.to_owned(), s)).collect::<BTreeMap<_, _>>();
        let before = map(vec![
            ("a", S::Pulling { done: 1, total: Some(10) }),
            ("b", S::Restarting { attempt: 1, backoff_ms: 900, reason: "x".into() }),
            ("c", S::Running),
            ("gone", S::Running),
            ("f", S::Failed { reason: "one".into() }),
        ]);
        let after = map(vec![
            ("a", S::Pulling { done: 5, total: Some(10) }),
            ("b", S::Restarting { attempt: 1, backoff_ms: 400, reason: "x".into() }),
            ("c", S::RolledBack { reason: "unhealthy".into() }),
            ("f", S::Failed { reason: "two".into() }),
            ("new", S::Pending),
        ]);
        let events = transitions(&before, &after, at());
        let summary: Vec<_> = events
            .iter()
            .map(|e| (e.deployment.as_str(), e.from.as_deref(), e.to.as_ref().map(|s| s.name())))
            .collect();
        assert_eq!(
            summary,
            [
                ("c", Some("running"), Some("rolled-back")),
                ("f", Some("failed"), Some("failed")),
                ("new", None, Some("pending")),
                ("gone", Some("running"), None)
            ]
        );
        assert!(transitions(&after, &after, at()).is_empty());
    }

    #[test]
    fn digest_is_taken_from_pinned_references_only() {
        assert_eq!(digest_of("busybox:1"), None);
        assert_eq!(digest_of("127.0.0.1:5000/a@sha256:ab").as_deref(), Some("sha256:ab"));
    }
}
