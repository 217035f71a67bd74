//! The MQTT link: one task owns the rumqttc event loop and is the only thing that talks to the broker. Other
//! tasks reach it through a [`LinkHandle`]: spooled streams (telemetry, events) go through the durable
//! [`Spool`], retained state topics (status, host, reported) are remembered and republished after every
//! reconnect, replies are sent while connected and dropped otherwise.
//!
//! Ordering: spooled records are published with QoS 1 from the spool cursor, at most a window at a time, with
//! packet ids this module assigns; the cursor advances only over the contiguous prefix the broker has
//! acknowledged, and after any reconnect (clean session) delivery restarts from the cursor. Duplicates are
//! possible (receivers dedupe by `seq`); gaps and reordering are not. The link never interprets incoming
//! messages: it forwards them to the agent. It must not touch config files or the spool's on-disk format.
//!
//! Incoming packets over [`MAX_INCOMING_PACKET`] end the connection (MQTT 3.1.1 cannot refuse one message);
//! `crate::link::subscriptions` finds the filter whose retained message does it, leaves it out with a backoff and
//! the link tells the agent ([`Delivery::Refused`]), so one such message cannot keep the agent reconnecting. A
//! connection that dies within [`STABLE_AFTER`] of its CONNACK does not reset the reconnect backoff either.
//!
//! Failover: with several brokers (`mqtt.urls`) the link stays on the broker that answers; a lost connection or
//! a failed attempt moves it to the next one in list order ([`Brokers`]), after the usual backoff. The spool
//! hand-over needs nothing more: the new broker's ConnAck rewinds to the cursor like any reconnect, so what the
//! old broker had not acknowledged goes to the new one first, in order.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, Publish, QoS, Request, Subscribe,
    SubscribeFilter, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::base::{BadBrokerUrl, BrokerUrl};
use crate::link::failover::Brokers;
use crate::link::protocol::{Stream, Topics};
use crate::link::spool::{self, Spool};
use crate::link::subscriptions::{Refusal, Subscriptions};

/// Packet ids 1..=MAX_INFLIGHT are ours; rumqttc's in-flight table has this size.
const MAX_INFLIGHT: u16 = 100;
/// Largest incoming packet; desired/cmd payloads over the protocol's 1 MiB limit still arrive (and are refused
/// with a reply) up to this size. A larger one ends the connection, and its filter is left out for a while.
pub const MAX_INCOMING_PACKET: usize = 4 * 1024 * 1024;
/// A connection that ends sooner than this after its CONNACK keeps the reconnect backoff growing.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
const MAX_OUTGOING_PACKET: usize = 16 * 1024 * 1024;
/// How long a clean shutdown waits for the broker to acknowledge the offline status.
const OFFLINE_ACK_WAIT: Duration = Duration::from_secs(3);

/// Errors building a connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Url(#[from] BadBrokerUrl),
    #[error("cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// How to reach and authenticate to a broker; shared by the agent (`[mqtt]`) and the CLI (`cli.toml`, flags).
/// TLS files and credentials apply to every broker of the list (the nodes of one cluster).
#[derive(Debug, Clone, Default)]
pub struct BrokerAccess {
    /// The first broker tried.
    pub url: String,
    /// Brokers tried after `url`, in order, when the connection is lost or refused (`mqtt.urls`).
    pub failover_urls: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::File { what, path: path.to_path_buf(), source })
}

impl BrokerAccess {
    /// Every broker URL in the order they are tried: `url`, then `failover_urls`.
    pub fn urls(&self) -> Vec<String> {
        std::iter::once(self.url.clone()).chain(self.failover_urls.iter().cloned()).collect()
    }

