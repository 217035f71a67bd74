//! The controller side of deployments: `jetship deploy` (publish a document retained on a device's or a group's
//! `desired` topic, filling in the next generation, then optionally follow every device's `reported` until it
//! converged or failed), `jetship rm`, and the deployment commands (`logs`, `restart`, remote `resolve`) sent as
//! `cmd/<request_id>`.
//!
//! Talks to the broker only; what a device does with a document is the agent's business. The per-device verdict
//! while waiting ([`progress`]) is pure and unit-tested.

use std::collections::BTreeMap;
use std::time::Duration;

use rumqttc::{Event, Incoming, QoS};
use tokio::time::Instant;

use crate::controller::fleet::{timeout_as, Error, Result, Session};
use crate::deploy::document::{self, Document, Format};
use crate::deploy::plan::DeploymentState;
use crate::deploy::report::Reported;
use crate::link::mqtt::BrokerAccess;
use crate::link::protocol::{self, Reply, Topics, ROOT};

/// Where a document goes: one device, or every device in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Device(String),
    Group(String),
}

impl Target {
    /// `device-id` or `group:NAME`.
    pub fn parse(s: &str) -> Result<Self> {
        let t = match s.strip_prefix("group:") {
            Some(g) => Self::Group(g.to_owned()),
            None => Self::Device(s.to_owned()),
        };
        // The same naming rules as topics: a bad id would publish where no agent listens.
        let name = match &t {
            Self::Device(d) | Self::Group(d) => d,
        };
        Topics::new(name)?;
        Ok(t)
    }

    /// The retained `desired` topic.
    pub(crate) fn desired_topic(&self) -> String {
        match self {
            Self::Device(d) => format!("{ROOT}/{d}/desired"),
            Self::Group(g) => protocol::group_desired(g),
        }
    }

    /// The key of this source in a device's `reported.sources`.
    pub fn source(&self) -> String {
        match self {
            Self::Device(_) => "device".into(),
            Self::Group(g) => format!("group:{g}"),
        }
    }
}

/// The generation to publish: the file's own, else one past the document on the broker (1 when none).
pub(crate) fn next_generation(file: Option<u64>, current: Option<&Document>) -> u64 {
    file.unwrap_or_else(|| current.and_then(|d| d.generation).map_or(1, |g| g + 1))
}

/// Reads the retained message on `topic`, if any, within `limit`.
pub async fn retained(access: &BrokerAccess, topic: &str, limit: Duration) -> Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + limit;
    let mut s = Session::connect(access, deadline).await.map_err(|e| timeout_as(e, limit))?;
    let sync = format!("jetship/cli/{:016x}/sync", rand::random::<u64>());
    s.subscribe(vec![topic.to_owned(), sync.clone()], QoS::AtMostOnce);
    let mut found = None;
    loop {
        match s.next(deadline).await.map_err(|e| timeout_as(e, limit))? {
            Event::Incoming(Incoming::SubAck(_)) => s.publish(sync.clone(), b"sync".to_vec(), QoS::AtMostOnce),
            Event::Incoming(Incoming::Publish(p)) if p.topic == sync => break,
            Event::Incoming(Incoming::Publish(p)) if p.topic == topic && !p.payload.is_empty() => {
                found = Some(p.payload.to_vec())
            }
            _ => {}
        }
    }
    s.disconnect();
    Ok(found)
}

/// The document retained on `target`'s topic; an unreadable one counts as none (it is being replaced).
pub(crate) async fn current_document(
    access: &BrokerAccess,
    target: &Target,
    limit: Duration,
) -> Result<Option<Document>> {
    let topic = target.desired_topic();
    Ok(retained(access, &topic, limit).await?.and_then(|b| document::parse(&b, Some(Format::Json), &topic).ok()))
}

/// Publishes `doc` retained on `target`'s topic and waits for the broker's acknowledgement.
pub(crate) async fn publish_document(
    access: &BrokerAccess,
    target: &Target,
    doc: &Document,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut s = Session::connect(access, deadline).await.map_err(|e| timeout_as(e, limit))?;
    let json = serde_json::to_vec(doc).expect("document serializes");
    s.publish_retained(target.desired_topic(), json.clone());
    loop {
        match s.next(deadline).await.map_err(|e| timeout_as(e, limit))? {
            Event::Incoming(Incoming::PubAck(_)) => break,
            // Failed over before the PubAck: the new broker has not got it (the same document again is harmless).
            Event::Incoming(Incoming::ConnAck(_)) => s.publish_retained(target.desired_topic(), json.clone()),
            _ => {}
        }
    }
    s.disconnect();
    Ok(())
}

