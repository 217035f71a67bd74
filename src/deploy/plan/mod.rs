//! The reconciler's pure half: given the desired deployments and what the device actually has (containers,
//! local images, operations in flight, failures, restart backoff), [`plan`] returns the actions that move the
//! device one step closer, and the state to report for every deployment.
//!
//! No IO and no clock: time comes in as `now` (a monotonic [`Time`]), and everything the executor remembers
//! between rounds (backoff, failures, rollbacks) comes in through [`Actual`]. The executor that runs the actions
//! against a `ContainerRuntime` and the pull engine, and updates [`Actual`] with their effects (documented on
//! each [`Action`]), lives elsewhere and must not make decisions of its own. States and transitions are
//! documented in docs/deployments.md.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) mod effect;
pub mod health;

pub use effect::{record, restart_target, Outcome};

use crate::deploy::document::{Deployment, Document, HealthCheck, RestartPolicy};
use crate::runtime::{labels, ContainerConfig, ContainerInfo, RunState};

/// Monotonic time since an origin the executor picks (e.g. agent start).
pub type Time = Duration;

/// Capped exponential backoff for restarts and retries: `base`, `2*base`, `4*base`, ... up to `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay. 1 s.
    pub base: Duration,
    /// Longest delay. 5 min.
    pub cap: Duration,
    /// A container running this long without a restart has its restart count for backoff reset. 10 min.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(1), cap: Duration::from_secs(300), reset_after: Duration::from_secs(600) }
    }
}

impl Backoff {
    /// The delay before attempt `attempt + 1` after `attempt` consecutive failures (0 gives `base`).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).map_or(self.cap, |d| d.min(self.cap))
    }
}

/// A container's health as the executor's health checker last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Health {
    /// No checker runs for it (just started, or the deployment has no health check).
    #[default]
    NotChecked,
    /// A checker runs and has not decided yet.
    Checking,
    Healthy,
    Unhealthy {
        reason: String,
    },
}

/// One container of a deployment, as the reconciler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    /// Backend id.
    pub id: String,
    /// [`labels::DOC_HASH`]; `None` for containers made by something older.
    pub doc_hash: Option<String>,
    /// The pinned image it runs ([`labels::IMAGE`]).
    pub image: String,
    pub state: RunState,
    pub exit_code: Option<i32>,
    /// When it last started running, on the [`Time`] scale; `None` unless running.
    pub running_since: Option<Time>,
    pub health: Health,
}

impl ContainerView {
    /// The view of a container a backend lists, placing its wall-clock start on the monotonic scale
    /// (`now` is `now_wall` on that scale). Health starts as [`Health::NotChecked`].
    pub(crate) fn from_info(info: &ContainerInfo, now: Time, now_wall: chrono::DateTime<chrono::Utc>) -> Self {
        let running_since = match (info.state, info.started_at) {
            (RunState::Running, Some(at)) => {
                let ago = (now_wall - at).to_std().unwrap_or_default();
                Some(now.saturating_sub(ago))
            }
            (RunState::Running, None) => Some(now),
            _ => None,
        };
        Self {
            id: info.id.clone(),
            doc_hash: info.labels.get(labels::DOC_HASH).cloned(),
            image: info.labels.get(labels::IMAGE).cloned().unwrap_or_default(),
            state: info.state,
            exit_code: info.exit_code,
            running_since,
            health: Health::NotChecked,
        }
    }
}

/// The pinned image a deployment version resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The version ([`Deployment::doc_hash`]) it was resolved for.
    pub doc_hash: String,
    /// `registry/repo@sha256:...`.
    pub image: String,
}

/// A long operation the executor has in flight for a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    Resolving,
    Pulling { done: u64, total: Option<u64> },
}

/// The step of bringing up a version that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Resolve,
    Pull,
    Create,
    Start,
}

/// The last failure of a step, retried with backoff until it succeeds or the version changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The version it failed for; a failure of another version is ignored.
    pub doc_hash: String,
    pub stage: Stage,
    pub error: String,
    /// Consecutive failed attempts.
    pub attempts: u32,
    /// No retry before this.
    pub retry_at: Time,
}

impl Failure {
    /// The failure to record after an attempt failed at `now`, counting on from `previous` when it was the same
    /// version and step.
    pub fn after(
        previous: Option<&Failure>,
        doc_hash: &str,
        stage: Stage,
        error: String,
        now: Time,
        backoff: &Backoff,
    ) -> Self {
        let before = previous.filter(|f| f.doc_hash == doc_hash && f.stage == stage).map_or(0, |f| f.attempts);
        Self { doc_hash: doc_hash.into(), stage, error, attempts: before + 1, retry_at: now + backoff.delay(before) }
    }
}

/// Restart bookkeeping of a deployment's running version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartBook {
    /// Restarts since the version was created (reported).
    pub restarts: u32,
    /// Restarts since the container last ran stably; drives the backoff.
    pub consecutive: u32,
    /// A restart is scheduled for this time.
    pub next_at: Option<Time>,
}

/// A version that failed its health gate and was rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledBack {
    pub doc_hash: String,
    pub reason: String,
}

/// What the device has and remembers for one deployment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Its containers (labelled with the deployment's name).
    pub containers: Vec<ContainerView>,
    pub resolved: Option<Resolved>,
    pub task: Option<Task>,
    pub failure: Option<Failure>,
    /// A device the container needs and the host lacks (a camera); set by the executor when create or start
    /// failed for it, cleared when the devices change.
    pub device_missing: Option<String>,
    pub restart: RestartBook,
    pub rolled_back: Option<RolledBack>,
}

/// Everything the device has, per deployment name, plus the pinned images present locally.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actual {
    pub deployments: BTreeMap<String, Observed>,
    /// Pinned references (`name@sha256:...`) ready to run.
    pub images: BTreeSet<String>,
}

/// One step for the executor. Each says what it changes in [`Actual`] when it is done, as [`record`] applies it;
/// a failed step skips the rest of that deployment's actions in the same plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Resolve `image` (templates, `{auto}`, tag to digest) for version `doc_hash`. While in flight:
    /// `task = Resolving`; done: `resolved`; failed: `failure` ([`Failure::after`], stage resolve).
    Resolve { deployment: String, doc_hash: String, image: String },
    /// Pull (and unpack) the pinned `image` while any old container keeps running. In flight: `task = Pulling`
    /// with progress; done: `images` gains it; failed: `failure` (stage pull).
    Pull { deployment: String, doc_hash: String, image: String },
    /// Create (not start) container `id`. Done: a `Created` container; the restart book is reset.
    /// A missing camera sets `device_missing`; another error sets `failure` (stage create).
    Create { deployment: String, id: String, config: Box<ContainerConfig>, labels: BTreeMap<String, String> },
    /// Start container `id`. Done: `Running`, `running_since = now`, health `NotChecked`; when a restart was
    /// scheduled it counts one (`restarts` and `consecutive` + 1, `next_at` cleared).
    Start { deployment: String, id: String },
    /// Stop container `id` (SIGTERM, then SIGKILL after the grace time) and end its health checker.
    Stop { deployment: String, id: String },
    /// Remove stopped container `id`.
    Remove { deployment: String, id: String },
    /// Run `check` against container `id` until it decides; health `Checking`, then `Healthy` or `Unhealthy`.
    StartHealthCheck { deployment: String, id: String, check: HealthCheck },
    /// Restart the deployment's container at `at` (attempt `attempt`): sets `restart.next_at`.
    ScheduleRestart { deployment: String, at: Time, attempt: u32 },
    /// The container ran stably: `restart.consecutive = 0`.
    ResetBackoff { deployment: String },
    /// Version `doc_hash` failed its health gate and the previous one was restored: sets `rolled_back`.
    MarkRolledBack { deployment: String, doc_hash: String, reason: String },
    /// A removed deployment has nothing left: drop its entry from [`Actual`].
    Forget { deployment: String },
    /// Stop and start container `id` again, asked for by `cmd/restart` ([`restart_target`]), never planned. Done:
    /// `Running`, `running_since = now`, health `NotChecked`; `restart.next_at` is cleared and nothing counted.
    Restart { deployment: String, id: String },
}

