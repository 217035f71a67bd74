//! The reconciler's thin IO half: each round it observes the backend's containers, asks [`plan::plan`]
//! what to do, runs those actions against a `dyn ContainerRuntime` (and the registry, to resolve images), and
//! records their effects in [`Actual`] exactly as each [`Action`]'s doc says. Long steps (resolving, pulling,
//! health checks) run as tasks whose results come back on a channel and are applied before the next round.
//!
//! It makes no decisions of its own (those are `reconcile`'s) and does not parse or validate documents
//! (`deployment`, `policy`) nor publish anything itself: each round returns an [`Output`] (per-deployment
//! report, transition events, applied generation) that the agent publishes. What the plan needs across agent
//! restarts (resolved digests, rolled-back versions) is persisted under `<state_dir>/deployments/`.
//!
//! Health checks: `http` and `tcp` probe from the host (containers use host networking by default),
//! `running_for` waits, and `exec` runs the command inside the container's namespaces with
//! `nsenter --target <pid>` (the backend trait has no exec; this needs the agent to run as root, as it does
//! on a device, and a backend that reports the container's pid).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::deploy::document::{Document, HealthCheck};
use crate::deploy::plan::{
    self, Action, Actual, Backoff, ContainerView, DeploymentState, Failure, Health, Observed, Resolved, RolledBack,
    Stage, Task, Time,
};
use crate::deploy::report::{self, Event, ReportedDeployment};
use crate::host::devices::cameras::CameraError;
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

    fn start(&self, deployment: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m = MeterState { deployment: Some(deployment.to_owned()), ..Default::default() };
    }

    fn finish(&self) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = MeterState::default();
    }

    /// The deployment pulling now, with bytes done and in all (when the backend said).
    fn read(&self) -> Option<(String, u64, Option<u64>)> {
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
    async fn resolve(&self, image: &str) -> std::result::Result<String, String> {
        match crate::image::pull::resolve(&self.client, image, &self.vars).await {
            Ok(r) => Ok(r.reference.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What the plan needs of a deployment after an agent restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Persisted {
    resolved: Option<(String, String)>,
    rolled_back: Option<(String, String)>,
}

/// `<state_dir>/deployments/<name>.json`: one small file per deployment, written atomically.
#[derive(Debug, Clone)]
struct StateFiles {
    dir: PathBuf,
}

impl StateFiles {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn save(&self, name: &str, obs: &Observed) -> Result<()> {
        let p = Persisted {
            resolved: obs.resolved.as_ref().map(|r| (r.doc_hash.clone(), r.image.clone())),
            rolled_back: obs.rolled_back.as_ref().map(|r| (r.doc_hash.clone(), r.reason.clone())),
        };
        let path = self.path(name);
        let store = |source| Error::Store { path: path.clone(), source };
        std::fs::create_dir_all(&self.dir).map_err(store)?;
        let json = serde_json::to_vec(&p).expect("persisted state serializes");
        crate::os::fsutil::write_atomic(&path, &json).map_err(store)
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Store { path, source: e }),
            _ => Ok(()),
        }
    }

    /// Every deployment's persisted state; unreadable files are reported and skipped (the deployment is then
    /// resolved again).
    fn load(&self) -> BTreeMap<String, Observed> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return out };
        for e in entries.flatten() {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let parsed = crate::os::fsutil::read_small(&path, 64 * 1024)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str::<Persisted>(&text).map_err(|e| e.to_string()));
            match parsed {
                Ok(p) => {
                    let obs = Observed {
                        resolved: p.resolved.map(|(doc_hash, image)| Resolved { doc_hash, image }),
                        rolled_back: p.rolled_back.map(|(doc_hash, reason)| RolledBack { doc_hash, reason }),
                        ..Default::default()
                    };
                    out.insert(name.to_owned(), obs);
                }
                Err(err) => warn!(path = %path.display(), %err, "ignoring unreadable deployment state"),
            }
        }
        out
    }
}