    /// The brokers to connect to, in order, each with [`BrokerAccess::options`]; a list that names a broker
    /// twice is refused.
    pub fn brokers(&self, client_id: &str, keep_alive: Duration) -> Result<Brokers> {
        let urls = self.urls();
        BrokerUrl::parse_list(&urls)?;
        let list = urls
            .into_iter()
            .map(|u| Ok((u.clone(), self.options_for(&u, client_id, keep_alive)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Brokers::new(list).expect("the list holds `url`"))
    }

    /// rumqttc options for the first broker: TLS and credentials loaded from their files, clean session, the
    /// given keep-alive. The caller adds a last will if it wants one.
    pub fn options(&self, client_id: &str, keep_alive: Duration) -> Result<MqttOptions> {
        self.options_for(&self.url, client_id, keep_alive)
    }

    fn options_for(&self, url_text: &str, client_id: &str, keep_alive: Duration) -> Result<MqttOptions> {
        let url = BrokerUrl::parse(url_text)?;
        let mut o = MqttOptions::new(client_id, url.host.clone(), url.port);
        o.set_keep_alive(keep_alive)
            .set_clean_session(true)
            .set_inflight(MAX_INFLIGHT)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
        if url.tls {
            crate::install_crypto_provider();
            let ca = match &self.ca_file {
                Some(p) => read_file("CA file", p)?,
                None => {
                    return Err(Error::Url(BadBrokerUrl {
                        url: url_text.to_owned(),
                        message: "mqtts needs a CA file (ca_file / --ca-file)".into(),
                    }))
                }
            };
            let client_auth = match (&self.client_cert, &self.client_key) {
                (Some(c), Some(k)) => Some((read_file("client certificate", c)?, read_file("client key", k)?)),
                _ => None,
            };
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
        }
        if let Some(user) = &self.username {
            let password = match &self.password_file {
                Some(p) => {
                    let text = read_file("password file", p)?;
                    String::from_utf8_lossy(&text).lines().next().unwrap_or_default().to_owned()
                }
                None => String::new(),
            };
            o.set_credentials(user.clone(), password);
        }
        Ok(o)
    }
}

/// A message the link received on one of its subscriptions.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: bytes::Bytes,
    /// Set when the broker delivered a retained copy (on subscribe), not a live publish.
    pub retain: bool,
}

/// What the link hands the agent.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A message on one of the subscriptions.
    Message(Message),
    /// A retained message on `filter` was over [`MAX_INCOMING_PACKET`]: the link stopped subscribing to it and
    /// subscribes again after `retry_in`.
    Refused(Refusal),
}

enum LinkRequest {
    /// Retained, QoS 1, remembered and republished after every reconnect.
    State { topic: String, payload: Vec<u8> },
    /// QoS 1, sent only while connected.
    Transient { topic: String, payload: Vec<u8> },
}

/// Settings of one link.
pub struct LinkOptions {
    /// The brokers, in failover order; the link sets the last will on each itself from `offline_status`.
    pub brokers: Brokers,
    pub topics: Topics,
    /// Filters subscribed (QoS 1) after every ConnAck.
    pub subscriptions: Vec<String>,
    /// Retained payload for `status` published by the broker as the will, and by the link on clean shutdown.
    pub offline_status: Vec<u8>,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Spooled records in flight at once.
    pub window: usize,
}

/// The cheap, cloneable way for other tasks to use the link.
#[derive(Clone)]
pub struct LinkHandle {
    tx: mpsc::Sender<LinkRequest>,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
}

impl LinkHandle {
    /// Appends a record to a spooled stream (see [`Spool::append`]) and wakes the link to deliver it.
    pub fn append(&self, stream: Stream, body: impl FnOnce(u64) -> Vec<u8>) -> spool::Result<u64> {
        let seq = lock(&self.spool).append(stream, body)?;
        self.wake.notify_one();
        Ok(seq)
    }

    /// Sets a retained state topic: published now if connected and again after every reconnect.
    pub(crate) fn set_state(&self, topic: String, payload: Vec<u8>) {
        if self.tx.try_send(LinkRequest::State { topic, payload }).is_err() {
            warn!("mqtt link is busy or stopped; state update dropped");
        }
    }

