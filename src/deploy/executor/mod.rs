//! The reconciler's thin IO half: each round it observes the backend's containers, asks [`plan::plan`]
//! what to do, runs those actions against a `dyn ContainerRuntime` (and the registry, to resolve images), and
//! records what came of each through [`plan::record`], the same function the planner's tests use. Long steps
//! (resolving, pulling, health checks) run as tasks whose results come back on a channel and are recorded
//! before the next round.
//!
//! It makes no decisions of its own (those are `plan`'s, including the health gate, `plan::health`) and does
//! not parse or validate documents (`document`, `policy`) nor publish anything itself: each round returns an
//! [`Output`] (per-deployment report, transition events, applied generation) that the agent publishes. Parts:
//! `meter` (pull progress), `state` (what the plan needs across agent restarts, under
//! `<state_dir>/deployments/`) and `health` (the checkers that probe containers).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod health;
mod meter;
mod state;

use health::Probe;
pub use meter::{PullMeter, PullProgress};
pub use state::{recorded_restarts, state_path};
use state::{Clock, StateFiles};

use crate::config::Config;
use crate::deploy::document::Document;
use crate::deploy::plan::{self, Action, Actual, Backoff, ContainerView, DeploymentState, Health, Outcome, Task, Time};
use crate::deploy::report::{self, Event, ReportedDeployment};
use crate::runtime::{self, labels, ContainerInfo, ContainerRuntime, RunState};

/// How long a deployment waits for a missing device before the executor tries to create it again (default).
const DEVICE_RETRY: Duration = Duration::from_secs(5);
/// Period of a round when nothing else wakes the loop (backoff timers, missing-device retries).
const TICK: Duration = Duration::from_secs(1);
/// Pause before the next round after a round that ran actions, once `STREAK` such rounds came back to back:
/// the steps of one change (create, start, health gate) follow each other at once, while a plan that keeps
/// producing actions without converging cannot spin a core.
const AGAIN: Duration = Duration::from_millis(50);
const STREAK: u32 = 8;
/// Most characters of an error kept in the report.
const ERROR_KEEP: usize = 1000;

/// Errors of the executor's own IO (the state it persists).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot store deployment state in {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Turns a deployment's image reference into a pinned one (`name@sha256:...`) for this host.
#[async_trait::async_trait]
pub trait Resolver: Send + Sync {
    /// Resolves `image` (templates, `{auto}`, tag to digest). The error is the message to report.
    async fn resolve(&self, image: &str) -> std::result::Result<String, String>;
}

/// Resolves against registries with the pull engine and the host's template variables.
pub struct RegistryResolver {
    client: crate::image::registry::Client,
    vars: crate::image::reference::TemplateVars,
}

impl RegistryResolver {
    /// A resolver with `[registry]` settings and the host probe's template variables.
    pub fn new(
        config: &crate::config::RegistryConfig,
        vars: crate::image::reference::TemplateVars,
    ) -> std::result::Result<Self, crate::image::registry::Error> {
        let client = crate::image::registry::Client::new(crate::image::registry::ClientOptions::from_config(config)?)?;
        Ok(Self { client, vars })
    }
}