impl Action {
    /// The deployment the action is for.
    pub fn deployment(&self) -> &str {
        match self {
            Self::Resolve { deployment, .. }
            | Self::Pull { deployment, .. }
            | Self::Create { deployment, .. }
            | Self::Start { deployment, .. }
            | Self::Stop { deployment, .. }
            | Self::Remove { deployment, .. }
            | Self::StartHealthCheck { deployment, .. }
            | Self::ScheduleRestart { deployment, .. }
            | Self::ResetBackoff { deployment }
            | Self::MarkRolledBack { deployment, .. }
            | Self::Forget { deployment }
            | Self::Restart { deployment, .. } => deployment,
        }
    }
}

/// A deployment's state as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum DeploymentState {
    /// Desired, nothing done yet.
    Pending,
    /// Its image reference is being resolved to a digest.
    Resolving,
    /// Its image is being pulled (bytes so far and in all, when known).
    Pulling { done: u64, total: Option<u64> },
    /// Its container is being created or started.
    Starting,
    /// Running; the health gate has not decided yet.
    HealthChecking,
    /// Running (and healthy, when it has a health check).
    Running,
    /// Running but failing its health check, and its restart policy does not restart it.
    Unhealthy { reason: String },
    /// Exited or unhealthy; restarts after a backoff of `backoff_ms` (attempt `attempt`). `backoff_ms` is the
    /// attempt's whole delay, not a countdown, so the state stays the same while it waits.
    Restarting { attempt: u32, backoff_ms: u64, reason: String },
    /// Needs a device the host lacks (a camera); starts when it appears.
    WaitingForDevice { device: String },
    /// Cannot run; retried with backoff where a retry can help.
    Failed { reason: String },
    /// The new version failed its health gate; the previous version runs again.
    RolledBack { reason: String },
    /// Exited with code 0 and its restart policy does not restart it.
    Completed,
    /// No longer desired; its containers are being stopped and removed.
    Removing,
}

impl DeploymentState {
    /// The state's name as reported (`health-checking`, `rolled-back`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Resolving => "resolving",
            Self::Pulling { .. } => "pulling",
            Self::Starting => "starting",
            Self::HealthChecking => "health-checking",
            Self::Running => "running",
            Self::Unhealthy { .. } => "unhealthy",
            Self::Restarting { .. } => "restarting",
            Self::WaitingForDevice { .. } => "waiting-for-device",
            Self::Failed { .. } => "failed",
            Self::RolledBack { .. } => "rolled-back",
            Self::Completed => "completed",
            Self::Removing => "removing",
        }
    }

    /// Whether the deployment reached what was asked (`running`, or `completed` for a run-once container).
    pub(crate) fn is_converged(&self) -> bool {
        matches!(self, Self::Running | Self::Completed)
    }
}

/// The reconciler's answer for one round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Actions in the order to run them.
    pub actions: Vec<Action>,
    /// The state of every desired deployment and of every removed one that still has something to clean up.
    pub states: BTreeMap<String, DeploymentState>,
    /// No action is left and every desired deployment is converged: the desired generation is applied.
    pub converged: bool,
}

impl Plan {
    /// The generation to report as applied: `desired`'s once this plan says the device converged, else the
    /// one applied before.
    pub fn applied_generation(&self, desired: &Document, previous: Option<u64>) -> Option<u64> {
        if self.converged {
            desired.generation.or(previous)
        } else {
            previous
        }
    }
}

/// Plans one round: what to do so that `actual` moves towards `desired` at time `now`. Pure: the same input
/// gives the same plan, and once the actions' effects are applied the plan of a converged device is empty.
pub fn plan(desired: &Document, actual: &Actual, now: Time, backoff: &Backoff) -> Plan {
    let mut out = Plan::default();
    let empty = Observed::default();
    for (name, d) in &desired.deployments {
        let obs = actual.deployments.get(name).unwrap_or(&empty);
        let mut p = Planner { name, d, obs, now, backoff, images: &actual.images, actions: &mut out.actions };
        let state = p.desired();
        out.states.insert(name.clone(), state);
    }
    for (name, obs) in &actual.deployments {
        if desired.deployments.contains_key(name) {
            continue;
        }
        if obs.task.is_some() {
            // An in-flight pull or resolve finishes first; its result is then dropped.
            out.states.insert(name.clone(), DeploymentState::Removing);
            continue;
        }
        if obs.containers.is_empty() {
            out.actions.push(Action::Forget { deployment: name.clone() });
            continue;
        }
        for c in &obs.containers {
            stop_and_remove(name, c, &mut out.actions);
        }
        out.states.insert(name.clone(), DeploymentState::Removing);
    }
    out.converged = out.actions.is_empty()
        && out.states.len() == desired.deployments.len()
        && out.states.values().all(DeploymentState::is_converged);
    out
}

fn stop_and_remove(name: &str, c: &ContainerView, actions: &mut Vec<Action>) {
    if matches!(c.state, RunState::Running | RunState::Paused) {
        actions.push(Action::Stop { deployment: name.into(), id: c.id.clone() });
    }
    actions.push(Action::Remove { deployment: name.into(), id: c.id.clone() });
}

/// The container id of a deployment version: `<name>-<first 12 of the doc hash>`.
pub(crate) fn container_id(name: &str, doc_hash: &str) -> String {
    format!("{name}-{}", &doc_hash[..doc_hash.len().min(12)])
}

struct Planner<'a> {
    name: &'a str,
    d: &'a Deployment,
    obs: &'a Observed,
    now: Time,
    backoff: &'a Backoff,
    images: &'a BTreeSet<String>,
    actions: &'a mut Vec<Action>,
}