    /// Sends a QoS 1 message if connected (replies); dropped while offline.
    pub fn send(&self, topic: String, payload: Vec<u8>) {
        if self.tx.try_send(LinkRequest::Transient { topic, payload }).is_err() {
            warn!("mqtt link is busy or stopped; message dropped");
        }
    }

    /// The spool, for the flusher and statistics.
    pub fn spool(&self) -> &Arc<Mutex<Spool>> {
        &self.spool
    }
}

fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    // A panic while holding the lock leaves the spool as consistent as its last completed call.
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spooled records in flight, in send order. The spool cursor may advance only over the acknowledged prefix,
/// so an acknowledgement that overtakes an earlier one never skips a record. Pure bookkeeping.
#[derive(Debug)]
struct AckWindow<T> {
    q: std::collections::VecDeque<(u16, T, bool)>,
}

impl<T: Copy> AckWindow<T> {
    fn new() -> Self {
        AckWindow { q: Default::default() }
    }

    fn len(&self) -> usize {
        self.q.len()
    }

    /// Records that the message carrying the record that ends at `end` went out with packet id `pkid`.
    fn sent(&mut self, pkid: u16, end: T) {
        self.q.push_back((pkid, end, false));
    }

    /// Marks `pkid` acknowledged; returns the end of the longest acknowledged prefix if it grew.
    fn acked(&mut self, pkid: u16) -> Option<T> {
        if let Some(e) = self.q.iter_mut().find(|e| e.0 == pkid && !e.2) {
            e.2 = true;
        }
        let mut end = None;
        while self.q.front().is_some_and(|e| e.2) {
            end = self.q.pop_front().map(|e| e.1);
        }
        end
    }

    fn clear(&mut self) {
        self.q.clear();
    }
}

/// Packet ids 1..=max that this link hands out itself, so each acknowledgement maps to what it acknowledges.
#[derive(Debug)]
struct PacketIds {
    busy: Vec<bool>,
    last: u16,
}

impl PacketIds {
    fn new(max: u16) -> Self {
        PacketIds { busy: vec![false; max as usize + 1], last: 0 }
    }

    /// The next free id after the last one handed out, or `None` when all are in flight.
    fn alloc(&mut self) -> Option<u16> {
        let max = (self.busy.len() - 1) as u16;
        for _ in 0..max {
            self.last = self.last % max + 1;
            if !self.busy[self.last as usize] {
                self.busy[self.last as usize] = true;
                return Some(self.last);
            }
        }
        None
    }

    fn free(&mut self, pkid: u16) {
        if let Some(b) = self.busy.get_mut(pkid as usize) {
            *b = false;
        }
    }

    fn is_busy(&self, pkid: u16) -> bool {
        self.busy.get(pkid as usize).copied().unwrap_or(false)
    }

    fn any_free(&self) -> bool {
        self.busy.iter().skip(1).any(|b| !b)
    }

    fn clear(&mut self) {
        self.busy.iter_mut().for_each(|b| *b = false);
    }
}

/// The task that owns the event loop. Create with [`Link::new`], run with [`Link::run`].
pub struct Link {
    eventloop: EventLoop,
    opts: LinkOptions,
    /// The URL of the broker connected to, or being connected to.
    broker: String,
    spool: Arc<Mutex<Spool>>,
    rx: mpsc::Receiver<LinkRequest>,
    wake: Arc<Notify>,
    incoming: mpsc::Sender<Delivery>,
    subs: Subscriptions,
    connected: bool,
    pkids: PacketIds,
    spool_inflight: AckWindow<spool::Pos>,
    states: Vec<(String, Vec<u8>)>,
    /// The telemetry message in flight that carries the spool's dropped count: (packet id, count).
    reporting_dropped: Option<(u16, u64)>,
}