/// Sends `{"cmd": name, "args": args}` to `device` and waits up to `limit` for the reply.
pub async fn command(
    access: &BrokerAccess,
    device: &str,
    name: &str,
    args: serde_json::Value,
    limit: Duration,
) -> Result<Reply> {
    let topics = Topics::new(device)?;
    let deadline = Instant::now() + limit;
    let mut s = Session::connect(access, deadline).await.map_err(|e| timeout_as(e, limit))?;
    let request_id = format!("{name}-{:016x}", rand::random::<u64>());
    let reply_topic = topics.reply(&request_id);
    s.subscribe(vec![reply_topic.clone()], QoS::AtLeastOnce);
    let body = serde_json::to_vec(&serde_json::json!({ "cmd": name, "args": args })).expect("json");
    let mut sent = false;
    loop {
        match s.next(deadline).await.map_err(|e| timeout_as(e, limit))? {
            // Sent once: after a failover the reply is awaited on the next broker, but the command is not sent
            // again (a restart must not run twice).
            Event::Incoming(Incoming::SubAck(_)) if !sent => {
                s.publish(topics.cmd(&request_id), body.clone(), QoS::AtLeastOnce);
                sent = true;
            }
            Event::Incoming(Incoming::Publish(p)) if p.topic == reply_topic => {
                let reply: Reply = serde_json::from_slice(&p.payload)
                    .map_err(|e| Error::Invalid(protocol::Error::NotJson { message: e.to_string() }))?;
                s.disconnect();
                return Ok(reply);
            }
            _ => {}
        }
    }
}

/// Where one device stands with a published generation.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Still working: a one-line summary, and the pull's bytes (done, total) when pulling.
    Working { line: String, pull: Option<(u64, Option<u64>)> },
    /// Every deployment converged to the generation.
    Converged { line: String },
    /// The device refused the document or an update was rolled back: final.
    Failed { reason: String },
}

/// Where a device with `reported` stands with `generation` of `target`'s document. Pure.
pub fn progress(reported: &Reported, target: &Target, generation: u64) -> Progress {
    let source = target.source();
    if let Some(r) = reported.rejected.as_ref().filter(|r| r.source == source && r.generation == Some(generation)) {
        return Progress::Failed { reason: format!("document rejected: {}", r.reasons.join("; ")) };
    }
    let seen = reported.sources.get(&source).copied().flatten();
    if seen.is_none_or(|g| g < generation) {
        return Progress::Working { line: "waiting for the device to take the document".into(), pull: None };
    }
    for (name, d) in &reported.deployments {
        if let DeploymentState::RolledBack { reason } = &d.state {
            return Progress::Failed { reason: format!("{name}: rolled back: {reason}") };
        }
    }
    let applied = match target {
        Target::Device(_) => reported.applied_generation.is_some_and(|g| g >= generation),
        Target::Group(_) => reported.deployments.values().all(|d| d.state.is_converged()),
    };
    let summary: Vec<String> = reported
        .deployments
        .iter()
        .map(|(name, d)| {
            let extra = match &d.state {
                DeploymentState::Failed { reason } | DeploymentState::Unhealthy { reason } => format!(" ({reason})"),
                DeploymentState::Restarting { reason, .. } => format!(" ({reason})"),
                DeploymentState::WaitingForDevice { device } => format!(" ({device})"),
                _ => String::new(),
            };
            format!(
                "{name}: {}{extra}",
                if d.state.is_converged() && d.health.is_some() { "healthy" } else { d.state.name() }
            )
        })
        .collect();
    let line = if summary.is_empty() { "no deployments".to_owned() } else { summary.join(", ") };
    if applied {
        return Progress::Converged { line };
    }
    let pull = reported.deployments.values().find_map(|d| match d.state {
        DeploymentState::Pulling { done, total } => Some((done, total)),
        _ => None,
    });
    Progress::Working { line, pull }
}