impl Planner<'_> {
    fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    fn dep(&self) -> String {
        self.name.to_owned()
    }

    fn desired(&mut self) -> DeploymentState {
        let hash = self.d.doc_hash();
        let (new, old): (Vec<&ContainerView>, Vec<&ContainerView>) =
            self.obs.containers.iter().partition(|c| c.doc_hash.as_deref() == Some(hash.as_str()));

        if let Some(rb) = self.obs.rolled_back.as_ref().filter(|rb| rb.doc_hash == hash) {
            // The new version failed its gate: clean up what is left of it and keep the previous one alive.
            for c in &new {
                stop_and_remove(self.name, c, self.actions);
            }
            let reason = rb.reason.clone();
            if let Some(serving) = pick_serving(&old) {
                for c in old.iter().filter(|c| c.id != serving.id) {
                    stop_and_remove(self.name, c, self.actions);
                }
                if let Some(state) = self.keep_alive(serving) {
                    return state;
                }
            }
            return DeploymentState::RolledBack { reason };
        }

        if let Some((current, extra)) = new.split_first() {
            for c in extra {
                stop_and_remove(self.name, c, self.actions);
            }
            return self.current(current, &old);
        }

        // No container of this version yet: resolve, pull, then create. Until the create, the old version is
        // the one serving: if it exited (it crashed, or the agent died mid-update) its restart policy applies.
        let before = self.actions.len();
        let state = self.bring_up(&hash, &old);
        let creating = self.actions[before..].iter().any(|a| matches!(a, Action::Create { .. }));
        if !creating {
            if let Some(serving) =
                pick_serving(&old).filter(|c| matches!(c.state, RunState::Exited | RunState::Created))
            {
                self.keep_alive(serving);
            }
        }
        state
    }

    /// Resolves, pulls and creates version `hash`, one step per round.
    fn bring_up(&mut self, hash: &str, old: &[&ContainerView]) -> DeploymentState {
        let hash = hash.to_owned();
        if let Some(task) = &self.obs.task {
            return match task {
                Task::Resolving => DeploymentState::Resolving,
                Task::Pulling { done, total } => DeploymentState::Pulling { done: *done, total: *total },
            };
        }
        let resolved = self.obs.resolved.as_ref().filter(|r| r.doc_hash == hash);
        let Some(resolved) = resolved else {
            if let Some(state) = self.waiting_retry(&hash, Stage::Resolve) {
                return state;
            }
            self.push(Action::Resolve { deployment: self.dep(), doc_hash: hash.clone(), image: self.d.image.clone() });
            return if self.obs.failure.is_some() { DeploymentState::Resolving } else { DeploymentState::Pending };
        };
        if !self.images.contains(&resolved.image) {
            if let Some(state) = self.waiting_retry(&hash, Stage::Pull) {
                return state;
            }
            self.push(Action::Pull { deployment: self.dep(), doc_hash: hash.clone(), image: resolved.image.clone() });
            return DeploymentState::Pulling { done: 0, total: None };
        }
        let image = resolved.image.clone();
        self.create(&hash, &image, old)
    }

    /// Creates the container of version `hash` from the local pinned `image`, stopping the old ones first
    /// unless the document keeps them running through the health gate.
    fn create(&mut self, hash: &str, image: &str, old: &[&ContainerView]) -> DeploymentState {
        if let Some(device) = &self.obs.device_missing {
            return DeploymentState::WaitingForDevice { device: device.clone() };
        }
        if let Some(state) = self.waiting_retry(hash, Stage::Create) {
            return state;
        }
        let config = match self.d.container_config(self.name, image) {
            Ok(c) => c,
            Err(e) => return DeploymentState::Failed { reason: e.to_string() },
        };
        if !self.d.update.keep_old {
            for c in old.iter().filter(|c| matches!(c.state, RunState::Running | RunState::Paused)) {
                self.push(Action::Stop { deployment: self.dep(), id: c.id.clone() });
            }
        }
        let id = container_id(self.name, hash);
        // Ids come from the version's hash, so a container under this id that reads as another version has a
        // record that disagrees with its id (a flipped bit): it goes first, or the create could never succeed.
        if let Some(stale) = old.iter().find(|c| c.id == id) {
            if self.d.update.keep_old && matches!(stale.state, RunState::Running | RunState::Paused) {
                self.push(Action::Stop { deployment: self.dep(), id: id.clone() });
            }
            self.push(Action::Remove { deployment: self.dep(), id: id.clone() });
        }
        let version = BTreeMap::from([
            (labels::DEPLOYMENT.to_owned(), self.dep()),
            (labels::DOC_HASH.to_owned(), hash.to_owned()),
        ]);
        let labels = labels::stamp(version, &id, &config, None);
        self.push(Action::Create { deployment: self.dep(), id, config: Box::new(config), labels });
        DeploymentState::Starting
    }

    /// A failure of `stage` for `hash` whose retry is not due yet.
    fn waiting_retry(&self, hash: &str, stage: Stage) -> Option<DeploymentState> {
        let f = self.obs.failure.as_ref().filter(|f| f.doc_hash == hash && f.stage == stage)?;
        // No countdown in the reason: a state that only ticks would be a new event and a new retained
        // `reported` every round.
        (self.now < f.retry_at).then(|| DeploymentState::Failed {
            reason: format!(
                "{} failed (attempt {}): {}; retrying with backoff",
                stage_name(stage),
                f.attempts,
                f.error
            ),
        })
    }

    /// The container of the desired version exists: start it, gate it on health, promote or roll back, and
    /// apply the restart policy.
    fn current(&mut self, c: &ContainerView, old: &[&ContainerView]) -> DeploymentState {
        let hash = c.doc_hash.clone().unwrap_or_default();
        let gate_open = !old.is_empty();
        match c.state {
            RunState::Missing => {
                // Gone from the runtime (a reboot cleared it): forget it and create it again from the pinned
                // image it ran, without asking a registry (the device may be offline).
                self.push(Action::Remove { deployment: self.dep(), id: c.id.clone() });
                if !c.image.is_empty() && self.images.contains(&c.image) {
                    return self.create(&hash, &c.image.clone(), old);
                }
                DeploymentState::Starting
            }
            RunState::Created => {
                if let Some(device) = &self.obs.device_missing {
                    return DeploymentState::WaitingForDevice { device: device.clone() };
                }
                if let Some(state) = self.waiting_retry(&hash, Stage::Start) {
                    return state;
                }
                if !self.d.update.keep_old {
                    for o in old.iter().filter(|o| matches!(o.state, RunState::Running | RunState::Paused)) {
                        self.push(Action::Stop { deployment: self.dep(), id: o.id.clone() });
                    }
                }
                self.push(Action::Start { deployment: self.dep(), id: c.id.clone() });
                DeploymentState::Starting
            }
            RunState::Running | RunState::Paused => {
                let health = match (&self.d.health, &c.health) {
                    (None, _) => Health::Healthy,
                    (Some(check), Health::NotChecked) => {
                        self.push(Action::StartHealthCheck {
                            deployment: self.dep(),
                            id: c.id.clone(),
                            check: check.clone(),
                        });
                        return DeploymentState::HealthChecking;
                    }
                    (Some(_), h) => h.clone(),
                };
                match health {
                    Health::Healthy | Health::NotChecked => {
                        self.promote(old);
                        self.reset_backoff_if_stable(c);
                        DeploymentState::Running
                    }
                    Health::Checking => DeploymentState::HealthChecking,
                    Health::Unhealthy { reason } => {
                        let reason = format!("health check failed: {reason}");
                        if gate_open && self.d.update.rollback {
                            if let Some(state) = self.rollback(c, old, &hash, &reason) {
                                return state;
                            }
                        }
                        self.promote(old);
                        if self.d.restart == RestartPolicy::Never {
                            return DeploymentState::Unhealthy { reason };
                        }
                        self.push(Action::Stop { deployment: self.dep(), id: c.id.clone() });
                        self.schedule_restart(reason)
                    }
                }
            }
            RunState::Exited => {
                let reason = match c.exit_code {
                    Some(code) => format!("exited with code {code}"),
                    None => "exited".to_owned(),
                };
                if gate_open && self.d.update.rollback && self.obs.restart.next_at.is_none() {
                    let why = format!("{reason} before passing its health check");
                    if let Some(state) = self.rollback(c, old, &hash, &why) {
                        return state;
                    }
                }
                self.promote(old);
                self.exited(c, reason)
            }
        }
    }

    /// The restart policy for an exited container `c` of the version being served.
    fn exited(&mut self, c: &ContainerView, reason: String) -> DeploymentState {
        if let Some(at) = self.obs.restart.next_at {
            if self.now >= at {
                self.push(Action::Start { deployment: self.dep(), id: c.id.clone() });
                return DeploymentState::Starting;
            }
            // The backoff of this attempt, not the time left: the state must not change while it only waits.
            return DeploymentState::Restarting {
                attempt: self.obs.restart.consecutive + 1,
                backoff_ms: self.backoff.delay(self.obs.restart.consecutive).as_millis() as u64,
                reason,
            };
        }
        let restart = match self.d.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => c.exit_code != Some(0),
            RestartPolicy::Never => false,
        };
        if restart {
            self.schedule_restart(reason)
        } else if c.exit_code == Some(0) {
            DeploymentState::Completed
        } else {
            DeploymentState::Failed { reason }
        }
    }

    fn schedule_restart(&mut self, reason: String) -> DeploymentState {
        let attempt = self.obs.restart.consecutive + 1;
        let delay = self.backoff.delay(self.obs.restart.consecutive);
        let at = self.obs.restart.next_at.unwrap_or(self.now + delay);
        if self.obs.restart.next_at.is_none() {
            self.push(Action::ScheduleRestart { deployment: self.dep(), at, attempt });
        }
        DeploymentState::Restarting { attempt, backoff_ms: delay.as_millis() as u64, reason }
    }

    fn reset_backoff_if_stable(&mut self, c: &ContainerView) {
        let stable = c.running_since.is_some_and(|since| self.now >= since + self.backoff.reset_after);
        if stable && self.obs.restart.consecutive > 0 {
            self.push(Action::ResetBackoff { deployment: self.dep() });
        }
    }

    /// The new version passed (or no longer needs) its gate: the old containers go.
    fn promote(&mut self, old: &[&ContainerView]) {
        for o in old {
            stop_and_remove(self.name, o, self.actions);
        }
    }

    /// Restores the previous version; `None` when there is none that can run (then the new one stays).
    fn rollback(
        &mut self,
        c: &ContainerView,
        old: &[&ContainerView],
        hash: &str,
        reason: &str,
    ) -> Option<DeploymentState> {
        let restore = pick_serving(old)?;
        stop_and_remove(self.name, c, self.actions);
        for o in old.iter().filter(|o| o.id != restore.id) {
            stop_and_remove(self.name, o, self.actions);
        }
        if !matches!(restore.state, RunState::Running | RunState::Paused) {
            self.push(Action::Start { deployment: self.dep(), id: restore.id.clone() });
        }
        self.push(Action::MarkRolledBack {
            deployment: self.dep(),
            doc_hash: hash.to_owned(),
            reason: reason.to_owned(),
        });
        Some(DeploymentState::RolledBack { reason: reason.to_owned() })
    }

    /// Keeps the restored previous version running under the deployment's restart policy. `None` while it
    /// simply runs (the state stays `rolled-back`).
    fn keep_alive(&mut self, c: &ContainerView) -> Option<DeploymentState> {
        match c.state {
            RunState::Running | RunState::Paused => {
                self.reset_backoff_if_stable(c);
                None
            }
            RunState::Created => {
                self.push(Action::Start { deployment: self.dep(), id: c.id.clone() });
                None
            }
            RunState::Exited => {
                let reason = match c.exit_code {
                    Some(code) => format!("previous version exited with code {code}"),
                    None => "previous version exited".to_owned(),
                };
                match self.exited(c, reason) {
                    DeploymentState::Completed => None,
                    other => Some(other),
                }
            }
            RunState::Missing => {
                self.push(Action::Remove { deployment: self.dep(), id: c.id.clone() });
                Some(DeploymentState::Failed { reason: "the previous version's container is gone".into() })
            }
        }
    }
}