impl Link {
    /// Builds the link over `spool`; returns it, the handle for other tasks, and the receiver of incoming
    /// messages.
    pub fn new(mut opts: LinkOptions, spool: Spool) -> (Link, LinkHandle, mpsc::Receiver<Delivery>) {
        let will = LastWill::new(opts.topics.status(), opts.offline_status.clone(), QoS::AtLeastOnce, true);
        opts.brokers.for_each_mut(|o| {
            o.set_last_will(will.clone());
        });
        let mut eventloop = EventLoop::new(opts.brokers.current().clone(), 16);
        // Small messages, latency matters (pings, acks): no Nagle delay.
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (tx, rx) = mpsc::channel(256);
        let (in_tx, in_rx) = mpsc::channel(64);
        let subs = Subscriptions::new(opts.subscriptions.clone());
        let spool = Arc::new(Mutex::new(spool));
        let wake = Arc::new(Notify::new());
        let handle = LinkHandle { tx, spool: spool.clone(), wake: wake.clone() };
        let broker = opts.brokers.label().to_owned();
        let link = Link {
            eventloop,
            opts,
            broker,
            spool,
            rx,
            wake,
            incoming: in_tx,
            subs,
            connected: false,
            pkids: PacketIds::new(MAX_INFLIGHT),
            spool_inflight: AckWindow::new(),
            states: Vec::new(),
            reporting_dropped: None,
        };
        (link, handle, in_rx)
    }