/// Follows the `reported` of `devices` (all devices reporting `target`'s source when `devices` is empty: a group)
/// until every one converged or failed, or `limit` passes. `show` sees each update. Returns the last verdict
/// per device; a device that never reported is `Working`.
pub async fn wait(
    access: &BrokerAccess,
    target: &Target,
    generation: u64,
    limit: Duration,
    mut show: impl FnMut(&str, &Progress),
) -> Result<BTreeMap<String, Progress>> {
    let deadline = Instant::now() + limit;
    let mut s = Session::connect(access, deadline).await.map_err(|e| timeout_as(e, limit))?;
    let filter = match target {
        Target::Device(d) => format!("{ROOT}/{d}/reported"),
        Target::Group(_) => format!("{ROOT}/+/reported"),
    };
    s.subscribe(vec![filter], QoS::AtLeastOnce);
    let mut verdicts: BTreeMap<String, Progress> = BTreeMap::new();
    if let Target::Device(d) = target {
        verdicts.insert(d.clone(), Progress::Working { line: "waiting for the device".into(), pull: None });
    }
    loop {
        let ev = match s.next(deadline).await {
            Ok(ev) => ev,
            Err(Error::Timeout(_)) => break,
            Err(e) => return Err(e),
        };
        let Event::Incoming(Incoming::Publish(p)) = ev else { continue };
        let Some((device, protocol::DeviceTopic::Reported)) = protocol::parse_device_topic(&p.topic) else {
            continue;
        };
        let Ok(reported) = serde_json::from_slice::<Reported>(&p.payload) else { continue };
        if matches!(target, Target::Group(_)) && !reported.sources.contains_key(&target.source()) {
            continue;
        }
        let verdict = progress(&reported, target, generation);
        show(device, &verdict);
        verdicts.insert(device.to_owned(), verdict);
        let done = verdicts.values().all(|v| !matches!(v, Progress::Working { .. }));
        if done && !verdicts.is_empty() {
            break;
        }
    }
    s.disconnect();
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::report::{Rejected, ReportedDeployment};

    fn dep(state: DeploymentState) -> ReportedDeployment {
        ReportedDeployment {
            state,
            image: "busybox:1".into(),
            digest: None,
            started_at: None,
            restarts: 0,
            exit_code: None,
            health: None,
            error: None,
            source: None,
        }
    }

    fn reported(sources: &[(&str, u64)], applied: Option<u64>, deps: Vec<(&str, DeploymentState)>) -> Reported {
        Reported {
            generation: None,
            applied_generation: applied,
            sources: sources.iter().map(|(s, g)| (s.to_string(), Some(*g))).collect(),
            rejected: None,
            deployments: deps.into_iter().map(|(n, s)| (n.to_owned(), dep(s))).collect(),
            repairs: Vec::new(),
            at: chrono::Utc::now(),
        }
    }

    #[test]
    fn targets_parse_devices_and_groups() {
        assert_eq!(Target::parse("orin-1").unwrap().desired_topic(), "jetship/v1/orin-1/desired");
        let g = Target::parse("group:lab").unwrap();
        assert_eq!((g.desired_topic().as_str(), g.source().as_str()), ("jetship/v1/groups/lab/desired", "group:lab"));
        assert!(Target::parse("a/b").is_err());
    }

    #[test]
    fn next_generation_follows_the_broker_unless_the_file_sets_it() {
        let doc = |g| Document { generation: g, deployments: Default::default() };
        assert_eq!(next_generation(None, None), 1);
        assert_eq!(next_generation(None, Some(&doc(Some(7)))), 8);
        assert_eq!(next_generation(Some(3), Some(&doc(Some(7)))), 3);
    }

    #[test]
    fn progress_is_converged_failed_or_working() {
        let dev = Target::Device("d".into());
        let old = reported(&[("device", 1)], Some(1), vec![("a", DeploymentState::Running)]);
        assert!(matches!(progress(&old, &dev, 2), Progress::Working { .. }));
        let pulling =
            reported(&[("device", 2)], Some(1), vec![("a", DeploymentState::Pulling { done: 5, total: Some(9) })]);
        assert!(matches!(progress(&pulling, &dev, 2), Progress::Working { pull: Some((5, Some(9))), .. }));
        let done = reported(&[("device", 2)], Some(2), vec![("a", DeploymentState::Running)]);
        assert!(matches!(progress(&done, &dev, 2), Progress::Converged { .. }));
        let rb =
            reported(&[("device", 2)], Some(1), vec![("a", DeploymentState::RolledBack { reason: "exit 1".into() })]);
        assert!(matches!(progress(&rb, &dev, 2), Progress::Failed { reason } if reason.contains("exit 1")));
        let mut rejected = reported(&[("device", 1)], Some(1), vec![]);
        rejected.rejected = Some(Rejected {
            source: "device".into(),
            generation: Some(2),
            reasons: vec!["deployments.x.image: bad".into()],
            at: chrono::Utc::now(),
        });
        assert!(matches!(progress(&rejected, &dev, 2), Progress::Failed { reason } if reason.contains("x.image")));
        let group = Target::Group("lab".into());
        let g = reported(&[("group:lab", 4)], None, vec![("a", DeploymentState::Running)]);
        assert!(matches!(progress(&g, &group, 4), Progress::Converged { .. }));
    }
}