/// The old container to serve or restore: a running one first, else any that still exists.
fn pick_serving<'a>(old: &[&'a ContainerView]) -> Option<&'a ContainerView> {
    old.iter()
        .find(|c| matches!(c.state, RunState::Running | RunState::Paused))
        .or_else(|| old.iter().find(|c| c.state != RunState::Missing))
        .copied()
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Resolve => "resolving the image",
        Stage::Pull => "pulling the image",
        Stage::Create => "creating the container",
        Stage::Start => "starting the container",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::document::{parse, Format};

    const APP: &str = "app";

    fn t(secs: u64) -> Time {
        Duration::from_secs(secs)
    }

    fn doc(text: &str) -> Document {
        parse(text.as_bytes(), Some(Format::Toml), "t.toml").unwrap()
    }

    /// A one-deployment document `app` with image `busybox:<version>` and extra TOML lines.
    fn app(version: &str, extra: &str) -> Document {
        doc(&format!("[deployments.app]\nimage = \"busybox:{version}\"\n{extra}"))
    }

    const HEALTH: &str = "[deployments.app.health]\nexec = [\"true\"]\n";

    /// A document built in code, past validation, that does not convert into a container config.
    fn unconvertible() -> Document {
        let mut d = app("2", "");
        d.deployments.get_mut(APP).unwrap().devices.push("nonsense".into());
        d
    }

    fn hash(d: &Document) -> String {
        d.deployments[APP].doc_hash()
    }

    fn pinned(image: &str) -> String {
        format!("{image}@sha256:{}", "0".repeat(64))
    }

    fn container(d: &Document, state: RunState) -> ContainerView {
        let h = hash(d);
        ContainerView {
            id: container_id(APP, &h),
            doc_hash: Some(h),
            image: pinned(&d.deployments[APP].image),
            state,
            exit_code: (state == RunState::Exited).then_some(1),
            running_since: (state == RunState::Running).then_some(t(0)),
            health: Health::NotChecked,
        }
    }

    /// An `Actual` where `d`'s version is resolved and pulled, holding `containers`.
    fn ready(d: &Document, containers: Vec<ContainerView>) -> Actual {
        let image = pinned(&d.deployments[APP].image);
        let obs = Observed {
            containers,
            resolved: Some(Resolved { doc_hash: hash(d), image: image.clone() }),
            ..Default::default()
        };
        Actual { deployments: BTreeMap::from([(APP.to_owned(), obs)]), images: BTreeSet::from([image]) }
    }

    /// The actions, short: `verb target` with container ids shown as `new`/`old` relative to `d`.
    fn short(actions: &[Action], d: &Document) -> Vec<String> {
        let new_id = d.deployments.get(APP).map(|x| container_id(APP, &x.doc_hash()));
        let id = |i: &str| if Some(i) == new_id.as_deref() { "new".to_owned() } else { "old".to_owned() };
        actions
            .iter()
            .map(|a| match a {
                Action::Resolve { deployment, .. } => format!("resolve {deployment}"),
                Action::Pull { deployment, .. } => format!("pull {deployment}"),
                Action::Create { id: i, .. } => format!("create {}", id(i)),
                Action::Start { id: i, .. } => format!("start {}", id(i)),
                Action::Stop { id: i, .. } => format!("stop {}", id(i)),
                Action::Remove { id: i, .. } => format!("remove {}", id(i)),
                Action::StartHealthCheck { id: i, .. } => format!("health {}", id(i)),
                Action::ScheduleRestart { deployment, .. } => format!("schedule {deployment}"),
                Action::ResetBackoff { deployment } => format!("reset {deployment}"),
                Action::MarkRolledBack { deployment, .. } => format!("rolled-back {deployment}"),
                Action::Forget { deployment } => format!("forget {deployment}"),
                Action::Restart { id: i, .. } => format!("restart {}", id(i)),
            })
            .collect()
    }

    /// The executor's effects ([`record`]), as if every action succeeded at `now`: a resolve pins its image,
    /// a pull brings it, a stop exits with 143.
    fn apply(actual: &mut Actual, actions: &[Action], now: Time) {
        let backoff = Backoff::default();
        for a in actions {
            record(actual, a, Outcome::Done, now, &backoff);
            let finished = match a {
                Action::Resolve { image, .. } => Outcome::Resolved { image: pinned(image) },
                Action::Pull { .. } => Outcome::Pulled,
                Action::Stop { .. } => Outcome::Stopped { exit_code: Some(143) },
                _ => continue,
            };
            record(actual, a, finished, now, &backoff);
        }
    }

    /// Plans and applies until nothing is left to do, deciding each health check with `verdict`. Checks on the
    /// way that planning is idempotent (the same input plans the same twice). Returns every round's actions.
    fn settle(
        desired: &Document,
        actual: &mut Actual,
        now: Time,
        verdict: impl Fn(&str) -> Health,
    ) -> Vec<Vec<String>> {
        let mut rounds = Vec::new();
        for _ in 0..30 {
            let p = plan(desired, actual, now, &Backoff::default());
            assert_eq!(p, plan(desired, actual, now, &Backoff::default()), "planning is not idempotent");
            if p.actions.is_empty() {
                return rounds;
            }
            rounds.push(short(&p.actions, desired));
            apply(actual, &p.actions, now);
            for obs in actual.deployments.values_mut() {
                for c in &mut obs.containers {
                    if c.health == Health::Checking {
                        c.health = verdict(&c.image);
                    }
                }
            }
        }
        panic!("did not settle: {rounds:?}");
    }

    fn state(d: &Document, actual: &Actual, now: Time) -> DeploymentState {
        plan(d, actual, now, &Backoff::default()).states[APP].clone()
    }

    struct Case {
        name: &'static str,
        doc: Document,
        actual: Actual,
        now: Time,
        actions: &'static [&'static str],
        state: DeploymentState,
    }

    fn with(mut actual: Actual, f: impl FnOnce(&mut Observed)) -> Actual {
        f(actual.deployments.entry(APP.into()).or_default());
        actual
    }

    fn failure(d: &Document, stage: Stage, retry_at: Time) -> Failure {
        Failure { doc_hash: hash(d), stage, error: "connection refused".into(), attempts: 2, retry_at }
    }

    fn cases() -> Vec<Case> {
        let v1 = app("1", "");
        let v1h = app("1", HEALTH);
        let v1never = app("1", "restart = \"never\"");
        let v1onf = app("1", "restart = \"on-failure\"");
        let v2 = app("2", HEALTH);
        let v2keep = app("2", &format!("{HEALTH}[deployments.app.update]\nkeep_old = true\n"));
        let v2norb = app("2", &format!("{HEALTH}[deployments.app.update]\nrollback = false\n"));
        let old = |state| ContainerView { id: "app-old".into(), ..container(&v1, state) };
        let exited = |d: &Document, code| ContainerView { exit_code: Some(code), ..container(d, RunState::Exited) };
        let health = |d: &Document, h: Health| ContainerView { health: h, ..container(d, RunState::Running) };
        let unhealthy = Health::Unhealthy { reason: "exit code 1".into() };
        vec![
            Case {
                name: "new deployment resolves first",
                doc: v1.clone(),
                actual: Actual::default(),
                now: t(0),
                actions: &["resolve app"],
                state: DeploymentState::Pending,
            },
            Case {
                name: "resolve in flight waits",
                doc: v1.clone(),
                actual: with(Actual::default(), |o| o.task = Some(Task::Resolving)),
                now: t(0),
                actions: &[],
                state: DeploymentState::Resolving,
            },
            Case {
                name: "pull in flight reports progress",
                doc: v1.clone(),
                actual: with(Actual::default(), |o| o.task = Some(Task::Pulling { done: 5, total: Some(10) })),
                now: t(0),
                actions: &[],
                state: DeploymentState::Pulling { done: 5, total: Some(10) },
            },
            Case {
                name: "resolved image is pulled",
                doc: v1.clone(),
                actual: {
                    let mut a = ready(&v1, vec![]);
                    a.images.clear();
                    a
                },
                now: t(0),
                actions: &["pull app"],
                state: DeploymentState::Pulling { done: 0, total: None },
            },
            Case {
                name: "pulled image is created",
                doc: v1.clone(),
                actual: ready(&v1, vec![]),
                now: t(0),
                actions: &["create new"],
                state: DeploymentState::Starting,
            },
            Case {
                name: "created container is started",
                doc: v1.clone(),
                actual: ready(&v1, vec![container(&v1, RunState::Created)]),
                now: t(0),
                actions: &["start new"],
                state: DeploymentState::Starting,
            },
            Case {
                name: "running without health check is running",
                doc: v1.clone(),
                actual: ready(&v1, vec![container(&v1, RunState::Running)]),
                now: t(5),
                actions: &[],
                state: DeploymentState::Running,
            },
            Case {
                name: "running with health check starts the checker",
                doc: v1h.clone(),
                actual: ready(&v1h, vec![container(&v1h, RunState::Running)]),
                now: t(5),
                actions: &["health new"],
                state: DeploymentState::HealthChecking,
            },
            Case {
                name: "health check undecided waits",
                doc: v1h.clone(),
                actual: ready(&v1h, vec![health(&v1h, Health::Checking)]),
                now: t(5),
                actions: &[],
                state: DeploymentState::HealthChecking,
            },
            Case {
                name: "healthy is running",
                doc: v1h.clone(),
                actual: ready(&v1h, vec![health(&v1h, Health::Healthy)]),
                now: t(5),
                actions: &[],
                state: DeploymentState::Running,
            },
            Case {
                name: "exit under always schedules a restart after the base backoff",
                doc: v1.clone(),
                actual: ready(&v1, vec![exited(&v1, 0)]),
                now: t(5),
                actions: &["schedule app"],
                state: DeploymentState::Restarting {
                    attempt: 1,
                    backoff_ms: 1000,
                    reason: "exited with code 0".into(),
                },
            },
            Case {
                name: "clean exit under on-failure completes",
                doc: v1onf.clone(),
                actual: ready(&v1onf, vec![exited(&v1onf, 0)]),
                now: t(5),
                actions: &[],
                state: DeploymentState::Completed,
            },
            Case {
                name: "failed exit under on-failure restarts",
                doc: v1onf.clone(),
                actual: ready(&v1onf, vec![exited(&v1onf, 2)]),
                now: t(5),
                actions: &["schedule app"],
                state: DeploymentState::Restarting {
                    attempt: 1,
                    backoff_ms: 1000,
                    reason: "exited with code 2".into(),
                },
            },
            Case {
                name: "failed exit under never fails",
                doc: v1never.clone(),
                actual: ready(&v1never, vec![exited(&v1never, 2)]),
                now: t(5),
                actions: &[],
                state: DeploymentState::Failed { reason: "exited with code 2".into() },
            },
            Case {
                name: "clean exit under never completes",
                doc: v1never.clone(),
                actual: ready(&v1never, vec![exited(&v1never, 0)]),
                now: t(5),
                actions: &[],
                state: DeploymentState::Completed,
            },
            Case {
                name: "scheduled restart not due waits",
                doc: v1.clone(),
                actual: with(ready(&v1, vec![exited(&v1, 1)]), |o| {
                    o.restart = RestartBook { restarts: 3, consecutive: 3, next_at: Some(t(13)) }
                }),
                now: t(5),
                actions: &[],
                state: DeploymentState::Restarting {
                    attempt: 4,
                    backoff_ms: 8000,
                    reason: "exited with code 1".into(),
                },
            },
            Case {
                name: "scheduled restart due starts",
                doc: v1.clone(),
                actual: with(ready(&v1, vec![exited(&v1, 1)]), |o| o.restart.next_at = Some(t(5))),
                now: t(5),
                actions: &["start new"],
                state: DeploymentState::Starting,
            },
            Case {
                name: "unhealthy without previous version restarts under always",
                doc: v1h.clone(),
                actual: ready(&v1h, vec![health(&v1h, unhealthy.clone())]),
                now: t(5),
                actions: &["stop new", "schedule app"],
                state: DeploymentState::Restarting {
                    attempt: 1,
                    backoff_ms: 1000,
                    reason: "health check failed: exit code 1".into(),
                },
            },
            Case {
                name: "unhealthy under never stays running and unhealthy",
                doc: app("1", &format!("restart = \"never\"\n{HEALTH}")),
                actual: ready(
                    &app("1", &format!("restart = \"never\"\n{HEALTH}")),
                    vec![health(&app("1", &format!("restart = \"never\"\n{HEALTH}")), unhealthy.clone())],
                ),
                now: t(5),
                actions: &[],
                state: DeploymentState::Unhealthy { reason: "health check failed: exit code 1".into() },
            },
            Case {
                name: "missing camera waits for the device before create",
                doc: v1.clone(),
                actual: with(ready(&v1, vec![]), |o| o.device_missing = Some("camera all".into())),
                now: t(5),
                actions: &[],
                state: DeploymentState::WaitingForDevice { device: "camera all".into() },
            },
            Case {
                name: "missing camera waits for the device before start",
                doc: v1.clone(),
                actual: with(ready(&v1, vec![container(&v1, RunState::Created)]), |o| {
                    o.device_missing = Some("/dev/video0".into())
                }),
                now: t(5),
                actions: &[],
                state: DeploymentState::WaitingForDevice { device: "/dev/video0".into() },
            },
            Case {
                name: "failed pull waits for its retry",
                doc: v1.clone(),
                actual: with(
                    {
                        let mut a = ready(&v1, vec![]);
                        a.images.clear();
                        a
                    },
                    |o| o.failure = Some(failure(&v1, Stage::Pull, t(9))),
                ),
                now: t(5),
                actions: &[],
                state: DeploymentState::Failed {
                    reason: "pulling the image failed (attempt 2): connection refused; retrying with backoff".into(),
                },
            },
            Case {
                name: "failed pull retries when due",
                doc: v1.clone(),
                actual: with(
                    {
                        let mut a = ready(&v1, vec![]);
                        a.images.clear();
                        a
                    },
                    |o| o.failure = Some(failure(&v1, Stage::Pull, t(9))),
                ),
                now: t(9),
                actions: &["pull app"],
                state: DeploymentState::Pulling { done: 0, total: None },
            },
            Case {
                name: "failed resolve waits for its retry",
                doc: v1.clone(),
                actual: with(Actual::default(), |o| o.failure = Some(failure(&v1, Stage::Resolve, t(9)))),
                now: t(5),
                actions: &[],
                state: DeploymentState::Failed {
                    reason: "resolving the image failed (attempt 2): connection refused; retrying with backoff".into(),
                },
            },
            Case {
                name: "failure of another version is ignored",
                doc: v2.clone(),
                actual: with(Actual::default(), |o| o.failure = Some(failure(&v1, Stage::Resolve, t(9)))),
                now: t(5),
                actions: &["resolve app"],
                state: DeploymentState::Resolving,
            },
            Case {
                name: "container gone after reboot is recreated from its local pinned image",
                doc: v1.clone(),
                actual: {
                    let mut a = ready(&v1, vec![container(&v1, RunState::Missing)]);
                    a.deployments.get_mut(APP).unwrap().resolved = None;
                    a
                },
                now: t(5),
                actions: &["remove new", "create new"],
                state: DeploymentState::Starting,
            },
            Case {
                name: "container gone without its image is removed and resolved again",
                doc: v1.clone(),
                actual: {
                    let mut a = ready(&v1, vec![container(&v1, RunState::Missing)]);
                    a.images.clear();
                    a
                },
                now: t(5),
                actions: &["remove new"],
                state: DeploymentState::Starting,
            },
            Case {
                name: "update resolves while the old container keeps running",
                doc: v2.clone(),
                actual: with(Actual::default(), |o| o.containers = vec![old(RunState::Running)]),
                now: t(5),
                actions: &["resolve app"],
                state: DeploymentState::Pending,
            },
            Case {
                name: "update pulls while the old container keeps running",
                doc: v2.clone(),
                actual: {
                    let mut a = ready(&v2, vec![old(RunState::Running)]);
                    a.images.clear();
                    a
                },
                now: t(5),
                actions: &["pull app"],
                state: DeploymentState::Pulling { done: 0, total: None },
            },
            Case {
                name: "old container that crashed while the new image is pulled is restarted",
                doc: v2.clone(),
                actual: with(Actual::default(), |o| {
                    o.containers = vec![ContainerView { exit_code: Some(1), ..old(RunState::Exited) }];
                    o.task = Some(Task::Pulling { done: 1, total: Some(2) });
                }),
                now: t(5),
                actions: &["schedule app"],
                state: DeploymentState::Pulling { done: 1, total: Some(2) },
            },
            Case {
                name: "old container stopped by a crash mid-update is started again while the resolve retries",
                doc: v2.clone(),
                actual: with(Actual::default(), |o| {
                    o.containers = vec![ContainerView { exit_code: Some(143), ..old(RunState::Exited) }];
                    o.failure = Some(failure(&v2, Stage::Resolve, t(9)));
                    o.restart.next_at = Some(t(5));
                }),
                now: t(5),
                actions: &["start old"],
                state: DeploymentState::Failed {
                    reason: "resolving the image failed (attempt 2): connection refused; retrying with backoff".into(),
                },
            },
            Case {
                name: "a container under the new version's id whose record names another version is removed first",
                doc: v2.clone(),
                actual: ready(
                    &v2,
                    vec![ContainerView { id: container_id(APP, &hash(&v2)), ..container(&v1, RunState::Missing) }],
                ),
                now: t(5),
                actions: &["remove new", "create new"],
                state: DeploymentState::Starting,
            },
            Case {
                name: "update stops the old container before creating the new one",
                doc: v2.clone(),
                actual: ready(&v2, vec![old(RunState::Running)]),
                now: t(5),
                actions: &["stop old", "create new"],
                state: DeploymentState::Starting,
            },
            Case {
                name: "update with keep_old creates the new one beside the old",
                doc: v2keep.clone(),
                actual: ready(&v2keep, vec![old(RunState::Running)]),
                now: t(5),
                actions: &["create new"],
                state: DeploymentState::Starting,
            },
            Case {
                name: "update with keep_old starts the new one beside the old",
                doc: v2keep.clone(),
                actual: ready(&v2keep, vec![old(RunState::Running), container(&v2keep, RunState::Created)]),
                now: t(5),
                actions: &["start new"],
                state: DeploymentState::Starting,
            },
            Case {
                name: "health gate undecided keeps the old container",
                doc: v2.clone(),
                actual: ready(&v2, vec![old(RunState::Exited), health(&v2, Health::Checking)]),
                now: t(5),
                actions: &[],
                state: DeploymentState::HealthChecking,
            },
            Case {
                name: "healthy new version removes the old one",
                doc: v2.clone(),
                actual: ready(&v2, vec![old(RunState::Exited), health(&v2, Health::Healthy)]),
                now: t(5),
                actions: &["remove old"],
                state: DeploymentState::Running,
            },
            Case {
                name: "healthy new version stops and removes a kept old one",
                doc: v2keep.clone(),
                actual: ready(&v2keep, vec![old(RunState::Running), health(&v2keep, Health::Healthy)]),
                now: t(5),
                actions: &["stop old", "remove old"],
                state: DeploymentState::Running,
            },
            Case {
                name: "unhealthy new version rolls back to the old one",
                doc: v2.clone(),
                actual: ready(&v2, vec![old(RunState::Exited), health(&v2, unhealthy.clone())]),
                now: t(5),
                actions: &["stop new", "remove new", "start old", "rolled-back app"],
                state: DeploymentState::RolledBack { reason: "health check failed: exit code 1".into() },
            },
            Case {
                name: "unhealthy new version beside a kept old one rolls back without restarting it",
                doc: v2keep.clone(),
                actual: ready(&v2keep, vec![old(RunState::Running), health(&v2keep, unhealthy.clone())]),
                now: t(5),
                actions: &["stop new", "remove new", "rolled-back app"],
                state: DeploymentState::RolledBack { reason: "health check failed: exit code 1".into() },
            },
            Case {
                name: "new version exiting during its gate rolls back",
                doc: v2.clone(),
                actual: ready(&v2, vec![old(RunState::Exited), exited(&v2, 3)]),
                now: t(5),
                actions: &["remove new", "start old", "rolled-back app"],
                state: DeploymentState::RolledBack {
                    reason: "exited with code 3 before passing its health check".into(),
                },
            },
            Case {
                name: "unhealthy new version without rollback keeps it and restarts it",
                doc: v2norb.clone(),
                actual: ready(&v2norb, vec![old(RunState::Exited), health(&v2norb, unhealthy.clone())]),
                now: t(5),
                actions: &["remove old", "stop new", "schedule app"],
                state: DeploymentState::Restarting {
                    attempt: 1,
                    backoff_ms: 1000,
                    reason: "health check failed: exit code 1".into(),
                },
            },
            Case {
                name: "rolled back version keeps the old one running",
                doc: v2.clone(),
                actual: with(ready(&v2, vec![old(RunState::Running)]), |o| {
                    o.rolled_back = Some(RolledBack { doc_hash: hash(&v2), reason: "health check failed".into() })
                }),
                now: t(5),
                actions: &[],
                state: DeploymentState::RolledBack { reason: "health check failed".into() },
            },
            Case {
                name: "rolled back old version is restarted by its policy",
                doc: v2.clone(),
                actual: with(ready(&v2, vec![ContainerView { exit_code: Some(1), ..old(RunState::Exited) }]), |o| {
                    o.rolled_back = Some(RolledBack { doc_hash: hash(&v2), reason: "health check failed".into() })
                }),
                now: t(5),
                actions: &["schedule app"],
                state: DeploymentState::Restarting {
                    attempt: 1,
                    backoff_ms: 1000,
                    reason: "previous version exited with code 1".into(),
                },
            },
            Case {
                name: "a rollback of another version does not block this one",
                doc: v2.clone(),
                actual: with(ready(&v2, vec![old(RunState::Running)]), |o| {
                    o.rolled_back = Some(RolledBack { doc_hash: "other".into(), reason: "x".into() })
                }),
                now: t(5),
                actions: &["stop old", "create new"],
                state: DeploymentState::Starting,
            },
            Case {
                name: "stable running resets the backoff",
                doc: v1.clone(),
                actual: with(ready(&v1, vec![container(&v1, RunState::Running)]), |o| o.restart.consecutive = 4),
                now: t(600),
                actions: &["reset app"],
                state: DeploymentState::Running,
            },
            Case {
                name: "briefly running keeps the backoff",
                doc: v1.clone(),
                actual: with(ready(&v1, vec![container(&v1, RunState::Running)]), |o| o.restart.consecutive = 4),
                now: t(599),
                actions: &[],
                state: DeploymentState::Running,
            },
            Case {
                name: "a duplicate container of the same version is removed",
                doc: v1.clone(),
                actual: ready(
                    &v1,
                    vec![
                        container(&v1, RunState::Running),
                        ContainerView { id: "app-dup".into(), ..container(&v1, RunState::Running) },
                    ],
                ),
                now: t(5),
                actions: &["stop old", "remove old"],
                state: DeploymentState::Running,
            },
            Case {
                name: "a document the backends cannot run fails without touching the old container",
                doc: unconvertible(),
                actual: ready(&unconvertible(), vec![old(RunState::Running)]),
                now: t(5),
                actions: &[],
                state: DeploymentState::Failed {
                    reason: "deployment app: devices[0]: host path `nonsense` must be a path under /dev/".into(),
                },
            },
        ]
    }

    #[test]
    fn each_situation_plans_the_documented_actions_and_state() {
        let mut failures = Vec::new();
        for case in cases() {
            let p = plan(&case.doc, &case.actual, case.now, &Backoff::default());
            let got = short(&p.actions, &case.doc);
            if got != case.actions || p.states[APP] != case.state {
                failures.push(format!(
                    "{}:\n    actions {got:?}, want {:?}\n    state {:?}, want {:?}",
                    case.name, case.actions, p.states[APP], case.state
                ));
            }
            assert_eq!(
                p,
                plan(&case.doc, &case.actual, case.now, &Backoff::default()),
                "{}: not idempotent",
                case.name
            );
            assert!(p.actions.iter().all(|a| a.deployment() == APP), "{}", case.name);
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn create_carries_the_pinned_image_and_labels() {
        let d = app("1", "gpu = true\ncameras = [\"all\"]\n");
        let p = plan(&d, &ready(&d, vec![]), t(0), &Backoff::default());
        let Action::Create { id, config, labels, .. } = &p.actions[0] else { panic!("{:?}", p.actions) };
        assert_eq!(id, &container_id(APP, &hash(&d)));
        assert_eq!(config.image, pinned("busybox:1"));
        assert_eq!(config.gpu.as_deref(), Some("all"));
        assert_eq!(labels[labels::DEPLOYMENT], APP);
        assert_eq!(labels[labels::DOC_HASH], hash(&d));
        assert_eq!(labels[labels::IMAGE], pinned("busybox:1"));
    }

    #[test]
    fn fresh_deployment_converges_then_plans_nothing() {
        let d = app("1", HEALTH);
        let mut actual = Actual::default();
        let rounds = settle(&d, &mut actual, t(0), |_| Health::Healthy);
        assert_eq!(rounds, [["resolve app"], ["pull app"], ["create new"], ["start new"], ["health new"]]);
        let p = plan(&d, &actual, t(1), &Backoff::default());
        assert!(p.actions.is_empty() && p.converged, "{p:?}");
        assert_eq!(p.states[APP], DeploymentState::Running);
    }

    #[test]
    fn applied_generation_moves_only_when_converged() {
        let mut d = app("1", "");
        d.generation = Some(5);
        let mut actual = Actual::default();
        let p = plan(&d, &actual, t(0), &Backoff::default());
        assert_eq!(p.applied_generation(&d, Some(4)), Some(4));
        settle(&d, &mut actual, t(0), |_| Health::Healthy);
        let p = plan(&d, &actual, t(0), &Backoff::default());
        assert_eq!(p.applied_generation(&d, Some(4)), Some(5));
    }

    #[test]
    fn converged_is_false_until_every_deployment_runs() {
        let d = doc("[deployments.a]\nimage = \"busybox\"\n[deployments.b]\nimage = \"alpine\"\nrestart = \"never\"\ncommand = [\"true\"]\n");
        let mut actual = Actual::default();
        let p = plan(&d, &actual, t(0), &Backoff::default());
        assert!(!p.converged);
        settle(&d, &mut actual, t(0), |_| Health::Healthy);
        assert!(plan(&d, &actual, t(0), &Backoff::default()).converged);
        // b exits 0: completed still counts as converged; a exiting does not.
        let b = actual.deployments.get_mut("b").unwrap();
        (b.containers[0].state, b.containers[0].exit_code) = (RunState::Exited, Some(0));
        assert!(plan(&d, &actual, t(1), &Backoff::default()).converged);
        let a = actual.deployments.get_mut("a").unwrap();
        (a.containers[0].state, a.containers[0].exit_code) = (RunState::Exited, Some(0));
        assert!(!plan(&d, &actual, t(1), &Backoff::default()).converged);
    }

    #[test]
    fn update_that_passes_replaces_the_old_container() {
        let v1 = app("1", HEALTH);
        let v2 = app("2", HEALTH);
        let mut actual = Actual::default();
        settle(&v1, &mut actual, t(0), |_| Health::Healthy);
        let rounds = settle(&v2, &mut actual, t(10), |_| Health::Healthy);
        assert_eq!(
            rounds,
            [
                vec!["resolve app"],
                vec!["pull app"],
                vec!["stop old", "create new"],
                vec!["start new"],
                vec!["health new"],
                vec!["remove old"]
            ]
        );
        let obs = &actual.deployments[APP];
        assert_eq!(obs.containers.len(), 1);
        assert_eq!(obs.containers[0].image, pinned("busybox:2"));
        assert_eq!(obs.containers[0].state, RunState::Running);
        assert_eq!(state(&v2, &actual, t(11)), DeploymentState::Running);
    }

    #[test]
    fn update_that_fails_its_health_check_rolls_back_and_stays_rolled_back() {
        let v1 = app("1", HEALTH);
        let v2 = app("2", HEALTH);
        let mut actual = Actual::default();
        settle(&v1, &mut actual, t(0), |_| Health::Healthy);
        let rounds = settle(&v2, &mut actual, t(10), |image| {
            if image.contains("busybox:2") {
                Health::Unhealthy { reason: "exit code 1".into() }
            } else {
                Health::Healthy
            }
        });
        assert_eq!(rounds.last().unwrap(), &["stop new", "remove new", "start old", "rolled-back app"]);
        let obs = &actual.deployments[APP];
        assert_eq!(obs.containers.len(), 1);
        assert_eq!(obs.containers[0].image, pinned("busybox:1"), "the previous digest runs again");
        assert_eq!(obs.containers[0].state, RunState::Running);
        assert_eq!(
            state(&v2, &actual, t(11)),
            DeploymentState::RolledBack { reason: "health check failed: exit code 1".into() }
        );
        assert!(plan(&v2, &actual, t(11), &Backoff::default()).actions.is_empty(), "no retry of the failed version");
        assert!(!plan(&v2, &actual, t(11), &Backoff::default()).converged);
        // A new document version is tried again.
        let v3 = app("3", HEALTH);
        let rounds = settle(&v3, &mut actual, t(20), |_| Health::Healthy);
        assert_eq!(rounds.last().unwrap(), &["remove old"]);
        assert_eq!(actual.deployments[APP].containers[0].image, pinned("busybox:3"));
    }

    #[test]
    fn crash_loop_backs_off_exponentially_up_to_the_cap() {
        let d = app("1", "");
        let mut actual = Actual::default();
        settle(&d, &mut actual, t(0), |_| Health::Healthy);
        let backoff = Backoff::default();
        let mut now = t(0);
        let mut delays = Vec::new();
        for _ in 0..12 {
            let c = &mut actual.deployments.get_mut(APP).unwrap().containers[0];
            (c.state, c.exit_code, c.running_since) = (RunState::Exited, Some(1), None);
            let p = plan(&d, &actual, now, &backoff);
            let [Action::ScheduleRestart { at, .. }] = p.actions.as_slice() else { panic!("{:?}", p.actions) };
            delays.push((*at - now).as_secs());
            apply(&mut actual, &p.actions, now);
            assert!(plan(&d, &actual, *at - Duration::from_millis(1), &backoff).actions.is_empty(), "restart is early");
            now = *at;
            let p = plan(&d, &actual, now, &backoff);
            assert_eq!(short(&p.actions, &d), ["start new"]);
            apply(&mut actual, &p.actions, now);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(actual.deployments[APP].restart.restarts, 12);
        // Running stably resets the backoff: the next crash waits the base delay again.
        now += backoff.reset_after;
        let p = plan(&d, &actual, now, &backoff);
        assert_eq!(short(&p.actions, &d), ["reset app"]);
        apply(&mut actual, &p.actions, now);
        let c = &mut actual.deployments.get_mut(APP).unwrap().containers[0];
        (c.state, c.exit_code) = (RunState::Exited, Some(1));
        let p = plan(&d, &actual, now, &backoff);
        assert_eq!(p.actions, [Action::ScheduleRestart { deployment: APP.into(), at: now + t(1), attempt: 1 }]);
    }

    #[test]
    fn removed_deployment_is_stopped_removed_and_forgotten() {
        let d = app("1", "");
        let mut actual = Actual::default();
        settle(&d, &mut actual, t(0), |_| Health::Healthy);
        let empty = Document::default();
        let p = plan(&empty, &actual, t(5), &Backoff::default());
        assert_eq!(short(&p.actions, &d), ["stop new", "remove new"]);
        assert_eq!(p.states[APP], DeploymentState::Removing);
        let rounds = settle(&empty, &mut actual, t(5), |_| Health::Healthy);
        // Against the empty document no container is the desired version: they show as `old`.
        assert_eq!(rounds, [vec!["stop old", "remove old"], vec!["forget app"]]);
        assert!(actual.deployments.is_empty());
        assert!(plan(&empty, &actual, t(6), &Backoff::default()).converged);
    }

    #[test]
    fn removed_deployment_waits_for_its_pull_to_finish() {
        let actual = with(Actual::default(), |o| o.task = Some(Task::Pulling { done: 1, total: None }));
        let p = plan(&Document::default(), &actual, t(0), &Backoff::default());
        assert!(p.actions.is_empty());
        assert_eq!(p.states[APP], DeploymentState::Removing);
        assert!(!p.converged);
    }

    #[test]
    fn deployments_are_planned_independently() {
        let both = doc("[deployments.a]\nimage = \"busybox\"\n[deployments.b]\nimage = \"alpine\"\n");
        let mut actual = Actual::default();
        settle(&both, &mut actual, t(0), |_| Health::Healthy);
        let only_a = doc("[deployments.a]\nimage = \"busybox\"\n");
        let p = plan(&only_a, &actual, t(1), &Backoff::default());
        assert!(p.actions.iter().all(|a| a.deployment() == "b"), "{:?}", p.actions);
        assert_eq!(p.states["a"], DeploymentState::Running);
    }

    #[test]
    fn a_state_that_only_waits_does_not_change_between_rounds() {
        let v1 = app("1", "");
        let b = Backoff::default();
        let failing = with(ready(&v1, vec![]), |o| o.failure = Some(failure(&v1, Stage::Pull, t(30))));
        let mut failing = failing;
        failing.images.clear();
        let mut exited = ready(&v1, vec![container(&v1, RunState::Exited)]);
        exited.deployments.get_mut(APP).unwrap().restart.next_at = Some(t(30));
        for actual in [failing, exited] {
            let states: Vec<_> = (5..9).map(|s| plan(&v1, &actual, t(s), &b).states[APP].clone()).collect();
            assert!(states.windows(2).all(|w| w[0] == w[1]), "the state ticks: {states:?}");
            assert!(matches!(states[0], DeploymentState::Failed { .. } | DeploymentState::Restarting { .. }));
        }
    }

    #[test]
    fn failure_backoff_counts_attempts_per_version_and_stage() {
        let b = Backoff::default();
        let f1 = Failure::after(None, "h", Stage::Pull, "e".into(), t(10), &b);
        assert_eq!((f1.attempts, f1.retry_at), (1, t(11)));
        let f2 = Failure::after(Some(&f1), "h", Stage::Pull, "e".into(), t(11), &b);
        assert_eq!((f2.attempts, f2.retry_at), (2, t(13)));
        let other = Failure::after(Some(&f2), "h2", Stage::Pull, "e".into(), t(20), &b);
        assert_eq!(other.attempts, 1);
        let stage = Failure::after(Some(&f2), "h", Stage::Create, "e".into(), t(20), &b);
        assert_eq!(stage.attempts, 1);
    }

    #[test]
    fn backoff_is_capped_and_never_overflows() {
        let b = Backoff::default();
        assert_eq!(b.delay(0), t(1));
        assert_eq!(b.delay(3), t(8));
        assert_eq!(b.delay(9), t(300));
        assert_eq!(b.delay(u32::MAX), t(300));
    }

    #[test]
    fn state_names_are_the_documented_words() {
        let names: Vec<_> = [
            DeploymentState::Pending,
            DeploymentState::Resolving,
            DeploymentState::Pulling { done: 0, total: None },
            DeploymentState::Starting,
            DeploymentState::HealthChecking,
            DeploymentState::Running,
            DeploymentState::Unhealthy { reason: String::new() },
            DeploymentState::Restarting { attempt: 1, backoff_ms: 0, reason: String::new() },
            DeploymentState::WaitingForDevice { device: String::new() },
            DeploymentState::Failed { reason: String::new() },
            DeploymentState::RolledBack { reason: String::new() },
            DeploymentState::Completed,
            DeploymentState::Removing,
        ]
        .iter()
        .map(|s| {
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json["state"], s.name(), "serde and name() agree");
            s.name()
        })
        .collect();
        assert_eq!(names.len(), 13);
    }

    #[test]
    fn container_view_places_wall_clock_start_on_the_monotonic_scale() {
        let now_wall = chrono::Utc::now();
        let info = ContainerInfo {
            id: "app-1".into(),
            labels: BTreeMap::from([
                (labels::DOC_HASH.to_owned(), "h".to_owned()),
                (labels::IMAGE.to_owned(), "busybox@sha256:x".to_owned()),
            ]),
            state: RunState::Running,
            pid: Some(1),
            exit_code: None,
            oom_killed: false,
            started_at: Some(now_wall - chrono::Duration::seconds(30)),
        };
        let v = ContainerView::from_info(&info, t(100), now_wall);
        assert_eq!(v.running_since, Some(t(70)));
        assert_eq!(v.doc_hash.as_deref(), Some("h"));
        assert_eq!(v.image, "busybox@sha256:x");
    }
}