    /// Runs until `shutdown`: connects, reconnects with capped exponential backoff and jitter (to the next broker
    /// of the list, if there are several), delivers the spool, forwards incoming messages. On shutdown publishes
    /// the offline status (if connected) and disconnects.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut reconnect_at: Option<Instant> = None;
        let mut attempt: u32 = 0;
        let mut up_since: Option<Instant> = None;
        let mut rx_open = true;
        loop {
            // A handshake in progress is not cancel-safe: dropping `poll` there drops the half-open connection,
            // and a broker that already read its CONNECT publishes the will (retained `online:false`). So while
            // connecting nothing but shutdown interrupts `poll` (requests wait in the channel); otherwise every
            // telemetry tick would abandon a handshake slower than the tick, and leave a will behind.
            let handshake = !self.connected && reconnect_at.is_none();
            let resubscribe_at = if self.connected { self.subs.retry_timer() } else { None };
            let ev = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                req = self.rx.recv(), if rx_open && !handshake => {
                    match req {
                        Some(r) => self.handle_request(r),
                        None => rx_open = false,
                    }
                    continue;
                }
                _ = self.wake.notified(), if !handshake => {
                    self.pump();
                    continue;
                }
                _ = sleep_until(reconnect_at), if reconnect_at.is_some() => {
                    reconnect_at = None;
                    continue;
                }
                _ = sleep_until(resubscribe_at), if resubscribe_at.is_some() => {
                    if let Some(filter) = self.subs.due(Instant::now()) {
                        info!(%filter, "subscribing again to a topic whose retained message was too large");
                        self.subscribe(vec![filter]);
                    }
                    continue;
                }
                ev = self.eventloop.poll(), if reconnect_at.is_none() => ev,
            };
            match ev {
                Ok(ev) => {
                    if self.handle_event(ev) {
                        up_since = Some(Instant::now());
                    }
                }
                Err(err) => {
                    // Only a connection that lasted resets the backoff: one that a broker (or a message) ends
                    // right after its CONNACK must not make the agent reconnect in a tight loop.
                    if up_since.take().is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                        attempt = 0;
                    }
                    self.connection_failed(&err);
                    let delay = backoff(self.opts.backoff_min, self.opts.backoff_max, attempt);
                    let (failed, next) = (self.broker.clone(), self.next_broker());
                    if self.connected || attempt == 0 {
                        warn!(broker = %failed, error = %err, retry_in_ms = delay.as_millis() as u64, next = %next, "mqtt connection lost");
                    } else {
                        debug!(broker = %failed, error = %err, attempt, retry_in_ms = delay.as_millis() as u64, next = %next, "mqtt reconnect failed");
                    }
                    if let ConnectionError::ConnectionRefused(code) = &err {
                        warn!(broker = %failed, ?code, "broker refused the connection: check credentials and ACLs");
                    }
                    self.disconnected();
                    attempt = attempt.saturating_add(1);
                    reconnect_at = Some(Instant::now() + delay);
                }
            }
        }
        self.shutdown().await;
    }

    /// Pins an oversized packet on a filter (or prepares to find it) and tells the agent; forgets subscriptions
    /// in flight on any other error.
    fn connection_failed(&mut self, err: &ConnectionError) {
        use rumqttc::mqttbytes::Error as Bytes;
        use rumqttc::StateError;
        match err {
            ConnectionError::MqttState(StateError::Deserialization(Bytes::PayloadSizeLimitExceeded(bytes))) => {
                match self.subs.oversized(*bytes, Instant::now()) {
                    Some(r) => {
                        warn!(filter = %r.filter, bytes = r.bytes, limit = MAX_INCOMING_PACKET, retry_in_s = r.retry_in.as_secs(), "a retained message is larger than the packet limit: not subscribing to its topic for now");
                        if self.incoming.try_send(Delivery::Refused(r)).is_err() {
                            warn!("oversized message not reported: the agent is not keeping up");
                        }
                    }
                    None => warn!(
                        bytes,
                        limit = MAX_INCOMING_PACKET,
                        "a message larger than the packet limit ended the connection; subscribing one topic at a time to find it"
                    ),
                }
            }
            _ => self.subs.disconnected(),
        }
    }

    fn subscribe(&mut self, filters: Vec<String>) {
        if filters.is_empty() {
            return;
        }
        let filters = filters.into_iter().map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce));
        self.eventloop.pending.push_back(Request::Subscribe(Subscribe::new_many(filters)));
    }

    /// Points the event loop at the next broker of the list (the same one when there is one) for the next
    /// attempt, and returns its URL. Called only after an error, when rumqttc holds no connection.
    fn next_broker(&mut self) -> String {
        if self.opts.brokers.has_failover() {
            self.eventloop.mqtt_options = self.opts.brokers.advance().clone();
            self.broker = self.opts.brokers.label().to_owned();
        }
        self.broker.clone()
    }

    fn disconnected(&mut self) {
        self.connected = false;
        self.pkids.clear();
        self.spool_inflight.clear();
        self.reporting_dropped = None;
    }

    /// Handles one event; returns true on a successful ConnAck.
    fn handle_event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Incoming(Incoming::ConnAck(ack)) => {
                info!(broker = %self.broker, session_present = ack.session_present, "mqtt connected");
                self.disconnected();
                self.connected = true;
                lock(&self.spool).rewind();
                let filters = self.subs.connected(Instant::now());
                self.subscribe(filters);
                for (topic, payload) in self.states.clone() {
                    self.publish(topic, payload, true);
                }
                self.pump();
                return true;
            }
            Event::Incoming(Incoming::PubAck(ack)) => self.acked(ack.pkid),
            Event::Incoming(Incoming::Publish(p)) => {
                let msg = Message { topic: p.topic.clone(), payload: p.payload.clone(), retain: p.retain };
                if self.incoming.try_send(Delivery::Message(msg)).is_err() {
                    warn!(topic = %p.topic, "incoming message dropped: the agent is not keeping up");
                }
            }
            Event::Incoming(Incoming::SubAck(ack)) => {
                for code in &ack.return_codes {
                    if matches!(code, rumqttc::SubscribeReasonCode::Failure) {
                        warn!("broker refused a subscription: check the ACL for this device's topics");
                    }
                }
                let next = self.subs.acked(Instant::now());
                self.subscribe(next);
            }
            Event::Outgoing(Outgoing::Disconnect) => {}
            _ => {}
        }
        false
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) -> Option<u16> {
        let Some(pkid) = self.pkids.alloc() else {
            warn!(%topic, "too many messages in flight; message dropped");
            return None;
        };
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
        p.retain = retain;
        p.pkid = pkid;
        self.eventloop.pending.push_back(Request::Publish(p));
        Some(pkid)
    }

    fn handle_request(&mut self, r: LinkRequest) {
        match r {
            LinkRequest::State { topic, payload } => {
                match self.states.iter_mut().find(|(t, _)| *t == topic) {
                    Some(s) => s.1 = payload.clone(),
                    None => self.states.push((topic.clone(), payload.clone())),
                }
                if self.connected {
                    self.publish(topic, payload, true);
                }
            }
            LinkRequest::Transient { topic, payload } => {
                if self.connected {
                    self.publish(topic, payload, false);
                } else {
                    debug!(%topic, "not connected; message dropped");
                }
            }
        }
    }

    /// Hands spooled records to the event loop while the window and packet ids allow.
    fn pump(&mut self) {
        if !self.connected {
            return;
        }
        while self.spool_inflight.len() < self.opts.window && self.pkids.any_free() {
            let (rec, dropped) = {
                let mut spool = lock(&self.spool);
                match spool.next_unsent() {
                    Ok(Some(r)) => (r, spool.dropped_unreported()),
                    Ok(None) => return,
                    Err(err) => {
                        warn!(%err, "cannot read the spool");
                        return;
                    }
                }
            };
            let telemetry = rec.stream == Stream::Telemetry;
            let topic = self.opts.topics.stream(rec.stream);
            let mut body = rec.body;
            // The drop count rides on the next telemetry message delivered, and is cleared only once the
            // broker acknowledged that message (a resend after a reconnect carries it again).
            let report = telemetry && dropped > 0 && self.reporting_dropped.is_none();
            if report {
                body = with_dropped(&body, dropped);
            }
            if let Some(pkid) = self.publish(topic, body, telemetry) {
                if report {
                    debug!(dropped, pkid, seq = rec.seq, "reporting dropped records");
                    self.reporting_dropped = Some((pkid, dropped));
                }
                self.spool_inflight.sent(pkid, rec.end);
            }
        }
    }

    fn acked(&mut self, pkid: u16) {
        self.pkids.free(pkid);
        if let Some((p, n)) = self.reporting_dropped {
            if p == pkid {
                // The broker has the telemetry message that carried the count: it is reported.
                lock(&self.spool).reported_dropped(n);
                self.reporting_dropped = None;
            }
        }
        if let Some(end) = self.spool_inflight.acked(pkid) {
            if let Err(err) = lock(&self.spool).ack_through(end) {
                warn!(%err, "cannot advance the spool cursor");
            }
            self.pump();
        }
    }

    async fn shutdown(mut self) {
        if self.connected {
            let offline = self.opts.offline_status.clone();
            let topic = self.opts.topics.status();
            if let Some(pkid) = self.publish(topic, offline, true) {
                let deadline = Instant::now() + OFFLINE_ACK_WAIT;
                while self.pkids.is_busy(pkid) {
                    match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                        Ok(Ok(ev)) => {
                            self.handle_event(ev);
                        }
                        _ => break,
                    }
                }
            }
            self.eventloop.pending.push_back(Request::Disconnect(rumqttc::Disconnect));
            let deadline = Instant::now() + Duration::from_secs(1);
            while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
            info!("mqtt disconnected");
        }
        let flush = lock(&self.spool).take_flush();
        match flush.map(|f| f.run()) {
            Ok(Ok(())) => {}
            Ok(Err(err)) | Err(err) => warn!(%err, "cannot sync the spool"),
        }
    }
}

