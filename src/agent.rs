//! `jetship agent`: the long-running service on each device. It owns start-up order (config, state dir, host
//! probe, broker link), the periodic tasks (telemetry, host re-probe, spool fsync), the handling of what
//! controllers send (`desired`, `cmd/*`), and shutdown on SIGTERM/SIGINT; the work itself lives in the other
//! modules (`probe`, `metrics`, `mqtt`, `spool`, `protocol`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::metrics::Sampler;
use crate::mqtt::{BrokerAccess, Link, LinkHandle, LinkOptions, Message};
use crate::probe::{self, HostFacts};
use crate::protocol::{self, Command, DesiredReport, Incoming, Reply, Reported, Status, Stream, Topics};
use crate::spool::Spool;
use crate::{broker, fsutil};

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

    let inbox = Inbox::new(&config, topics.clone(), handle.clone());
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
    // With fsync on every append the flusher only persists the cursor.
    let flush_every = Duration::from_millis(if sync_each { 1000 } else { config.spool.fsync_interval_ms });
    tracker.spawn(crate::mqtt::flush_spool(handle.spool().clone(), flush_every, shutdown.clone()));
    start_containers_housekeeping(&config, &tracker, &shutdown).await;
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

/// Handles what controllers send: validates, persists accepted desired documents, reports, replies.
struct Inbox {
    topics: Topics,
    groups: Vec<String>,
    desired_dir: PathBuf,
    handle: LinkHandle,
    reported: Reported,
}

impl Inbox {
    fn new(config: &Config, topics: Topics, handle: LinkHandle) -> Inbox {
        let desired_dir = config.state_dir.join("desired");
        let mut reported = Reported::default();
        if let Ok(bytes) = std::fs::read(desired_dir.join("device.json")) {
            if let Ok(d) = protocol::parse_desired(&bytes) {
                reported.generation = Some(d.generation);
            }
        }
        Inbox { topics, groups: config.groups.clone(), desired_dir, handle, reported }
    }

    fn publish_reported(&self) {
        self.handle.set_state(self.topics.reported(), serde_json::to_vec(&self.reported).unwrap_or_default());
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
        let file = match &group {
            None => "device.json".to_owned(),
            Some(g) => format!("group-{g}.json"),
        };
        let report = match protocol::parse_desired(&msg.payload) {
            Ok(d) => {
                let path = self.desired_dir.join(&file);
                let payload = msg.payload.clone();
                let stored = tokio::task::spawn_blocking(move || {
                    if std::fs::read(&path).ok().as_deref() == Some(&payload[..]) {
                        return Ok(());
                    }
                    fsutil::write_atomic(&path, &payload)
                })
                .await;
                match stored {
                    Ok(Ok(())) => {
                        info!(topic = %msg.topic, generation = d.generation, "desired accepted");
                        if group.is_none() {
                            self.reported.generation = Some(d.generation);
                        }
                        emit(
                            &self.handle,
                            "desired_accepted",
                            serde_json::json!({ "topic": msg.topic, "generation": d.generation }),
                        );
                        DesiredReport { accepted: true, generation: Some(d.generation), error: None, ts: now_ms() }
                    }
                    Ok(Err(err)) => self.rejected(msg, None, format!("cannot store the document: {err}")),
                    Err(err) => self.rejected(msg, None, format!("cannot store the document: {err}")),
                }
            }
            Err(err) => {
                let generation = serde_json::from_slice::<serde_json::Value>(&msg.payload)
                    .ok()
                    .and_then(|v| v.get("generation").and_then(|g| g.as_u64()));
                self.rejected(msg, generation, err.to_string())
            }
        };
        self.reported.desired.insert(msg.topic.clone(), report);
        self.publish_reported();
    }

    fn rejected(&self, msg: &Message, generation: Option<u64>, error: String) -> DesiredReport {
        warn!(topic = %msg.topic, bytes = msg.payload.len(), %error, "desired rejected");
        emit(&self.handle, "desired_rejected", serde_json::json!({ "topic": msg.topic, "error": error }));
        DesiredReport { accepted: false, generation, error: Some(error), ts: now_ms() }
    }

    fn command(&self, msg: &Message, request_id: Result<String, protocol::Error>) {
        if msg.retain {
            // A retained command would run again on every reconnect: commands are one-shot.
            warn!(topic = %msg.topic, "ignoring retained command; publish commands without retain");
            return;
        }
        let (reply_id, reply) = match request_id {
            Err(err) => {
                let id = match &err {
                    protocol::Error::InvalidId { id, .. } => id.clone(),
                    _ => String::new(),
                };
                warn!(topic = %msg.topic, %err, "command refused");
                (protocol::INVALID_REQUEST_ID_REPLY.to_owned(), Reply::error(&id, &err))
            }
            Ok(id) => {
                let reply = match protocol::parse_command(&msg.payload) {
                    Ok(Command::Ping) => {
                        Reply::ok(&id, serde_json::json!({ "agent_version": crate::VERSION, "ts": now_ms() }))
                    }
                    Err(err) => {
                        warn!(topic = %msg.topic, %err, "command refused");
                        Reply::error(&id, &err)
                    }
                };
                (id, reply)
            }
        };
        self.handle.send(self.topics.reply(&reply_id), serde_json::to_vec(&reply).unwrap_or_default());
    }
}

// ---- containers (native runtime branch): adopt on start, rotate logs ---------------------------------------

/// How often container logs are checked against `runtime.log_max_bytes`.
const LOG_ROTATE_PERIOD: Duration = Duration::from_secs(30);

/// Opens the container backend, logs the containers it already owns (adopted: never started twice), and
/// spawns the log-rotation tick. A missing backend is a warning, not a failed agent: telemetry still runs.
async fn start_containers_housekeeping(config: &Config, tracker: &TaskTracker, shutdown: &CancellationToken) {
    let backend: std::sync::Arc<dyn crate::runtime::ContainerRuntime> = match crate::runtime::open(config).await {
        Ok(b) => b.into(),
        Err(err) => {
            warn!(%err, "no container backend; containers cannot run");
            return;
        }
    };
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
