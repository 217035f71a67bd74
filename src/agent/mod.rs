//! `jetship agent`: the long-running service on each device. It owns start-up order (config, state dir, host
//! probe, broker link), the periodic tasks (telemetry, host re-probe, spool fsync), the handling of what
//! controllers send (`desired`, `cmd/*`), and shutdown on SIGTERM/SIGINT; the work itself lives in the other
//! modules (`host`, `link`, `deploy`, `runtime`). Here: start-up and shutdown; `periodic` (telemetry and host
//! loops), `inbox` (incoming desired documents and commands), `commands` (the container commands),
//! `housekeeping` (adoption and log rotation) and `permissions` (the state dir's modes).

use std::collections::{BTreeMap, HashMap};
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
use crate::deploy::desired::{DesiredStore, Source};
use crate::deploy::document::{self, Document, Format};
use crate::deploy::executor::{self, Desired, Executor, Output};
use crate::deploy::report::{Rejected, Reported};
use crate::host::metrics::Sampler;
use crate::host::probe::{self, HostFacts};
use crate::link::mqtt::{BrokerAccess, Delivery, Link, LinkHandle, LinkOptions, Message};
use crate::link::protocol::{self, Command, Incoming, Reply, Status, Stream, Topics};
use crate::link::spool::Spool;
use crate::runtime::ContainerRuntime;
use crate::{deploy::policy, link::broker, os::fsutil};

mod commands;
mod housekeeping;
mod inbox;
mod periodic;
mod permissions;
mod power;

use housekeeping::*;
use inbox::*;
use periodic::*;

/// How long running tasks get to finish after SIGTERM before the agent exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    for change in permissions::secure_state_dir(&config.state_dir).with_context(|| {
        format!("cannot create or secure state dir {}: check `state_dir` and permissions", config.state_dir.display())
    })? {
        warn!(%change, "state dir mode narrowed");
    }
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

    let urls = config.mqtt.broker_urls();
    let access = match urls.split_first() {
        Some((url, failover)) => BrokerAccess {
            url: url.clone(),
            failover_urls: failover.to_vec(),
            ca_file: config.mqtt.ca_file.clone(),
            client_cert: config.mqtt.client_cert.clone(),
            client_key: config.mqtt.client_key.clone(),
            username: config.mqtt.username.clone(),
            password_file: config.mqtt.password_file.clone(),
        },
        None => {
            // The embedded broker takes only the agent's own user: with host networking a container reaches
            // 127.0.0.1 too, and any local user could, so nobody without the password file may publish.
            let listen = config.mqtt.embedded_listen;
            let password = broker::embedded_password(&config.state_dir)?;
            let users = HashMap::from([(broker::EMBEDDED_USER.to_owned(), password)]);
            broker::spawn(listen, broker::Auth::Passwords(users))?;
            BrokerAccess {
                url: format!("mqtt://{listen}"),
                username: Some(broker::EMBEDDED_USER.to_owned()),
                password_file: Some(broker::embedded_password_path(&config.state_dir)),
                ..Default::default()
            }
        }
    };
    let brokers = access
        .brokers(&config.client_id(), Duration::from_secs(config.mqtt.keep_alive_s))
        .context("mqtt connection settings")?;

    let boot = boot_id(&config.host.root);
    let spool_dir = config.state_dir.join("spool");
    let (max_bytes, sync_each) = (config.spool.max_bytes, config.spool.fsync_interval_ms == 0);
    let spool_boot = boot.clone();
    let spool = tokio::task::spawn_blocking(move || {
        Spool::open_on_boot(&spool_dir, max_bytes, sync_each, spool_boot.as_deref())
    })
    .await?
    .context("cannot open the telemetry spool")?;
    // Verify the stored images and snapshots before anything uses them; what fails is repaired and reported.
    let check_dir = config.state_dir.clone();
    tokio::task::spawn_blocking(move || check_state(&check_dir)).await?;

    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = |online: bool| {
        serde_json::to_vec(&Status {
            online,
            agent_version: crate::VERSION.into(),
            started_at: started_at.clone(),
            boot_id: boot.clone(),
            groups: config.groups.clone(),
        })
        .unwrap_or_default()
    };
    let mut subscriptions = vec![topics.desired(), topics.cmd_filter()];
    subscriptions.extend(config.groups.iter().map(|g| protocol::group_desired(g)));
    let (link, handle, incoming) = Link::new(
        LinkOptions {
            brokers,
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
    let runtime = match crate::runtime::open(&config, Some(meter.sink())).await {
        Ok(rt) => Some(rt),
        Err(err) => {
            warn!(%err, "deployments are not run on this device");
            None
        }
    };
    let vars = crate::image::reference::TemplateVars::from_facts(&facts);
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
    tracker.spawn(repair_loop(handle.clone(), topics.clone(), inbox.reported.clone(), shutdown.clone()));
    tracker.spawn(inbox.run(incoming, shutdown.clone()));
    tracker.spawn(memory_loop(shutdown.clone()));
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
    tracker.spawn(crate::link::mqtt::flush_spool(handle.spool().clone(), flush_every, shutdown.clone()));
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

fn boot_id(root: &Path) -> Option<String> {
    fsutil::read_small(&fsutil::under_root(root, "/proc/sys/kernel/random/boot_id"), 128)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Cancels the returned token on SIGTERM or SIGINT.
pub(crate) fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
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