#[async_trait::async_trait]
impl Resolver for RegistryResolver {
    /// A digest-pinned reference is its own answer, without a request: the device may be offline, and the pull
    /// checks every byte against that digest anyway.
    async fn resolve(&self, image: &str) -> std::result::Result<String, String> {
        if let Some(pinned) = crate::image::offline::pinned(image, &self.vars) {
            return Ok(pinned.to_string());
        }
        match crate::image::pull::resolve(&self.client, image, &self.vars).await {
            Ok(r) => Ok(r.reference.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A long step's result: the action that started it and what came of it, recorded before the next round.
#[derive(Debug)]
struct Done {
    action: Action,
    outcome: Outcome,
}

/// The desired state handed to [`Executor::run`]: the overlaid document and the generation of each source it
/// was made from (`device`, `group:<name>`), reported with the states planned from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Desired {
    pub document: Document,
    pub sources: BTreeMap<String, Option<u64>>,
    /// The source (`device`, `group:<name>`) each deployment was taken from.
    pub origin: BTreeMap<String, String>,
}

/// What a round produced, for the agent to publish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// The generation of the document this round planned for (the device document's).
    pub generation: Option<u64>,
    /// The source generations of that document (filled in by the executor's `run`).
    pub sources: BTreeMap<String, Option<u64>>,
    /// Every desired deployment, and removed ones still being cleaned up.
    pub deployments: BTreeMap<String, ReportedDeployment>,
    /// The generation every deployment converged to.
    pub applied_generation: Option<u64>,
    /// State transitions since the previous round.
    pub events: Vec<Event>,
    /// Whether the plan said the device converged.
    pub converged: bool,
    /// Pull progress to publish as `pull-progress` events (at most once a second).
    pub progress: Vec<PullProgress>,
}

/// What the agent asks of a running executor besides the desired state.
#[derive(Debug)]
pub enum Request {
    /// `cmd/restart`: answered with the result to send back.
    Restart { deployment: String, reply: tokio::sync::oneshot::Sender<std::result::Result<serde_json::Value, String>> },
}

/// Settings of an [`Executor`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `deployments/` is kept (`state_dir`).
    pub state_dir: PathBuf,
    /// SIGTERM to SIGKILL when stopping (`runtime.stop_grace_s`).
    pub stop_grace: Duration,
    pub backoff: Backoff,
    /// How long a deployment waits for a missing device before the create is tried again. Defaults to 5 s.
    pub device_retry: Duration,
    /// `[policy]`: what [`crate::deploy::policy::confine`] puts into every container it creates.
    pub policy: crate::config::PolicyConfig,
}

impl Options {
    /// Options from the agent config.
    pub fn from_config(config: &Config) -> Self {
        Self {
            state_dir: config.state_dir.clone(),
            stop_grace: Duration::from_secs(config.runtime.stop_grace_s),
            backoff: Backoff::default(),
            device_retry: DEVICE_RETRY,
            policy: config.policy.clone(),
        }
    }
}

/// Per-deployment facts the report needs that [`Actual`] does not hold.
#[derive(Debug, Clone, Default)]
struct Notes {
    exit_code: Option<i32>,
    error: Option<String>,
    /// When `device_missing` was set; cleared after [`DEVICE_RETRY`] so the create is tried again.
    device_missing_since: Option<Instant>,
}

/// Runs plans against a backend. See the module doc.
pub struct Executor {
    runtime: Arc<dyn ContainerRuntime>,
    resolver: Arc<dyn Resolver>,
    files: StateFiles,
    opts: Options,
    origin: Instant,
    actual: Actual,
    /// Health per container id, as the checkers last said, with the checker's stop token.
    health: HashMap<String, (Health, CancellationToken)>,
    notes: BTreeMap<String, Notes>,
    started: BTreeMap<String, DateTime<Utc>>,
    states: BTreeMap<String, DeploymentState>,
    applied: Option<u64>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    tasks: CancellationToken,
    meter: PullMeter,
    pull_turn: Arc<tokio::sync::Semaphore>,
    last_progress: Option<Instant>,
    /// The last round ran actions.
    acted: bool,
    /// Rounds in a row that ran actions, all successful.
    streak: u32,
}

impl Executor {
    /// An executor that restores what was persisted under `opts.state_dir`.
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        resolver: Arc<dyn Resolver>,
        meter: PullMeter,
        opts: Options,
    ) -> Self {
        let files = StateFiles { dir: state_path(&opts.state_dir) };
        let origin = Instant::now();
        // A restart scheduled before the agent stopped keeps its time; the backoff cap bounds a clock jump.
        let loaded = files.load(Clock { now: Time::ZERO, wall: Utc::now() }, opts.backoff.cap);
        let mut notes = BTreeMap::new();
        let mut deployments = BTreeMap::new();
        for (name, l) in loaded {
            if l.last_exit.is_some() {
                notes.insert(name.clone(), Notes { exit_code: l.last_exit, ..Default::default() });
            }
            deployments.insert(name, l.observed);
        }
        let actual = Actual { deployments, ..Default::default() };
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            runtime,
            resolver,
            files,
            opts,
            origin,
            actual,
            health: HashMap::new(),
            notes,
            started: BTreeMap::new(),
            states: BTreeMap::new(),
            applied: None,
            done_tx,
            done_rx,
            tasks: CancellationToken::new(),
            meter,
            pull_turn: Arc::new(tokio::sync::Semaphore::new(1)),
            last_progress: None,
            acted: false,
            streak: 0,
        }
    }

    fn now(&self) -> Time {
        Instant::now() - self.origin
    }

    /// Runs rounds for the latest desired document until `shutdown`, handing each round's output to
    /// `publish`. `None` means "no desired state yet": containers are left as they are.
    pub(crate) async fn run(
        mut self,
        mut desired: watch::Receiver<Option<Desired>>,
        mut requests: mpsc::Receiver<Request>,
        publish: impl Fn(&Output) + Send,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let doc = desired.borrow_and_update().clone();
            if let Some(d) = doc {
                let mut out = self.round(&d.document).await;
                out.sources = d.sources;
                for (name, r) in out.deployments.iter_mut() {
                    r.source = d.origin.get(name).cloned();
                }
                publish(&out);
            }
            // A round that acted is followed at once by the next step (create, then start, then the health gate)
            // instead of a tick later; after a streak of such rounds a short pause keeps a loop from spinning.
            let pause = match (self.acted, self.streak) {
                (true, n) if n < STREAK => Duration::ZERO,
                (true, _) => AGAIN,
                (false, _) => TICK,
            };
            let again = tokio::time::sleep(pause);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = desired.changed() => if r.is_err() { break },
                Some(d) = self.done_rx.recv() => self.apply_done(d),
                Some(r) = requests.recv() => self.request(r).await,
                _ = again => {}
                _ = tick.tick() => {}
            }
            while let Ok(d) = self.done_rx.try_recv() {
                self.apply_done(d);
            }
        }
        // Containers keep running across an agent restart; only our own tasks stop.
        self.tasks.cancel();
    }

    async fn request(&mut self, r: Request) {
        match r {
            Request::Restart { deployment, reply } => {
                let _ = reply.send(self.restart(&deployment).await);
            }
        }
    }

    /// Stops and starts `deployment`'s serving container (a `cmd/restart`, [`plan::restart_target`] picks it). Its
    /// health is checked again from the start; the restart is not counted against the backoff.
    pub async fn restart(&mut self, deployment: &str) -> std::result::Result<serde_json::Value, String> {
        self.observe().await;
        let id = plan::restart_target(&self.actual, deployment)?;
        let code = self.restart_container(deployment, &id).await.map_err(|e| e.to_string())?;
        info!(deployment, id, "restarted on request");
        let action = Action::Restart { deployment: deployment.to_owned(), id: id.clone() };
        self.record(&action, Outcome::Done, self.now());
        Ok(serde_json::json!({ "container": id, "exit_code": code }))
    }

    /// Stops and starts container `id` (its checker ends); the exit code of the stop.
    async fn restart_container(&mut self, deployment: &str, id: &str) -> runtime::Result<Option<i32>> {
        self.stop_checker(id);
        let code = self.runtime.stop(id, self.opts.stop_grace).await?;
        self.runtime.start(id).await?;
        self.started.insert(deployment.to_owned(), Utc::now());
        Ok(code)
    }

    /// Ends the health checker of container `id`, if one runs.
    fn stop_checker(&mut self, id: &str) {
        if let Some((_, stop)) = self.health.remove(id) {
            stop.cancel();
        }
    }

    /// Applies every finished long step without waiting.
    fn drain(&mut self) {
        while let Ok(d) = self.done_rx.try_recv() {
            self.apply_done(d);
        }
    }

    /// Waits up to `limit` for one long step to finish and applies it; false when none did (tests drive rounds
    /// with it).
    pub async fn wait_done(&mut self, limit: Duration) -> bool {
        match tokio::time::timeout(limit, self.done_rx.recv()).await {
            Ok(Some(d)) => {
                self.apply_done(d);
                self.drain();
                true
            }
            _ => false,
        }
    }

    /// One round: observe, plan, execute, report.
    pub async fn round(&mut self, desired: &Document) -> Output {
        self.observe().await;
        let progress = self.read_meter();
        let now = self.now();
        let plan = plan::plan(desired, &self.actual, now, &self.opts.backoff);
        let mut failed: Vec<String> = Vec::new();
        for action in &plan.actions {
            let dep = action.deployment().to_owned();
            if failed.contains(&dep) {
                continue;
            }
            if !self.execute(action).await {
                failed.push(dep);
            }
        }
        // A failed step waits for the tick (or its backoff), so a backend that keeps refusing is not hammered.
        self.acted = !plan.actions.is_empty() && failed.is_empty();
        self.streak = if self.acted { self.streak + 1 } else { 0 };
        self.applied = plan.applied_generation(desired, self.applied);
        let events = report::transitions(&self.states, &plan.states, Utc::now());
        for e in &events {
            info!(deployment = %e.deployment, from = e.from.as_deref().unwrap_or("-"),
                to = e.to.as_ref().map(|s| s.name()).unwrap_or("gone"), "deployment state changed");
        }
        self.states = plan.states.clone();
        let deployments =
            plan.states.iter().map(|(name, state)| (name.clone(), self.report(name, state, desired))).collect();
        Output {
            generation: desired.generation,
            sources: BTreeMap::new(),
            deployments,
            applied_generation: self.applied,
            events,
            converged: plan.converged,
            progress,
        }
    }

    /// Puts the meter's bytes into the pulling deployment's task; returns the event to publish when one is due.
    fn read_meter(&mut self) -> Vec<PullProgress> {
        let Some((deployment, done, total)) = self.meter.read() else { return Vec::new() };
        let Some(obs) = self.actual.deployments.get_mut(&deployment) else { return Vec::new() };
        if !matches!(obs.task, Some(Task::Pulling { .. })) {
            return Vec::new();
        }
        obs.task = Some(Task::Pulling { done, total });
        if self.last_progress.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return Vec::new();
        }
        self.last_progress = Some(Instant::now());
        vec![PullProgress { deployment, done_bytes: done, total_bytes: total }]
    }

    /// Refreshes the containers in [`Actual`] from the backend, keeping what the health checkers said. The
    /// backend first repairs what a kill left (a container whose monitor is gone, a damaged record).
    async fn observe(&mut self) {
        if let Err(err) = self.runtime.repair().await {
            warn!(%err, "container repair failed");
        }
        let listed = match self.runtime.list_owned().await {
            Ok(l) => l,
            Err(err) => {
                warn!(%err, "cannot list containers; planning with the last known ones");
                return;
            }
        };
        let (now, now_wall) = (self.now(), Utc::now());
        let mut by_dep: BTreeMap<String, Vec<ContainerView>> = BTreeMap::new();
        // Deployments whose last exit code changed: persisted, so a restarted agent reports it.
        let mut exits = Vec::new();
        // `jetship run`'s containers are no deployment's: never planned for, so never stopped or removed here.
        let listed: Vec<&ContainerInfo> = listed
            .iter()
            .filter(|i| i.labels.get(labels::OWNER).map(String::as_str) != Some(labels::OWNER_RUN))
            .collect();
        for info in listed.iter().copied() {
            let Some(dep) = info.labels.get(labels::DEPLOYMENT) else { continue };
            let mut view = ContainerView::from_info(info, now, now_wall);
            // Keep a running container's monotonic start stable between rounds (the backoff reset needs it).
            if let Some(prev) =
                self.actual.deployments.get(dep).and_then(|o| o.containers.iter().find(|c| c.id == info.id))
            {
                if prev.state == view.state && prev.running_since.is_some() {
                    view.running_since = prev.running_since;
                }
            }
            view.health = self.health_of(info);
            if info.state == RunState::Running {
                if let Some(at) = info.started_at {
                    self.started.insert(dep.clone(), at);
                }
            }
            if let Some(code) = info.exit_code.filter(|_| info.state == RunState::Exited) {
                let notes = self.notes.entry(dep.clone()).or_default();
                if notes.exit_code != Some(code) {
                    notes.exit_code = Some(code);
                    exits.push(dep.clone());
                }
            }
            by_dep.entry(dep.clone()).or_default().push(view);
        }
        // Checkers of containers that are gone or no longer running stop.
        let running: Vec<&str> =
            listed.iter().filter(|i| i.state == RunState::Running).map(|i| i.id.as_str()).collect();
        self.health.retain(|id, (_, stop)| {
            let keep = running.contains(&id.as_str());
            if !keep {
                stop.cancel();
            }
            keep
        });
        for obs in self.actual.deployments.values_mut() {
            obs.containers.clear();
        }
        for (dep, containers) in by_dep {
            self.actual.deployments.entry(dep).or_default().containers = containers;
        }
        for dep in exits {
            self.persist(&dep);
        }
        let retry = self.opts.device_retry;
        for (name, obs) in self.actual.deployments.iter_mut() {
            let notes = self.notes.entry(name.clone()).or_default();
            if obs.device_missing.is_some() && notes.device_missing_since.is_some_and(|t| t.elapsed() >= retry) {
                obs.device_missing = None;
                notes.device_missing_since = None;
            }
        }
    }

    fn health_of(&self, info: &ContainerInfo) -> Health {
        match self.health.get(&info.id) {
            Some((h, _)) if info.state == RunState::Running => h.clone(),
            _ => Health::NotChecked,
        }
    }

    fn persist(&self, deployment: &str) {
        if let Some(obs) = self.actual.deployments.get(deployment) {
            let last_exit = self.notes.get(deployment).and_then(|n| n.exit_code);
            let clock = Clock { now: self.now(), wall: Utc::now() };
            if let Err(err) = self.files.save(deployment, obs, last_exit, clock) {
                warn!(deployment, %err, "cannot persist deployment state");
            }
        }
    }

    fn note_error(&mut self, deployment: &str, error: String) {
        let mut error = error;
        if error.len() > ERROR_KEEP {
            let mut end = ERROR_KEEP;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
        }
        self.notes.entry(deployment.to_owned()).or_default().error = Some(error);
    }

    /// Runs one action and records its effect ([`plan::record`]). False when it failed (the deployment's later
    /// actions in this plan are skipped).
    async fn execute(&mut self, action: &Action) -> bool {
        let now = self.now();
        let outcome = match action {
            Action::Resolve { image, .. } => {
                let (resolver, tx, stop) = (self.resolver.clone(), self.done_tx.clone(), self.tasks.child_token());
                let (action, image) = (action.clone(), image.clone());
                tokio::spawn(async move {
                    let result = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = resolver.resolve(&image) => r,
                    };
                    let outcome = match result {
                        Ok(image) => Outcome::Resolved { image },
                        Err(error) => Outcome::Failed { error },
                    };
                    let _ = tx.send(Done { action, outcome });
                });
                Outcome::Done
            }
            Action::Pull { deployment, image, .. } => {
                let (rt, tx, stop) = (self.runtime.clone(), self.done_tx.clone(), self.tasks.child_token());
                let (action, deployment, image) = (action.clone(), deployment.clone(), image.clone());
                let (meter, turn) = (self.meter.clone(), self.pull_turn.clone());
                tokio::spawn(async move {
                    let result = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = async {
                            let _turn = turn.acquire().await;
                            meter.start(&deployment);
                            let r = rt.ensure_image(&image).await.map_err(|e| e.to_string());
                            meter.finish();
                            r
                        } => r,
                    };
                    let outcome = match result {
                        Ok(()) => Outcome::Pulled,
                        Err(error) => Outcome::Failed { error },
                    };
                    let _ = tx.send(Done { action, outcome });
                });
                Outcome::Done
            }
            Action::Create { deployment, id, config, labels } => {
                // What only the local policy knows (volume roots, root refusal, the pids limit) goes in here.
                let mut config = (**config).clone();
                crate::deploy::policy::confine(&mut config, &self.opts.policy, &self.opts.state_dir);
                match self.runtime.create(id, &config, labels.clone()).await {
                    Ok(()) => {
                        crate::os::crashpoint::hit("container-created");
                        self.notes.entry(deployment.clone()).or_default().error = None;
                        Outcome::Done
                    }
                    Err(e) => self.start_failed(deployment, e),
                }
            }
            Action::Start { deployment, id } => match self.runtime.start(id).await {
                Ok(()) => {
                    crate::os::crashpoint::hit("container-started");
                    self.stop_checker(id);
                    self.started.insert(deployment.clone(), Utc::now());
                    Outcome::Done
                }
                Err(e) => self.start_failed(deployment, e),
            },
            Action::Stop { id, .. } => {
                self.stop_checker(id);
                match self.runtime.stop(id, self.opts.stop_grace).await {
                    Ok(exit_code) => Outcome::Stopped { exit_code },
                    Err(e) => Outcome::Failed { error: format!("stopping {id}: {e}") },
                }
            }
            Action::Remove { id, .. } => match self.runtime.remove(id).await {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed { error: format!("removing {id}: {e}") },
            },
            Action::StartHealthCheck { id, check, .. } => {
                let stop = self.tasks.child_token();
                self.health.insert(id.clone(), (Health::Checking, stop.clone()));
                let probe = Probe { check: check.clone(), runtime: self.runtime.clone(), id: id.clone() };
                let (tx, action) = (self.done_tx.clone(), action.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = probe.run(|health| {
                            let _ = tx.send(Done { action: action.clone(), outcome: Outcome::Health(health) });
                        }) => {}
                    }
                });
                Outcome::Done
            }
            Action::ScheduleRestart { .. } | Action::ResetBackoff { .. } => Outcome::Done,
            Action::MarkRolledBack { deployment, reason, .. } => {
                warn!(deployment, %reason, "update rolled back");
                self.note_error(deployment, reason.clone());
                Outcome::Done
            }
            Action::Forget { deployment } => {
                self.notes.remove(deployment);
                self.started.remove(deployment);
                if let Err(err) = self.files.remove(deployment) {
                    warn!(deployment, %err, "cannot remove deployment state");
                }
                Outcome::Done
            }
            Action::Restart { deployment, id } => match self.restart_container(deployment, id).await {
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Failed { error: format!("restarting {id}: {e}") },
            },
        };
        let ok = !matches!(outcome, Outcome::Failed { .. } | Outcome::DeviceMissing { .. });
        self.record(action, outcome, now);
        ok
    }

    /// A create or start failed: a missing camera or device node waits for the device, anything else retries
    /// with backoff.
    fn start_failed(&mut self, deployment: &str, err: runtime::Error) -> Outcome {
        if let Some(device) = err.missing_device().map(str::to_owned) {
            info!(deployment, %device, "waiting for a device");
            self.notes.entry(deployment.to_owned()).or_default().device_missing_since = Some(Instant::now());
            self.note_error(deployment, err.to_string());
            return Outcome::DeviceMissing { device };
        }
        Outcome::Failed { error: err.to_string() }
    }

    /// Records an outcome in [`Actual`] ([`plan::record`]), with what the report and the persisted state need.
    fn record(&mut self, action: &Action, outcome: Outcome, now: Time) {
        let deployment = action.deployment().to_owned();
        if let Outcome::Failed { error } = &outcome {
            warn!(deployment, action = action_name(action), %error, "step failed");
            self.note_error(&deployment, error.clone());
        }
        let persist = matches!(
            (action, &outcome),
            (Action::MarkRolledBack { .. }, Outcome::Done) | (Action::Resolve { .. }, Outcome::Resolved { .. })
        );
        let book = |a: &Actual| a.deployments.get(&deployment).map(|o| o.restart.clone());
        let before = book(&self.actual);
        plan::record(&mut self.actual, action, outcome, now, &self.opts.backoff);
        // The restart book survives agent restarts: a restart counted, scheduled or reset is written at once.
        let persist = persist || (before != book(&self.actual) && !matches!(action, Action::Forget { .. }));
        if persist {
            self.persist(&deployment);
        }
    }

    fn apply_done(&mut self, done: Done) {
        let Done { action, outcome } = done;
        match (&action, &outcome) {
            (Action::Resolve { deployment, .. }, Outcome::Resolved { image }) => {
                info!(deployment, %image, "image resolved");
            }
            (Action::StartHealthCheck { deployment, id, .. }, Outcome::Health(health)) => {
                if let Health::Unhealthy { reason } = health {
                    warn!(deployment, id, %reason, "health check failed");
                }
                // A verdict from a checker that was stopped meanwhile is dropped.
                let Some(entry) = self.health.get_mut(id) else { return };
                entry.0 = health.clone();
            }
            _ => {}
        }
        self.record(&action, outcome, self.now());
    }

    fn report(&self, name: &str, state: &DeploymentState, desired: &Document) -> ReportedDeployment {
        let d = desired.deployments.get(name);
        let obs = self.actual.deployments.get(name);
        let notes = self.notes.get(name);
        let serving = obs.and_then(|o| o.containers.iter().find(|c| c.state == RunState::Running));
        let digest = serving
            .map(|c| c.image.as_str())
            .filter(|i| !i.is_empty())
            .or(obs.and_then(|o| o.resolved.as_ref()).map(|r| r.image.as_str()))
            .and_then(report::digest_of);
        let error = match state {
            DeploymentState::Running | DeploymentState::Completed => None,
            _ => obs
                .and_then(|o| o.failure.as_ref().map(|f| f.error.clone()))
                .or_else(|| notes.and_then(|n| n.error.clone())),
        };
        ReportedDeployment {
            state: state.clone(),
            image: d.map(|d| d.image.clone()).unwrap_or_default(),
            digest,
            started_at: serving.and(self.started.get(name).copied()),
            restarts: obs.map_or(0, |o| o.restart.restarts),
            exit_code: notes.and_then(|n| n.exit_code),
            health: d.and_then(|d| d.health.as_ref()).and(serving.map(|c| c.health.clone())),
            error,
            source: None,
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}

/// The action's name for logs.
fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Resolve { .. } => "resolve",
        Action::Pull { .. } => "pull",
        Action::Create { .. } => "create",
        Action::Start { .. } => "start",
        Action::Stop { .. } => "stop",
        Action::Remove { .. } => "remove",
        Action::StartHealthCheck { .. } => "health-check",
        Action::ScheduleRestart { .. } => "schedule-restart",
        Action::ResetBackoff { .. } => "reset-backoff",
        Action::MarkRolledBack { .. } => "mark-rolled-back",
        Action::Forget { .. } => "forget",
        Action::Restart { .. } => "restart",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::document::{parse, Format};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A backend that keeps containers in memory and records every call.
    #[derive(Default)]
    struct Fake {
        containers: Mutex<BTreeMap<String, ContainerInfo>>,
        calls: Mutex<Vec<String>>,
        camera_missing: AtomicBool,
        /// Progress reported by pulls (as a backend with a progress sink does).
        sink: Mutex<Option<crate::image::pull::ProgressSink>>,
        /// Pulls wait for this once they reported 40 of 100 bytes.
        hold: Option<tokio::sync::Notify>,
    }

    impl Fake {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
        fn call(&self, c: String) {
            self.calls.lock().unwrap().push(c);
        }
        fn crash(&self, id: &str, code: i32) {
            let mut all = self.containers.lock().unwrap();
            let c = all.get_mut(id).unwrap();
            (c.state, c.exit_code, c.pid) = (RunState::Exited, Some(code), None);
        }
        fn ids(&self) -> Vec<String> {
            self.containers.lock().unwrap().keys().cloned().collect()
        }
        fn state(&self, id: &str) -> RunState {
            self.containers.lock().unwrap()[id].state
        }
    }

    fn gone(id: &str) -> runtime::Error {
        runtime::Error::Container { id: id.into(), message: "no such container".into() }
    }

    #[async_trait::async_trait]
    impl ContainerRuntime for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        async fn ensure_image(&self, image: &str) -> runtime::Result<()> {
            self.call(format!("pull {image}"));
            let sink = self.sink.lock().unwrap().clone();
            if let (Some(sink), Some(hold)) = (sink, &self.hold) {
                use crate::image::pull::Progress;
                sink(&Progress::BlobStarted { digest: "l1".into(), size: 100, offset: 0 });
                sink(&Progress::BlobBytes { digest: "l1".into(), bytes: 40 });
                hold.notified().await;
            }
            Ok(())
        }
        async fn create(
            &self,
            id: &str,
            config: &runtime::ContainerConfig,
            labels: BTreeMap<String, String>,
        ) -> runtime::Result<()> {
            if self.camera_missing.load(Ordering::SeqCst) {
                return Err(
                    crate::host::devices::cameras::CameraError::Missing { selector: "/dev/video0".into() }.into()
                );
            }
            assert_eq!(labels.get(labels::IMAGE), Some(&config.image), "image label");
            assert!(labels.contains_key(labels::SPEC_HASH), "spec hash label");
            self.call(format!("create {id}"));
            let info = ContainerInfo {
                id: id.into(),
                labels,
                state: RunState::Created,
                pid: None,
                exit_code: None,
                oom_killed: false,
                started_at: None,
            };
            self.containers.lock().unwrap().insert(id.into(), info);
            Ok(())
        }
        async fn start(&self, id: &str) -> runtime::Result<()> {
            self.call(format!("start {id}"));
            let mut all = self.containers.lock().unwrap();
            let c = all.get_mut(id).ok_or_else(|| gone(id))?;
            (c.state, c.pid, c.started_at, c.exit_code) = (RunState::Running, Some(1), Some(Utc::now()), None);
            Ok(())
        }
        async fn stop(&self, id: &str, _grace: Duration) -> runtime::Result<Option<i32>> {
            self.call(format!("stop {id}"));
            let mut all = self.containers.lock().unwrap();
            let c = all.get_mut(id).ok_or_else(|| gone(id))?;
            (c.state, c.pid, c.exit_code) = (RunState::Exited, None, Some(143));
            Ok(Some(143))
        }
        async fn remove(&self, id: &str) -> runtime::Result<()> {
            self.call(format!("remove {id}"));
            self.containers.lock().unwrap().remove(id).map(drop).ok_or_else(|| gone(id))
        }
        async fn list_owned(&self) -> runtime::Result<Vec<ContainerInfo>> {
            Ok(self.containers.lock().unwrap().values().cloned().collect())
        }
        async fn logs(&self, _id: &str, _tail: Option<usize>) -> runtime::Result<Vec<runtime::LogLine>> {
            Ok(Vec::new())
        }
    }

    /// Pins `name:tag` to a digest derived from the tag; counts calls.
    #[derive(Default)]
    struct Pins {
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Resolver for Pins {
        async fn resolve(&self, image: &str) -> std::result::Result<String, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let (name, tag) = image.rsplit_once(':').ok_or("no tag")?;
            Ok(format!("registry.local/{name}@sha256:{}", tag.repeat(64).chars().take(64).collect::<String>()))
        }
    }

    fn doc(text: &str) -> Document {
        parse(text.as_bytes(), Some(Format::Toml), "t.toml").unwrap()
    }

    fn app(tag: &str, health: &str) -> Document {
        doc(&format!("[deployments.app]\nimage = \"busybox:{tag}\"\n[deployments.app.health]\n{health}\n"))
    }

    const PASSES: &str = "running_for = \"200ms\"";
    /// Nothing listens on port 1: refused at once.
    const FAILS: &str = "tcp = 1\ninterval = \"100ms\"\nretries = 2";

    /// First backoff delay and missing-device retry in these tests: short, so they run in real time.
    const BASE: Duration = Duration::from_millis(200);

    struct Rig {
        fake: Arc<Fake>,
        pins: Arc<Pins>,
        dir: tempfile::TempDir,
    }

    impl Rig {
        fn new() -> Self {
            Self { fake: Arc::default(), pins: Arc::default(), dir: tempfile::tempdir().unwrap() }
        }
        fn executor(&self) -> Executor {
            let opts = Options {
                state_dir: self.dir.path().into(),
                stop_grace: Duration::from_secs(1),
                backoff: Backoff { base: BASE, cap: Duration::from_secs(1), reset_after: Duration::from_secs(600) },
                device_retry: BASE,
                policy: Default::default(),
            };
            Executor::new(self.fake.clone(), self.pins.clone(), PullMeter::default(), opts)
        }
    }

    /// Runs rounds (letting paused time run on while long steps work) until `until` holds for the output.
    async fn settle(exec: &mut Executor, d: &Document, until: impl Fn(&Output) -> bool) -> Output {
        for _ in 0..60 {
            let out = exec.round(d).await;
            if until(&out) {
                return out;
            }
            exec.wait_done(Duration::from_millis(100)).await;
        }
        panic!("did not settle: {:?}", exec.round(d).await.deployments);
    }

    fn state(out: &Output, name: &str) -> &'static str {
        out.deployments[name].state.name()
    }

    #[tokio::test]
    async fn first_deploy_resolves_pulls_creates_and_starts_with_labels() {
        let rig = Rig::new();
        let mut exec = rig.executor();
        let d = doc("generation = 3\n[deployments.a]\nimage = \"busybox:1\"\n[deployments.b]\nimage = \"busybox:2\"\n");
        let out = settle(&mut exec, &d, |o| o.converged).await;
        assert_eq!(out.applied_generation, Some(3));
        for (name, tag) in [("a", "1"), ("b", "2")] {
            let r = &out.deployments[name];
            assert_eq!(r.state, DeploymentState::Running);
            assert_eq!(r.digest.as_deref(), Some(format!("sha256:{}", tag.repeat(64)).as_str()));
            assert!(r.started_at.is_some());
            let id = plan::container_id(name, &d.deployments[name].doc_hash());
            let calls = rig.fake.calls();
            let pinned = format!("registry.local/busybox@sha256:{}", tag.repeat(64));
            for c in [format!("pull {pinned}"), format!("create {id}"), format!("start {id}")] {
                assert!(calls.contains(&c), "{c} missing from {calls:?}");
            }
            let labels = rig.fake.containers.lock().unwrap()[&id].labels.clone();
            assert_eq!(labels[labels::DEPLOYMENT], name);
            assert_eq!(labels[labels::DOC_HASH], d.deployments[name].doc_hash());
        }
        assert!(out.events.iter().any(|e| e.to.as_ref().is_some_and(DeploymentState::is_converged)));
        assert!(rig.dir.path().join("deployments/a.json").is_file(), "resolved digest is persisted");
    }

    #[tokio::test]
    async fn restarted_executor_adopts_containers_without_resolving_again() {
        let rig = Rig::new();
        let d = app("1", PASSES);
        settle(&mut rig.executor(), &d, |o| o.converged).await;
        let (creates, resolves) = (rig.fake.calls().len(), rig.pins.calls.load(Ordering::SeqCst));
        let mut again = rig.executor();
        let out = settle(&mut again, &d, |o| o.converged).await;
        assert_eq!(state(&out, "app"), "running");
        assert_eq!(rig.fake.calls().len(), creates, "no container call: {:?}", rig.fake.calls());
        assert_eq!(rig.pins.calls.load(Ordering::SeqCst), resolves);
        assert_eq!(rig.fake.ids().len(), 1);
    }

    #[tokio::test]
    async fn update_that_passes_its_health_check_replaces_the_old_container() {
        let rig = Rig::new();
        let mut exec = rig.executor();
        let v1 = app("1", PASSES);
        settle(&mut exec, &v1, |o| o.converged).await;
        let v2 = app("2", PASSES);
        let out = settle(&mut exec, &v2, |o| o.converged).await;
        let new_id = plan::container_id("app", &v2.deployments["app"].doc_hash());
        assert_eq!(rig.fake.ids(), vec![new_id]);
        assert_eq!(out.deployments["app"].digest.as_deref(), Some(format!("sha256:{}", "2".repeat(64)).as_str()));
        assert_eq!(out.deployments["app"].health, Some(Health::Healthy));
    }

    #[tokio::test]
    async fn update_that_fails_its_health_check_rolls_back_with_the_reason() {
        let rig = Rig::new();
        let mut exec = rig.executor();
        let v1 = app("1", PASSES);
        settle(&mut exec, &v1, |o| o.converged).await;
        let old_id = plan::container_id("app", &v1.deployments["app"].doc_hash());
        let v2 = app("2", FAILS);
        let out = settle(&mut exec, &v2, |o| state(o, "app") == "rolled-back").await;
        let DeploymentState::RolledBack { reason } = &out.deployments["app"].state else { unreachable!() };
        assert!(reason.contains("health check failed") && reason.contains("127.0.0.1:1"), "{reason}");
        // The next rounds restore the old container and keep it.
        let out = settle(&mut exec, &v2, |o| o.deployments["app"].started_at.is_some()).await;
        assert_eq!(rig.fake.ids(), vec![old_id.clone()]);
        assert_eq!(rig.fake.state(&old_id), RunState::Running);
        assert_eq!(out.deployments["app"].digest.as_deref(), Some(format!("sha256:{}", "1".repeat(64)).as_str()));
        assert!(rig.dir.path().join("deployments/app.json").is_file());
        let kept = std::fs::read_to_string(rig.dir.path().join("deployments/app.json")).unwrap();
        assert!(kept.contains("health check failed"), "rolled back is persisted: {kept}");
    }

    #[tokio::test]
    async fn removed_deployment_is_stopped_removed_and_forgotten() {
        let rig = Rig::new();
        let mut exec = rig.executor();
        settle(&mut exec, &app("1", PASSES), |o| o.converged).await;
        let empty = doc("generation = 2\n");
        let events = std::sync::Mutex::new(Vec::new());
        let out = settle(&mut exec, &empty, |o| {
            events.lock().unwrap().extend(o.events.clone());
            o.converged
        })
        .await;
        assert!(out.deployments.is_empty());
        assert!(rig.fake.ids().is_empty());
        assert!(rig.fake.calls().iter().any(|c| c.starts_with("stop app-")));
        assert!(!rig.dir.path().join("deployments/app.json").exists());
        let events = events.into_inner().unwrap();
        assert!(events.iter().any(|e| e.deployment == "app" && e.to.as_ref().is_some_and(|s| s.name() == "removing")));
        assert!(events.iter().any(|e| e.deployment == "app" && e.to.is_none()), "{events:?}");
    }

    #[tokio::test]
    async fn pull_progress_shows_in_the_pulling_state_and_as_one_event_a_second() {
        let mut rig = Rig::new();
        rig.fake = Arc::new(Fake { hold: Some(tokio::sync::Notify::new()), ..Default::default() });
        let meter = PullMeter::default();
        *rig.fake.sink.lock().unwrap() = Some(meter.sink());
        let opts = rig.executor().opts.clone();
        let mut exec = Executor::new(rig.fake.clone(), rig.pins.clone(), meter, opts);
        let d = doc("[deployments.app]\nimage = \"busybox:1\"\n");
        let out = settle(&mut exec, &d, |o| !o.progress.is_empty()).await;
        assert_eq!(out.deployments["app"].state, DeploymentState::Pulling { done: 40, total: Some(100) });
        assert_eq!(out.progress[0], PullProgress { deployment: "app".into(), done_bytes: 40, total_bytes: Some(100) });
        let again = exec.round(&d).await;
        assert!(again.progress.is_empty(), "a second event within the same second");
        rig.fake.hold.as_ref().unwrap().notify_one();
        settle(&mut exec, &d, |o| o.converged).await;
    }

    #[tokio::test]
    async fn restart_request_stops_and_starts_the_container_and_checks_health_again() {
        let rig = Rig::new();
        let mut exec = rig.executor();
        let d = app("1", PASSES);
        settle(&mut exec, &d, |o| o.converged).await;
        let id = plan::container_id("app", &d.deployments["app"].doc_hash());
        let result = exec.restart("app").await.unwrap();
        assert_eq!(result["container"], id.as_str());
        let calls = rig.fake.calls();
        assert_eq!(calls[calls.len() - 2..], [format!("stop {id}"), format!("start {id}")]);
        let out = exec.round(&d).await;
        assert_eq!(state(&out, "app"), "health-checking", "the gate runs again after a restart");
        assert_eq!(out.deployments["app"].restarts, 0);
        let err = exec.restart("nope").await.unwrap_err();
        assert!(err.contains("no container of deployment `nope`"), "{err}");
    }

    #[tokio::test]
    async fn crashed_container_restarts_after_backoff() {
        let rig = Rig::new();
        let mut exec = rig.executor();
        let d = doc("[deployments.app]\nimage = \"busybox:1\"\n");
        settle(&mut exec, &d, |o| o.converged).await;
        let id = plan::container_id("app", &d.deployments["app"].doc_hash());
        rig.fake.crash(&id, 3);
        let out = exec.round(&d).await;
        let r = &out.deployments["app"];
        assert!(
            matches!(&r.state, DeploymentState::Restarting { attempt: 1, reason, .. } if reason.contains("code 3"))
        );
        assert_eq!(r.exit_code, Some(3));
        let starts = |f: &Fake| f.calls().iter().filter(|c| c.starts_with("start")).count();
        assert_eq!(starts(&rig.fake), 1, "no restart before the backoff");
        tokio::time::sleep(BASE).await;
        let out = settle(&mut exec, &d, |o| o.converged).await;
        assert_eq!(starts(&rig.fake), 2);
        assert_eq!(out.deployments["app"].restarts, 1);
        // A second crash waits twice as long.
        rig.fake.crash(&id, 3);
        let out = exec.round(&d).await;
        assert!(matches!(
            out.deployments["app"].state,
            DeploymentState::Restarting { attempt: 2, backoff_ms: 400, .. }
        ));
    }

    #[tokio::test]
    async fn restart_count_backoff_and_last_exit_survive_an_executor_restart() {
        let rig = Rig::new();
        let d = doc("[deployments.app]\nimage = \"busybox:1\"\n");
        let id = plan::container_id("app", &d.deployments["app"].doc_hash());
        let starts = |f: &Fake| f.calls().iter().filter(|c| c.starts_with("start")).count();
        {
            let mut exec = rig.executor();
            settle(&mut exec, &d, |o| o.converged).await;
            rig.fake.crash(&id, 3);
            exec.round(&d).await;
            tokio::time::sleep(BASE).await;
            let out = settle(&mut exec, &d, |o| o.converged).await;
            assert_eq!(out.deployments["app"].restarts, 1);
            // A second crash schedules attempt 2 (400 ms); the agent stops before it is due.
            rig.fake.crash(&id, 5);
            let out = exec.round(&d).await;
            assert!(matches!(out.deployments["app"].state, DeploymentState::Restarting { attempt: 2, .. }));
        }
        let mut again = rig.executor();
        let out = again.round(&d).await;
        let r = &out.deployments["app"];
        assert!(
            matches!(&r.state, DeploymentState::Restarting { attempt: 2, backoff_ms: 400, .. }),
            "the backoff continues, not from zero: {:?}",
            r.state
        );
        assert_eq!((r.restarts, r.exit_code), (1, Some(5)), "restarts and last exit as before the restart");
        assert_eq!(starts(&rig.fake), 2, "the scheduled restart is not due yet");
        let out = settle(&mut again, &d, |o| o.converged).await;
        assert_eq!((out.deployments["app"].restarts, starts(&rig.fake)), (2, 3));
        // And once more across a restart: the third crash waits 800 ms (capped at 1 s in these tests).
        rig.fake.crash(&id, 1);
        drop(again);
        let out = rig.executor().round(&d).await;
        assert!(matches!(
            out.deployments["app"].state,
            DeploymentState::Restarting { attempt: 3, backoff_ms: 800, .. }
        ));
        assert_eq!(out.deployments["app"].restarts, 2);
    }

    #[tokio::test]
    async fn containers_jetship_run_made_are_left_alone_even_under_a_deployments_name() {
        let rig = Rig::new();
        for (id, deployment) in [("cam", "cam"), ("app-run", "app")] {
            let labels = BTreeMap::from([
                (labels::DEPLOYMENT.to_owned(), deployment.to_owned()),
                (labels::OWNER.to_owned(), labels::OWNER_RUN.to_owned()),
            ]);
            let info = ContainerInfo {
                id: id.into(),
                labels,
                state: RunState::Running,
                pid: Some(1),
                exit_code: None,
                oom_killed: false,
                started_at: Some(Utc::now()),
            };
            rig.fake.containers.lock().unwrap().insert(id.into(), info);
        }
        let mut exec = rig.executor();
        let out = settle(&mut exec, &app("1", PASSES), |o| o.converged).await;
        assert_eq!(out.deployments.keys().collect::<Vec<_>>(), ["app"], "`cam` is no deployment");
        let calls = rig.fake.calls();
        assert!(calls.iter().all(|c| !c.ends_with(" cam") && !c.ends_with(" app-run")), "{calls:?}");
        assert_eq!(rig.fake.state("cam"), RunState::Running);
        assert_eq!(rig.fake.state("app-run"), RunState::Running);
    }

    #[tokio::test]
    async fn a_state_file_without_restart_state_still_loads() {
        let rig = Rig::new();
        let dir = rig.dir.path().join("deployments");
        std::fs::create_dir_all(&dir).unwrap();
        let old = br#"{"resolved":["h","registry.local/busybox@sha256:00"],"rolled_back":null}"#;
        crate::os::fsutil::write_mirrored(&dir.join("app.json"), old).unwrap();
        let exec = rig.executor();
        let obs = &exec.actual.deployments["app"];
        assert_eq!(obs.resolved.as_ref().map(|r| r.image.as_str()), Some("registry.local/busybox@sha256:00"));
        assert_eq!(obs.restart, plan::RestartBook::default());
    }

    #[tokio::test]
    async fn missing_camera_waits_for_the_device_then_starts() {
        let rig = Rig::new();
        let mut exec = rig.executor();
        rig.fake.camera_missing.store(true, Ordering::SeqCst);
        let d = doc("[deployments.cam]\nimage = \"busybox:1\"\ncameras = [\"/dev/video0\"]\n");
        let out = settle(&mut exec, &d, |o| state(o, "cam") == "waiting-for-device").await;
        assert!(
            matches!(&out.deployments["cam"].state, DeploymentState::WaitingForDevice { device } if device == "/dev/video0")
        );
        assert!(rig.fake.ids().is_empty());
        rig.fake.camera_missing.store(false, Ordering::SeqCst);
        tokio::time::sleep(BASE).await;
        let out = settle(&mut exec, &d, |o| o.converged).await;
        assert_eq!(state(&out, "cam"), "running");
    }

    #[tokio::test]
    async fn failed_resolve_is_reported_and_retried() {
        let rig = Rig::new();
        let mut exec = rig.executor();
        let d = doc("[deployments.app]\nimage = \"busybox\"\n");
        let out = settle(&mut exec, &d, |o| state(o, "app") == "failed").await;
        assert!(out.deployments["app"].error.as_deref().is_some_and(|e| e.contains("no tag")));
        let before = rig.pins.calls.load(Ordering::SeqCst);
        tokio::time::sleep(BASE).await;
        settle(&mut exec, &d, |_| rig.pins.calls.load(Ordering::SeqCst) > before).await;
    }
}
