//! What each [`Action`] changes in [`Actual`] once it ran: the one place this is decided. The executor records
//! every result through [`record`], and the planner's tests play rounds with it, so the planner is tested
//! against the effects the executor really applies.

use super::{
    Action, Actual, Backoff, ContainerView, Failure, Health, Observed, Resolved, RolledBack, Stage, Task, Time,
};
use crate::base::labels;
use crate::runtime::RunState;

/// What came of an action the executor ran, or of the long step it started.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The action did what it says. For a resolve, a pull or a health check: the step is now in flight.
    Done,
    /// A stop finished; the container exited with this code.
    Stopped { exit_code: Option<i32> },
    /// A resolve finished with this pinned image (`name@sha256:...`).
    Resolved { image: String },
    /// A pull finished: the image is local.
    Pulled,
    /// A health checker's verdict.
    Health(Health),
    /// A create or start failed for a device the host lacks (a camera): the deployment waits for it.
    DeviceMissing { device: String },
    /// The step failed with `error`. A resolve, pull, create or start is retried with backoff; a failed stop
    /// or remove changes nothing here (the next round plans it again).
    Failed { error: String },
}

/// Records in `actual` what `outcome` of `action` changes at `now`, as each [`Action`] documents.
pub fn record(actual: &mut Actual, action: &Action, outcome: Outcome, now: Time, backoff: &Backoff) {
    let deployment = action.deployment().to_owned();
    if let Action::Forget { .. } = action {
        actual.deployments.remove(&deployment);
        return;
    }
    if let (Action::Pull { image, .. }, Outcome::Pulled) = (action, &outcome) {
        actual.images.insert(image.clone());
    }
    let obs = actual.deployments.entry(deployment).or_default();
    match (action, outcome) {
        (Action::Resolve { .. }, Outcome::Done) => obs.task = Some(Task::Resolving),
        (Action::Resolve { doc_hash, .. }, Outcome::Resolved { image }) => {
            obs.task = None;
            obs.resolved = Some(Resolved { doc_hash: doc_hash.clone(), image });
            obs.failure = None;
        }
        (Action::Pull { .. }, Outcome::Done) => obs.task = Some(Task::Pulling { done: 0, total: None }),
        (Action::Pull { .. }, Outcome::Pulled) => {
            obs.task = None;
            obs.failure = None;
        }
        (Action::Resolve { doc_hash, .. }, Outcome::Failed { error }) => {
            obs.task = None;
            fail(obs, doc_hash, Stage::Resolve, error, now, backoff);
        }
        (Action::Pull { doc_hash, .. }, Outcome::Failed { error }) => {
            obs.task = None;
            fail(obs, doc_hash, Stage::Pull, error, now, backoff);
        }
        (Action::Create { id, config, labels: l, .. }, Outcome::Done) => {
            obs.restart = Default::default();
            obs.failure = None;
            obs.containers.push(ContainerView {
                id: id.clone(),
                doc_hash: l.get(labels::DOC_HASH).cloned(),
                image: config.image.clone(),
                state: RunState::Created,
                exit_code: None,
                running_since: None,
                health: Health::NotChecked,
            });
        }
        (Action::Create { .. } | Action::Start { .. }, Outcome::DeviceMissing { device }) => {
            obs.device_missing = Some(device);
        }
        (Action::Create { labels: l, .. }, Outcome::Failed { error }) => {
            let doc_hash = l.get(labels::DOC_HASH).cloned().unwrap_or_default();
            fail(obs, &doc_hash, Stage::Create, error, now, backoff);
        }
        (Action::Start { id, .. }, Outcome::Done) => {
            if obs.restart.next_at.take().is_some() {
                obs.restart.restarts += 1;
                obs.restart.consecutive += 1;
            }
            obs.failure = None;
            running(obs, id, now);
        }
        (Action::Start { id, .. }, Outcome::Failed { error }) => {
            let doc_hash = obs.containers.iter().find(|c| &c.id == id).and_then(|c| c.doc_hash.clone());
            fail(obs, &doc_hash.unwrap_or_default(), Stage::Start, error, now, backoff);
        }
        (Action::Restart { id, .. }, Outcome::Done) => {
            // Asked for, not a crash: the backoff neither counts it nor waits for it.
            obs.restart.next_at = None;
            running(obs, id, now);
        }
        (Action::Stop { id, .. }, Outcome::Stopped { exit_code }) => {
            if let Some(c) = obs.containers.iter_mut().find(|c| &c.id == id) {
                (c.state, c.running_since, c.health, c.exit_code) =
                    (RunState::Exited, None, Health::NotChecked, exit_code);
            }
        }
        (Action::Remove { id, .. }, Outcome::Done) => obs.containers.retain(|c| &c.id != id),
        (Action::StartHealthCheck { id, .. }, Outcome::Done) => set_health(obs, id, Health::Checking),
        (Action::StartHealthCheck { id, .. }, Outcome::Health(h)) => set_health(obs, id, h),
        (Action::ScheduleRestart { at, .. }, Outcome::Done) => obs.restart.next_at = Some(*at),
        (Action::ResetBackoff { .. }, Outcome::Done) => obs.restart.consecutive = 0,
        (Action::MarkRolledBack { doc_hash, reason, .. }, Outcome::Done) => {
            obs.rolled_back = Some(RolledBack { doc_hash: doc_hash.clone(), reason: reason.clone() });
        }
        // Failed stops and removes, and outcomes that do not belong to the action, change nothing.
        _ => {}
    }
}

fn fail(obs: &mut Observed, doc_hash: &str, stage: Stage, error: String, now: Time, backoff: &Backoff) {
    obs.failure = Some(Failure::after(obs.failure.as_ref(), doc_hash, stage, error, now, backoff));
}

fn running(obs: &mut Observed, id: &str, now: Time) {
    if let Some(c) = obs.containers.iter_mut().find(|c| c.id == id) {
        (c.state, c.running_since, c.health, c.exit_code) = (RunState::Running, Some(now), Health::NotChecked, None);
    }
}

fn set_health(obs: &mut Observed, id: &str, health: Health) {
    if let Some(c) = obs.containers.iter_mut().find(|c| c.id == id) {
        c.health = health;
    }
}

/// The container a `cmd/restart` of `deployment` stops and starts again ([`Action::Restart`]): its serving one,
/// the running one, else an exited one. The error says what is missing.
pub fn restart_target(actual: &Actual, deployment: &str) -> std::result::Result<String, String> {
    let obs = actual.deployments.get(deployment);
    let c = obs.and_then(|o| {
        o.containers
            .iter()
            .find(|c| c.state == RunState::Running)
            .or_else(|| o.containers.iter().find(|c| c.state == RunState::Exited))
    });
    match c {
        Some(c) => Ok(c.id.clone()),
        None => Err(format!("no container of deployment `{deployment}` on this device (see `jetship devices`)")),
    }
}
