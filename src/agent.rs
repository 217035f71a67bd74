//! `jetship agent`: the long-running service on each device. It owns start-up order (config, state dir, host
//! probe, broker link), the periodic tasks (telemetry, host re-probe, spool fsync), the handling of what
//! controllers send (`desired`, `cmd/*`), and shutdown on SIGTERM/SIGINT; the work itself lives in the other
//! modules (`probe`, `metrics`, `mqtt`, `spool`, `protocol`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::config::PolicyConfig;
use crate::deployment::{self, Format};
use crate::desired::{DesiredStore, Source};
use crate::executor::{self, Desired, Executor, Output};
use crate::metrics::Sampler;
use crate::mqtt::{BrokerAccess, Link, LinkHandle, LinkOptions, Message};
use crate::probe::{self, HostFacts};
use crate::protocol::{self, Command, Incoming, Reply, Status, Stream, Topics};
use crate::report::{Rejected, Reported};
use crate::runtime::ContainerRuntime;
use crate::spool::Spool;
use crate::{broker, fsutil, policy};

/// How long running tasks get to finish after SIGTERM before the agent exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Spooled records in flight at once.
const WINDOW: usize = 32;

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!("cannot create state dir {}: check `state_dir` and permissions", config.state_dir.display())
    })?;
    let root = config.host.root.clone();
    let state_dir = config.state_dir.clone();
    let facts = tokio::task::spawn_blocking(move || probe::probe(&root, &state_dir)).await?;
    for w in &facts.warnings {
        warn!(warning = %w, "host probe");
    }
    let device_id = config.device_id();
    let topics = Topics::new(&device_id).context("device id")?;
    info!(
        device_id = %device_id,
        kind = ?facts.kind,
        model = facts.model.as_deref().unwrap_or("-"),
        l4t = %facts.l4t.as_ref().map(|l| l.version.to_string()).unwrap_or_else(|| "-".into()),
        jetpack = facts.jetpack.as_deref().unwrap_or("-"),
        "agent started"
    );

    let access = match &config.mqtt.url {
        Some(url) => BrokerAccess {
            url: url.clone(),
            ca_file: config.mqtt.ca_file.clone(),
            client_cert: config.mqtt.client_cert.clone(),
            client_key: config.mqtt.client_key.clone(),
            username: config.mqtt.username.clone(),
            password_file: config.mqtt.password_file.clone(),
        },
        None => {
            let listen = config.mqtt.embedded_listen;
            broker::spawn(listen)?;
            BrokerAccess { url: format!("mqtt://{listen}"), ..Default::default() }
        }
    };
    let mqtt = access
        .options(&config.client_id(), Duration::from_secs(config.mqtt.keep_alive_s))
        .context("mqtt connection settings")?;

    let spool_dir = config.state_dir.join("spool");
    let (max_bytes, sync_each) = (config.spool.max_bytes, config.spool.fsync_interval_ms == 0);
    let spool = tokio::task::spawn_blocking(move || Spool::open(&spool_dir, max_bytes, sync_each))
        .await?
        .context("cannot open the telemetry spool")?;

    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let boot = boot_id(&config.host.root);
    let status = |online: bool| {
        serde_json::to_vec(&Status {
            online,
            agent_version: crate::VERSION.into(),
            started_at: started_at.clone(),
            boot_id: boot.clone(),
        })
        .unwrap_or_default()
    };
    let mut subscriptions = vec![topics.desired(), topics.cmd_filter()];
    subscriptions.extend(config.groups.iter().map(|g| protocol::group_desired(g)));
    let (link, handle, incoming) = Link::new(
        LinkOptions {
            mqtt,
            topics: topics.clone(),
            subscriptions,
            offline_status: status(false),
            backoff_min: Duration::from_millis(config.mqtt.reconnect_min_ms),
            backoff_max: Duration::from_millis(config.mqtt.reconnect_max_ms),
            window: WINDOW,
        },
        spool,
    );

    let meter = executor::PullMeter::default();
    let runtime = match executor::backend(&config, &meter).await {
        Ok(rt) => Some(rt),
        Err(err) => {
            warn!(%err, "deployments are not run on this device");
            None
        }
    };
    let vars = crate::reference::TemplateVars::from_facts(&facts);
    let (request_tx, request_rx) = tokio::sync::mpsc::channel(8);
    let requests = runtime.is_some().then_some(request_tx);
    let (inbox, desired, reported) = Inbox::new(&config, topics.clone(), handle.clone(), runtime.clone(), requests);
    handle.set_state(topics.status(), status(true));
    handle.set_state(topics.host(), serde_json::to_vec(&facts).unwrap_or_default());
    inbox.publish_reported();
    emit(&handle, "agent_started", serde_json::json!({ "agent_version": crate::VERSION }));

    // The link outlives the other tasks so their last messages still reach the spool and the broker.
    let link_stop = CancellationToken::new();
    let link_task = tokio::spawn(link.run(link_stop.clone()));
    let tracker = TaskTracker::new();
    tracker.spawn(sample_loop(config.clone(), handle.clone(), shutdown.clone()));
    tracker.spawn(host_loop(config.clone(), facts, handle.clone(), shutdown.clone()));
    tracker.spawn(inbox.run(incoming, shutdown.clone()));
    if let Some(rt) = runtime.clone() {
        let resolver = executor::RegistryResolver::new(&config.registry, vars).context("registry settings")?;
        let exec = Executor::new(rt, Arc::new(resolver), meter, executor::Options::from_config(&config));
        let (h, t) = (handle.clone(), topics.clone());
        let publish = move |out: &Output| {
            for p in &out.progress {
                emit(&h, "pull-progress", serde_json::to_value(p).unwrap_or_default());
            }
            {
                let mut r = reported.lock().unwrap_or_else(|e| e.into_inner());
                let same = r.deployments == out.deployments
                    && r.applied_generation == out.applied_generation
                    && r.sources == out.sources
                    && r.generation == out.generation;
                if same {
                    return;
                }
                r.deployments = out.deployments.clone();
                r.applied_generation = out.applied_generation;
                r.generation = out.generation;
                r.sources = out.sources.clone();
            }
            for e in &out.events {
                let fields = serde_json::to_value(e).unwrap_or_default();
                emit(&h, "deployment", fields);
            }
            publish_reported(&h, &t, &reported);
        };
        tracker.spawn(exec.run(desired, request_rx, publish, shutdown.clone()));
    }
    // With fsync on every append the flusher only persists the cursor.
    let flush_every = Duration::from_millis(if sync_each { 1000 } else { config.spool.fsync_interval_ms });
    tracker.spawn(crate::mqtt::flush_spool(handle.spool().clone(), flush_every, shutdown.clone()));
    if let Some(rt) = runtime {
        start_containers_housekeeping(rt, &tracker, &shutdown).await;
    }
    tracker.close();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    shutdown.cancelled().await;
    info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    emit(&handle, "agent_stopping", serde_json::json!({}));
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "tasks did not stop in time");
    }
    link_stop.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, link_task).await.is_err() {
        warn!("mqtt link did not stop in time");
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn boot_id(root: &Path) -> Option<String> {
    fsutil::read_small(&fsutil::under_root(root, "/proc/sys/kernel/random/boot_id"), 128)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Appends a lifecycle event `{"seq","ts","kind",...fields}` to the events stream.
fn emit(handle: &LinkHandle, kind: &str, fields: serde_json::Value) {
    let mut fields = match fields {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    fields.insert("kind".into(), kind.into());
    if let Err(err) = handle.append(Stream::Events, |seq| protocol::stream_body(seq, now_ms(), 0, &fields)) {
        warn!(%err, kind, "cannot spool event");
    }
}

async fn sample_loop(config: Config, handle: LinkHandle, shutdown: CancellationToken) {
    let mut sampler = Sampler::new(config.host.root.clone(), config.state_dir.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(config.telemetry.interval_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                // sysfs reads can block (EAGAIN zones, slow i2c hwmon): keep them off the async workers.
                let (s, sample) = match tokio::task::spawn_blocking(move || { let s = sampler.sample(); (sampler, s) }).await {
                    Ok(done) => done,
                    Err(err) => { warn!(?err, "metrics sampler stopped"); return; }
                };
                sampler = s;
                let appended = handle.append(Stream::Telemetry, |seq| protocol::stream_body(seq, now_ms(), 0, &sample));
                match appended {
                    Ok(seq) => debug!(seq, cpu = ?sample.cpu.as_ref().map(|c| c.total_pct), "telemetry spooled"),
                    Err(err) => warn!(%err, "cannot spool telemetry"),
                }
            }
        }
    }
}

/// The host facts without values that change on their own every probe (free disk space), so a republish
/// happens only when something a controller cares about changed.
fn stable(facts: &HostFacts) -> HostFacts {
    let mut f = facts.clone();
    if let Some(d) = f.state_dir_disk.as_mut() {
        d.available_bytes = 0;
    }
    f
}

async fn host_loop(config: Config, mut last: HostFacts, handle: LinkHandle, shutdown: CancellationToken) {
    let topic = Topics::new(&config.device_id()).map(|t| t.host());
    let Ok(topic) = topic else { return };
    let period = Duration::from_secs(config.telemetry.host_interval_s);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (root, state_dir) = (config.host.root.clone(), config.state_dir.clone());
        let Ok(facts) = tokio::task::spawn_blocking(move || probe::probe(&root, &state_dir)).await else {
            return;
        };
        if stable(&facts) != stable(&last) {
            info!("host facts changed; republishing");
            handle.set_state(topic.clone(), serde_json::to_vec(&facts).unwrap_or_default());
            emit(&handle, "host_changed", serde_json::json!({ "cameras": facts.cameras.len() }));
            last = facts;
        }
    }
}

/// Handles what controllers send: validates desired documents (syntax, fields, local policy), persists the
/// accepted ones in the [`DesiredStore`], hands the overlaid desired state to the executor, reports, and
/// answers commands.
struct Inbox {
    topics: Topics,
    groups: Vec<String>,
    store: DesiredStore,
    policy: PolicyConfig,
    state_dir: PathBuf,
    handle: LinkHandle,
    reported: Shared,
    desired: watch::Sender<Option<Desired>>,
    runtime: Option<Arc<dyn ContainerRuntime>>,
    /// Requests to the executor (`cmd/restart`); `None` without a backend.
    requests: Option<tokio::sync::mpsc::Sender<executor::Request>>,
    config: Config,
}

/// The `reported` document, written by the inbox (documents) and the executor (deployments).
type Shared = Arc<Mutex<Reported>>;

fn publish_reported(handle: &LinkHandle, topics: &Topics, reported: &Shared) {
    let payload = {
        let mut r = reported.lock().unwrap_or_else(|e| e.into_inner());
        r.at = chrono::Utc::now();
        serde_json::to_vec(&*r).unwrap_or_default()
    };
    handle.set_state(topics.reported(), payload);
}

impl Inbox {
    /// The inbox, with the desired state restored from the store (what the executor runs with no broker).
    fn new(
        config: &Config,
        topics: Topics,
        handle: LinkHandle,
        runtime: Option<Arc<dyn ContainerRuntime>>,
        requests: Option<tokio::sync::mpsc::Sender<executor::Request>>,
    ) -> (Inbox, watch::Receiver<Option<Desired>>, Shared) {
        let store = DesiredStore::new(&config.state_dir);
        let reported = Arc::new(Mutex::new(Reported {
            generation: None,
            applied_generation: None,
            sources: Default::default(),
            rejected: None,
            deployments: Default::default(),
            at: chrono::Utc::now(),
        }));
        let (tx, rx) = watch::channel(None);
        let inbox = Inbox {
            topics,
            groups: config.groups.clone(),
            store,
            policy: config.policy.clone(),
            state_dir: config.state_dir.clone(),
            handle,
            reported: reported.clone(),
            desired: tx,
            runtime,
            requests,
            config: config.clone(),
        };
        inbox.refresh_desired();
        (inbox, rx, reported)
    }

    /// Overlays the stored documents and hands the result to the executor. Nothing stored: `None`, so the
    /// executor leaves containers alone.
    fn refresh_desired(&self) {
        let (overlay, problems) = self.store.load_overlay(&self.groups);
        for p in problems {
            warn!(problem = %p, "stored desired state");
        }
        let sources: BTreeMap<String, Option<u64>> =
            overlay.generations.iter().map(|(s, g)| (s.to_string(), *g)).collect();
        if self.runtime.is_none() {
            // No executor: the documents are only stored, and reported as taken here. With one, the executor
            // reports them together with the states planned from them, so a controller never sees a new
            // generation next to the previous one's states.
            let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            r.generation = overlay.document.generation;
            r.sources = sources.clone();
        }
        let any = !overlay.generations.is_empty();
        let origin = overlay.origin.iter().map(|(d, s)| (d.clone(), s.to_string())).collect();
        self.desired.send_replace(any.then_some(Desired { document: overlay.document, sources, origin }));
    }

    fn publish_reported(&self) {
        publish_reported(&self.handle, &self.topics, &self.reported);
    }

    async fn run(mut self, mut incoming: tokio::sync::mpsc::Receiver<Message>, shutdown: CancellationToken) {
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = incoming.recv() => match m { Some(m) => m, None => return },
            };
            self.handle(msg).await;
        }
    }

    async fn handle(&mut self, msg: Message) {
        match protocol::classify(&self.topics, &self.groups, &msg.topic) {
            Incoming::Desired { group } => self.desired(&msg, group).await,
            Incoming::Cmd { request_id } => self.command(&msg, request_id),
            Incoming::Other => debug!(topic = %msg.topic, "ignoring message on unexpected topic"),
        }
    }

    async fn desired(&mut self, msg: &Message, group: Option<String>) {
        if msg.payload.is_empty() {
            // An empty retained message is how MQTT deletes a retained one: nothing to apply.
            info!(topic = %msg.topic, "desired cleared on the broker; keeping the last accepted document");
            return;
        }
        let source = match group {
            None => Source::Device,
            Some(g) => Source::Group(g),
        };
        let generation = serde_json::from_slice::<serde_json::Value>(&msg.payload)
            .ok()
            .and_then(|v| v.get("generation").and_then(|g| g.as_u64()));
        let now = chrono::Utc::now();
        let rejected = match deployment::parse(&msg.payload, Some(Format::Json), &msg.topic) {
            Err(err) => Err(Rejected::from_error(&source.to_string(), generation, &err, now)),
            Ok(doc) => {
                let problems = policy::check(&doc, &self.policy, &self.state_dir);
                if problems.is_empty() {
                    Ok(doc)
                } else {
                    Err(Rejected::from_problems(&source.to_string(), generation, &problems, now))
                }
            }
        };
        match rejected {
            Ok(doc) => {
                let (store, src, d) = (self.store.clone(), source.clone(), doc.clone());
                match tokio::task::spawn_blocking(move || store.save(&src, &d)).await {
                    Ok(Ok(())) => {
                        info!(topic = %msg.topic, generation = ?doc.generation, "desired accepted");
                        emit(
                            &self.handle,
                            "desired_accepted",
                            serde_json::json!({ "topic": msg.topic, "generation": doc.generation }),
                        );
                        {
                            let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
                            if r.rejected.as_ref().is_some_and(|x| x.source == source.to_string()) {
                                r.rejected = None;
                            }
                        }
                        self.refresh_desired();
                    }
                    Ok(Err(err)) => self.reject(
                        msg,
                        Rejected {
                            source: source.to_string(),
                            generation,
                            reasons: vec![format!("cannot store the document: {err}")],
                            at: now,
                        },
                    ),
                    Err(err) => self.reject(
                        msg,
                        Rejected {
                            source: source.to_string(),
                            generation,
                            reasons: vec![format!("cannot store the document: {err}")],
                            at: now,
                        },
                    ),
                }
            }
            Err(rejection) => self.reject(msg, rejection),
        }
        self.publish_reported();
    }

    fn reject(&self, msg: &Message, rejection: Rejected) {
        warn!(topic = %msg.topic, bytes = msg.payload.len(), reasons = ?rejection.reasons, "desired rejected");
        emit(&self.handle, "desired_rejected", serde_json::json!({ "topic": msg.topic, "reasons": rejection.reasons }));
        self.reported.lock().unwrap_or_else(|e| e.into_inner()).rejected = Some(rejection);
    }

    fn command(&self, msg: &Message, request_id: Result<String, protocol::Error>) {
        if msg.retain {
            // A retained command would run again on every reconnect: commands are one-shot.
            warn!(topic = %msg.topic, "ignoring retained command; publish commands without retain");
            return;
        }
        let (id, command) = match request_id {
            Err(err) => {
                let id = match &err {
                    protocol::Error::InvalidId { id, .. } => id.clone(),
                    _ => String::new(),
                };
                warn!(topic = %msg.topic, %err, "command refused");
                let reply = Reply::error(&id, &err);
                self.send_reply(protocol::INVALID_REQUEST_ID_REPLY, &reply);
                return;
            }
            Ok(id) => match protocol::parse_command(&msg.payload) {
                Ok(c) => (id, c),
                Err(err) => {
                    warn!(topic = %msg.topic, %err, "command refused");
                    self.send_reply(&id, &Reply::error(&id, &err));
                    return;
                }
            },
        };
        if command == Command::Ping {
            let reply = Reply::ok(&id, serde_json::json!({ "agent_version": crate::VERSION, "ts": now_ms() }));
            self.send_reply(&id, &reply);
            return;
        }
        // Slow commands answer from their own task so the inbox keeps handling messages.
        let (handle, topics, runtime, config) =
            (self.handle.clone(), self.topics.clone(), self.runtime.clone(), self.config.clone());
        let requests = self.requests.clone();
        tokio::spawn(async move {
            let result = commands::run(command, runtime, requests, &config).await;
            let reply = match result {
                Ok(value) => Reply::ok(&id, value),
                Err(message) => Reply { ok: false, error: Some(message), request_id: id.clone(), result: None },
            };
            handle.send(topics.reply(&id), serde_json::to_vec(&reply).unwrap_or_default());
        });
    }

    fn send_reply(&self, id: &str, reply: &Reply) {
        self.handle.send(self.topics.reply(id), serde_json::to_vec(reply).unwrap_or_default());
    }
}

