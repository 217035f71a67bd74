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

use crate::deployment::{Deployment, Document, HealthCheck, RestartPolicy};
use crate::runtime::{labels, ContainerConfig, ContainerInfo, RunState};

/// Label with the [`Deployment::doc_hash`] a container was created for: equal hash means "this container is
/// the desired version", so an agent restarted offline adopts its containers without resolving images again.
pub const DOC_HASH_LABEL: &str = "io.jetship.doc-hash";

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
    /// [`DOC_HASH_LABEL`]; `None` for containers made by something older.
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
    pub fn from_info(info: &ContainerInfo, now: Time, now_wall: chrono::DateTime<chrono::Utc>) -> Self {
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
            doc_hash: info.labels.get(DOC_HASH_LABEL).cloned(),
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

/// One step for the executor. Each says what the executor must record in [`Actual`] when it is done; a failed
/// step skips the rest of that deployment's actions in the same plan.
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
            | Self::Forget { deployment } => deployment,
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
    /// Exited or unhealthy; restarts after a backoff of `backoff_ms` (attempt `attempt`).
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
    pub fn is_converged(&self) -> bool {
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
pub fn container_id(name: &str, doc_hash: &str) -> String {
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
        if let Some(task) = &self.obs.task {
            return match task {
                Task::Resolving => DeploymentState::Resolving,
                Task::Pulling { done, total } => DeploymentState::Pulling { done: *done, total: *total },
            };
        }
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

        // No container of this version yet: resolve, pull, then create (the old one keeps running meanwhile).
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
        self.create(&hash, &image, &old)
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
        let labels = BTreeMap::from([
            (labels::DEPLOYMENT.to_owned(), self.dep()),
            (DOC_HASH_LABEL.to_owned(), hash.to_owned()),
            (labels::IMAGE.to_owned(), image.to_owned()),
        ]);
        self.push(Action::Create {
            deployment: self.dep(),
            id: container_id(self.name, hash),
            config: Box::new(config),
            labels,
        });
        DeploymentState::Starting
    }

    /// A failure of `stage` for `hash` whose retry is not due yet.
    fn waiting_retry(&self, hash: &str, stage: Stage) -> Option<DeploymentState> {
        let f = self.obs.failure.as_ref().filter(|f| f.doc_hash == hash && f.stage == stage)?;
        (self.now < f.retry_at).then(|| DeploymentState::Failed {
            reason: format!(
                "{} failed (attempt {}): {}; retrying in {}",
                stage_name(stage),
                f.attempts,
                f.error,
                crate::deployment::DurationSpec(f.retry_at - self.now)
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
            return DeploymentState::Restarting {
                attempt: self.obs.restart.consecutive + 1,
                backoff_ms: (at - self.now).as_millis() as u64,
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
        DeploymentState::Restarting { attempt, backoff_ms: at.saturating_sub(self.now).as_millis() as u64, reason }
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