/// Adds `"dropped": n` to a JSON object body (added to a count already there).
fn with_dropped(body: &[u8], n: u64) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(mut m) => {
            let before = m.get("dropped").and_then(|v| v.as_u64()).unwrap_or(0);
            m.insert("dropped".into(), (before + n).into());
            serde_json::to_vec(&m).unwrap_or_else(|_| body.to_vec())
        }
        Err(_) => body.to_vec(),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Delay before reconnect attempt `attempt` (0-based): `min * 2^attempt` capped at `max`, then a random
/// 50-100% of that so a fleet that lost its broker does not come back in lockstep.
pub fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let base = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    base.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// Makes the spool durable every `interval` (fsync of the active segment, cursor written atomically), on a
/// blocking thread, until `shutdown`.
pub(crate) async fn flush_spool(spool: Arc<Mutex<Spool>>, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let flush = match lock(&spool).take_flush() {
            Ok(f) => f,
            Err(err) => {
                warn!(%err, "cannot sync the spool");
                continue;
            }
        };
        match tokio::task::spawn_blocking(move || flush.run()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(%err, "cannot sync the spool"),
            Err(err) => warn!(?err, "spool sync task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_parsed_with_default_ports() {
        assert_eq!(
            BrokerUrl::parse("mqtt://10.0.0.2").unwrap(),
            BrokerUrl { tls: false, host: "10.0.0.2".into(), port: 1883 }
        );
        let u = BrokerUrl::parse("mqtts://broker.example.com").unwrap();
        assert!(u.tls && u.port == 8883);
        assert_eq!(BrokerUrl::parse("mqtt://127.0.0.1:2883/").unwrap().port, 2883);
    }

    #[test]
    fn bad_broker_urls_say_what_to_use() {
        for (url, want) in [
            ("http://x", "use mqtt:// or mqtts://"),
            ("x:1883", "mqtt://"),
            ("mqtt://u:p@host", "credentials"),
            ("mqtt://host/topic", "path"),
        ] {
            let err = BrokerUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn cursor_advances_only_over_the_acknowledged_prefix() {
        let mut w = AckWindow::new();
        for (pkid, end) in [(1, 10), (2, 20), (3, 30), (4, 40)] {
            w.sent(pkid, end);
        }
        assert_eq!(w.acked(2), None, "ack overtaking the first must not move the cursor");
        assert_eq!(w.acked(3), None);
        assert_eq!(w.acked(1), Some(30), "prefix 1..=3 acknowledged");
        assert_eq!(w.acked(99), None, "unknown packet id");
        assert_eq!(w.acked(1), None, "duplicate ack");
        assert_eq!(w.len(), 1);
        assert_eq!(w.acked(4), Some(40));
        assert_eq!(w.len(), 0);
        w.sent(5, 50);
        w.clear();
        assert_eq!(w.acked(5), None, "a reconnect forgets what was in flight");
    }

    #[test]
    fn packet_ids_wrap_skip_busy_ones_and_run_out() {
        let mut ids = PacketIds::new(3);
        assert_eq!((ids.alloc(), ids.alloc(), ids.alloc()), (Some(1), Some(2), Some(3)));
        assert!(!ids.any_free());
        assert_eq!(ids.alloc(), None);
        ids.free(2);
        assert!(ids.is_busy(1) && !ids.is_busy(2));
        assert_eq!(ids.alloc(), Some(2));
        ids.free(1);
        ids.free(3);
        assert_eq!(ids.alloc(), Some(3), "continues after the last id handed out");
        assert_eq!(ids.alloc(), Some(1));
        ids.free(0);
        ids.free(500);
        ids.clear();
        assert!(ids.any_free() && !ids.is_busy(3));
    }

    #[test]
    fn dropped_count_is_added_to_the_telemetry_body() {
        let v: serde_json::Value = serde_json::from_slice(&with_dropped(br#"{"seq":4,"ts":1}"#, 7)).unwrap();
        assert_eq!(v["dropped"], 7);
        assert_eq!(v["seq"], 4);
        let v: serde_json::Value = serde_json::from_slice(&with_dropped(br#"{"seq":4,"dropped":2}"#, 3)).unwrap();
        assert_eq!(v["dropped"], 5);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..30 {
            let d = backoff(min, max, attempt);
            let base = min.saturating_mul(1 << attempt.min(20)).min(max);
            assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?}");
        }
    }
}