/// The deployment commands (`logs`, `restart`, `resolve`): each answers a JSON result or an error message.
mod commands {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use crate::config::Config;
    use crate::executor::Request;
    use crate::protocol::Command;
    use crate::runtime::{labels, ContainerRuntime, RunState};

    pub async fn run(
        command: Command,
        runtime: Option<Arc<dyn ContainerRuntime>>,
        requests: Option<mpsc::Sender<Request>>,
        config: &Config,
    ) -> Result<serde_json::Value, String> {
        let backend =
            || runtime.clone().ok_or_else(|| "no container backend on this device: see the agent log".to_owned());
        match command {
            Command::Ping => Ok(serde_json::json!({})),
            Command::Logs { deployment, tail, follow_s } => {
                let rt = backend()?;
                let id = container_of(rt.as_ref(), &deployment).await?;
                let mut lines = rt.logs(&id, tail).await.map_err(|e| e.to_string())?;
                if let Some(secs) = follow_s {
                    // Follow: wait, then add the lines written meanwhile (those past the ones already taken).
                    let before = rt.logs(&id, None).await.map_err(|e| e.to_string())?.len();
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    let after = rt.logs(&id, None).await.map_err(|e| e.to_string())?;
                    lines.extend(after.into_iter().skip(before));
                }
                Ok(serde_json::json!({ "container": id, "lines": lines }))
            }
            Command::Restart { deployment } => {
                // Through the executor, so its health gate and restart bookkeeping see the restart.
                let requests =
                    requests.ok_or_else(|| "no container backend on this device: see the agent log".to_owned())?;
                let (reply, answer) = tokio::sync::oneshot::channel();
                requests
                    .send(Request::Restart { deployment, reply })
                    .await
                    .map_err(|_| "the executor has stopped".to_owned())?;
                answer.await.map_err(|_| "the executor has stopped".to_owned())?
            }
            Command::Resolve { image } => {
                let (root, state_dir) = (config.host.root.clone(), config.state_dir.clone());
                let facts = tokio::task::spawn_blocking(move || crate::probe::probe(&root, &state_dir))
                    .await
                    .map_err(|e| e.to_string())?;
                let vars = crate::reference::TemplateVars::from_facts(&facts);
                let opts = crate::registry::ClientOptions::from_config(&config.registry).map_err(|e| e.to_string())?;
                let client = crate::registry::Client::new(opts).map_err(|e| e.to_string())?;
                let res = crate::pull::resolve(&client, &image, &vars).await.map_err(|e| e.to_string())?;
                Ok(serde_json::json!({
                    "name": res.name,
                    "reference": res.reference.to_string(),
                    "l4t": facts.l4t.as_ref().map(|l| l.version.to_string()),
                    "jetpack": facts.jetpack,
                    "decision": res.decision,
                    "warnings": facts.warnings,
                }))
            }
        }
    }

    /// The deployment's container: the running one, else any.
    async fn container_of(rt: &dyn ContainerRuntime, deployment: &str) -> Result<String, String> {
        let all = rt.list_owned().await.map_err(|e| e.to_string())?;
        let mine: Vec<_> =
            all.iter().filter(|c| c.labels.get(labels::DEPLOYMENT).map(String::as_str) == Some(deployment)).collect();
        mine.iter()
            .find(|c| c.state == RunState::Running)
            .or(mine.first())
            .map(|c| c.id.clone())
            .ok_or_else(|| format!("no container of deployment `{deployment}` on this device (see `jetship devices`)"))
    }
}

// ---- containers: adoption is logged at start, logs rotate on a tick ---------------------------------------

/// How often container logs are checked against `runtime.log_max_bytes`.
const LOG_ROTATE_PERIOD: Duration = Duration::from_secs(30);

/// Logs the containers the backend already owns (the executor adopts them: never started twice) and spawns the
/// log-rotation tick.
async fn start_containers_housekeeping(
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

/// Cancels the returned token on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        t.cancel();
    });
    Ok(token)
}