/// A long step's result, applied to [`Actual`] before the next round.
#[derive(Debug)]
enum Done {
    Resolved { deployment: String, doc_hash: String, result: std::result::Result<String, String> },
    Pulled { deployment: String, doc_hash: String, image: String, result: std::result::Result<(), String> },
    Health { deployment: String, id: String, health: Health },
}

/// The desired state handed to [`Executor::run`]: the overlaid document and the generation of each source it
/// was made from (`device`, `group:<name>`), reported with the states planned from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
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
    /// The source generations of that document (filled in by [`Executor::run`]).
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
}

impl Options {
    /// Options from the agent config.
    pub fn from_config(config: &Config) -> Self {
        Self {
            state_dir: config.state_dir.clone(),
            stop_grace: Duration::from_secs(config.runtime.stop_grace_s),
            backoff: Backoff::default(),
            device_retry: DEVICE_RETRY,
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
    pids: HashMap<String, i32>,
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
        let actual = Actual { deployments: files.load(), ..Default::default() };
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            runtime,
            resolver,
            files,
            opts,
            origin: Instant::now(),
            actual,
            health: HashMap::new(),
            notes: BTreeMap::new(),
            started: BTreeMap::new(),
            pids: HashMap::new(),
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
    pub async fn run(
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

    /// Stops and starts `deployment`'s serving container (a `cmd/restart`). Its health is checked again from
    /// the start; the restart is not counted against the backoff.
    pub async fn restart(&mut self, deployment: &str) -> std::result::Result<serde_json::Value, String> {
        self.observe().await;
        let id = self
            .actual
            .deployments
            .get(deployment)
            .and_then(|o| {
                o.containers
                    .iter()
                    .find(|c| c.state == RunState::Running)
                    .or_else(|| o.containers.iter().find(|c| c.state == RunState::Exited))
            })
            .map(|c| c.id.clone())
            .ok_or_else(|| {
                format!("no container of deployment `{deployment}` on this device (see `jetship devices`)")
            })?;
        if let Some((_, stop)) = self.health.remove(&id) {
            stop.cancel();
        }
        let code = self.runtime.stop(&id, self.opts.stop_grace).await.map_err(|e| e.to_string())?;
        self.runtime.start(&id).await.map_err(|e| e.to_string())?;
        info!(deployment, id, "restarted on request");
        let now = self.now();
        let obs = self.obs(deployment);
        obs.restart.next_at = None;
        if let Some(c) = obs.containers.iter_mut().find(|c| c.id == id) {
            (c.state, c.running_since, c.health, c.exit_code) =
                (RunState::Running, Some(now), Health::NotChecked, None);
        }
        self.started.insert(deployment.to_owned(), Utc::now());
        Ok(serde_json::json!({ "container": id, "exit_code": code }))
    }

    /// Applies every finished long step without waiting.
    fn drain(&mut self) {
        while let Ok(d) = self.done_rx.try_recv() {
            self.apply_done(d);
        }
    }

    /// Waits up to `limit` for one long step to finish and applies it; false when none did.
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

    /// Refreshes the containers in [`Actual`] from the backend, keeping what the health checkers said.
    async fn observe(&mut self) {
        let listed = match self.runtime.list_owned().await {
            Ok(l) => l,
            Err(err) => {
                warn!(%err, "cannot list containers; planning with the last known ones");
                return;
            }
        };
        let (now, now_wall) = (self.now(), Utc::now());
        let mut by_dep: BTreeMap<String, Vec<ContainerView>> = BTreeMap::new();
        self.pids.clear();
        for info in &listed {
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
            if let Some(pid) = info.pid {
                self.pids.insert(info.id.clone(), pid);
            }
            if info.state == RunState::Running {
                if let Some(at) = info.started_at {
                    self.started.insert(dep.clone(), at);
                }
            }
            if let Some(code) = info.exit_code.filter(|_| info.state == RunState::Exited) {
                self.notes.entry(dep.clone()).or_default().exit_code = Some(code);
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

    fn obs(&mut self, deployment: &str) -> &mut Observed {
        self.actual.deployments.entry(deployment.to_owned()).or_default()
    }

    fn persist(&self, deployment: &str) {
        if let Some(obs) = self.actual.deployments.get(deployment) {
            if let Err(err) = self.files.save(deployment, obs) {
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

    fn fail(&mut self, deployment: &str, doc_hash: &str, stage: Stage, error: String) {
        warn!(deployment, ?stage, %error, "step failed");
        let now = self.now();
        let backoff = self.opts.backoff;
        let obs = self.obs(deployment);
        let f = Failure::after(obs.failure.as_ref(), doc_hash, stage, error.clone(), now, &backoff);
        obs.failure = Some(f);
        self.note_error(deployment, error);
    }

    /// The doc hash of the version a container belongs to, from what was observed.
    fn doc_hash_of(&self, deployment: &str, id: &str) -> String {
        self.actual
            .deployments
            .get(deployment)
            .and_then(|o| o.containers.iter().find(|c| c.id == id))
            .and_then(|c| c.doc_hash.clone())
            .unwrap_or_default()
    }

    /// Runs one action and records its effect. False when it failed (the deployment's later actions in this
    /// plan are skipped).
    async fn execute(&mut self, action: &Action) -> bool {
        let now = self.now();
        match action {
            Action::Resolve { deployment, doc_hash, image } => {
                self.obs(deployment).task = Some(Task::Resolving);
                let (resolver, tx, stop) = (self.resolver.clone(), self.done_tx.clone(), self.tasks.child_token());
                let (deployment, doc_hash, image) = (deployment.clone(), doc_hash.clone(), image.clone());
                tokio::spawn(async move {
                    let result = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = resolver.resolve(&image) => r,
                    };
                    let _ = tx.send(Done::Resolved { deployment, doc_hash, result });
                });
                true
            }
            Action::Pull { deployment, doc_hash, image } => {
                self.obs(deployment).task = Some(Task::Pulling { done: 0, total: None });
                let (rt, tx, stop) = (self.runtime.clone(), self.done_tx.clone(), self.tasks.child_token());
                let (deployment, doc_hash, image) = (deployment.clone(), doc_hash.clone(), image.clone());
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
                    let _ = tx.send(Done::Pulled { deployment, doc_hash, image, result });
                });
                true
            }
            Action::Create { deployment, id, config, labels: l } => {
                let doc_hash = l.get(labels::DOC_HASH).cloned().unwrap_or_default();
                match self.runtime.create(id, config, l.clone()).await {
                    Ok(()) => {
                        let obs = self.obs(deployment);
                        obs.restart = Default::default();
                        obs.failure = None;
                        obs.containers.push(ContainerView {
                            id: id.clone(),
                            doc_hash: Some(doc_hash),
                            image: config.image.clone(),
                            state: RunState::Created,
                            exit_code: None,
                            running_since: None,
                            health: Health::NotChecked,
                        });
                        self.notes.entry(deployment.clone()).or_default().error = None;
                        true
                    }
                    Err(e) => {
                        self.start_failed(deployment, &doc_hash, Stage::Create, e);
                        false
                    }
                }
            }
            Action::Start { deployment, id } => match self.runtime.start(id).await {
                Ok(()) => {
                    if let Some((_, stop)) = self.health.remove(id) {
                        stop.cancel();
                    }
                    let obs = self.obs(deployment);
                    if obs.restart.next_at.take().is_some() {
                        obs.restart.restarts += 1;
                        obs.restart.consecutive += 1;
                    }
                    obs.failure = None;
                    if let Some(c) = obs.containers.iter_mut().find(|c| &c.id == id) {
                        (c.state, c.running_since, c.health, c.exit_code) =
                            (RunState::Running, Some(now), Health::NotChecked, None);
                    }
                    self.started.insert(deployment.clone(), Utc::now());
                    true
                }
                Err(e) => {
                    let doc_hash = self.doc_hash_of(deployment, id);
                    self.start_failed(deployment, &doc_hash, Stage::Start, e);
                    false
                }
            },
            Action::Stop { deployment, id } => {
                if let Some((_, stop)) = self.health.remove(id) {
                    stop.cancel();
                }
                match self.runtime.stop(id, self.opts.stop_grace).await {
                    Ok(code) => {
                        let obs = self.obs(deployment);
                        if let Some(c) = obs.containers.iter_mut().find(|c| &c.id == id) {
                            (c.state, c.running_since, c.health, c.exit_code) =
                                (RunState::Exited, None, Health::NotChecked, code);
                        }
                        true
                    }
                    Err(e) => {
                        self.note_error(deployment, format!("stopping {id}: {e}"));
                        false
                    }
                }
            }
            Action::Remove { deployment, id } => match self.runtime.remove(id).await {
                Ok(()) => {
                    self.obs(deployment).containers.retain(|c| &c.id != id);
                    true
                }
                Err(e) => {
                    self.note_error(deployment, format!("removing {id}: {e}"));
                    false
                }
            },
            Action::StartHealthCheck { deployment, id, check } => {
                let stop = self.tasks.child_token();
                self.health.insert(id.clone(), (Health::Checking, stop.clone()));
                if let Some(c) = self.obs(deployment).containers.iter_mut().find(|c| &c.id == id) {
                    c.health = Health::Checking;
                }
                let probe = Probe { check: check.clone(), pid: self.pids.get(id).copied() };
                let (tx, deployment, id) = (self.done_tx.clone(), deployment.clone(), id.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = probe.run(|health| {
                            let _ = tx.send(Done::Health { deployment: deployment.clone(), id: id.clone(), health });
                        }) => {}
                    }
                });
                true
            }
            Action::ScheduleRestart { deployment, at, .. } => {
                self.obs(deployment).restart.next_at = Some(*at);
                true
            }
            Action::ResetBackoff { deployment } => {
                self.obs(deployment).restart.consecutive = 0;
                true
            }
            Action::MarkRolledBack { deployment, doc_hash, reason } => {
                warn!(deployment, %reason, "update rolled back");
                self.obs(deployment).rolled_back =
                    Some(RolledBack { doc_hash: doc_hash.clone(), reason: reason.clone() });
                self.note_error(deployment, reason.clone());
                self.persist(deployment);
                true
            }
            Action::Forget { deployment } => {
                self.actual.deployments.remove(deployment);
                self.notes.remove(deployment);
                self.started.remove(deployment);
                if let Err(err) = self.files.remove(deployment) {
                    warn!(deployment, %err, "cannot remove deployment state");
                }
                true
            }
        }
    }

    /// A create or start failed: a missing camera waits for the device, anything else retries with backoff.
    fn start_failed(&mut self, deployment: &str, doc_hash: &str, stage: Stage, err: runtime::Error) {
        if let runtime::Error::Camera(CameraError::Missing { selector }) = &err {
            info!(deployment, camera = %selector, "waiting for a camera");
            self.obs(deployment).device_missing = Some(selector.clone());
            self.notes.entry(deployment.to_owned()).or_default().device_missing_since = Some(Instant::now());
            self.note_error(deployment, err.to_string());
            return;
        }
        self.fail(deployment, doc_hash, stage, err.to_string());
    }

    fn apply_done(&mut self, done: Done) {
        match done {
            Done::Resolved { deployment, doc_hash, result } => {
                self.obs(&deployment).task = None;
                match result {
                    Ok(image) => {
                        info!(deployment, %image, "image resolved");
                        let obs = self.obs(&deployment);
                        obs.resolved = Some(Resolved { doc_hash, image });
                        obs.failure = None;
                        self.persist(&deployment);
                    }
                    Err(e) => self.fail(&deployment, &doc_hash, Stage::Resolve, e),
                }
            }
            Done::Pulled { deployment, doc_hash, image, result } => {
                self.obs(&deployment).task = None;
                match result {
                    Ok(()) => {
                        self.obs(&deployment).failure = None;
                        self.actual.images.insert(image);
                    }
                    Err(e) => self.fail(&deployment, &doc_hash, Stage::Pull, e),
                }
            }
            Done::Health { deployment, id, health } => {
                if let Health::Unhealthy { reason } = &health {
                    warn!(deployment, id, %reason, "health check failed");
                }
                if let Some(entry) = self.health.get_mut(&id) {
                    entry.0 = health.clone();
                    if let Some(c) = self.obs(&deployment).containers.iter_mut().find(|c| c.id == id) {
                        c.health = health;
                    }
                }
            }
        }
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

/// One container's health checker.
struct Probe {
    check: HealthCheck,
    pid: Option<i32>,
}

impl Probe {
    /// Probes until a verdict that ends the checker: reports `Healthy` on the first success (and again after a
    /// failure streak ended), `Unhealthy` after `retries` consecutive failures outside the start period.
    async fn run(self, report: impl Fn(Health)) {
        let started = Instant::now();
        if let Some(d) = &self.check.running_for {
            tokio::time::sleep(d.0).await;
            report(Health::Healthy);
            return;
        }
        let (interval, start_period) = (self.check.interval.0, self.check.start_period.0);
        let retries = self.check.retries.max(1);
        let mut failures = 0;
        let mut healthy = false;
        loop {
            let result = match tokio::time::timeout(self.check.timeout.0, self.probe()).await {
                Ok(r) => r,
                Err(_) => {
                    Err(format!("no answer within {}", crate::deploy::document::DurationSpec(self.check.timeout.0)))
                }
            };
            match result {
                Ok(()) => {
                    failures = 0;
                    if !healthy {
                        healthy = true;
                        report(Health::Healthy);
                    }
                }
                Err(reason) if started.elapsed() >= start_period => {
                    failures += 1;
                    if failures >= retries {
                        report(Health::Unhealthy { reason: format!("{reason} ({failures} probes in a row)") });
                        return;
                    }
                }
                Err(_) => {}
            }
            tokio::time::sleep(interval).await;
        }
    }

    async fn probe(&self) -> std::result::Result<(), String> {
        if let Some(url) = &self.check.http {
            crate::install_crypto_provider();
            let client = reqwest::Client::builder().build().map_err(|e| format!("http client: {e}"))?;
            let resp = client.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
            let status = resp.status();
            return if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("GET {url} answered {status}"))
            };
        }
        if let Some(target) = &self.check.tcp {
            return tokio::net::TcpStream::connect(&target.0)
                .await
                .map(drop)
                .map_err(|e| format!("tcp connect to {}: {e}", target.0));
        }
        if let Some(cmd) = &self.check.exec {
            let Some(pid) = self.pid else {
                return Err("exec health check: the backend reports no pid for the container".into());
            };
            let out = tokio::process::Command::new("nsenter")
                .args(["--target", &pid.to_string(), "--mount", "--uts", "--ipc", "--net", "--pid", "--"])
                .args(cmd)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| format!("cannot run nsenter for the exec health check (install util-linux): {e}"))?;
            return if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`{}` exited with {}: {}",
                    cmd.join(" "),
                    out.status,
                    crate::os::exec::trim_stderr(&out.stderr)
                ))
            };
        }
        Err("health check has no probe".into())
    }
}

/// The deployments directory under a state dir, where the executor persists what the plan needs.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("deployments")
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
                return Err(CameraError::Missing { selector: "/dev/video0".into() }.into());
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
