//! What controllers send the agent: `desired` documents (validated, checked against the local policy, stored,
//! overlaid and handed to the executor) and `cmd/*` requests, each answered on `reply`.

use super::*;

/// Handles what controllers send: validates desired documents (syntax, fields, local policy), persists the
/// accepted ones in the [`DesiredStore`], hands the overlaid desired state to the executor, reports, and
/// answers commands.
pub(super) struct Inbox {
    pub(super) topics: Topics,
    pub(super) groups: Vec<String>,
    pub(super) store: DesiredStore,
    pub(super) policy: PolicyConfig,
    pub(super) state_dir: PathBuf,
    pub(super) handle: LinkHandle,
    pub(super) reported: Shared,
    pub(super) desired: watch::Sender<Option<Desired>>,
    pub(super) runtime: Option<Arc<dyn ContainerRuntime>>,
    /// Requests to the executor (`cmd/restart`); `None` without a backend.
    pub(super) requests: Option<tokio::sync::mpsc::Sender<executor::Request>>,
    pub(super) config: Config,
    /// One permit per command that may run at once (`commands.max_concurrent`); a command without one is refused.
    pub(super) command_slots: Arc<tokio::sync::Semaphore>,
    /// Valid documents that could not be stored for a local reason (a full disk), by source: stored and applied
    /// by [`Inbox::retry_pending`] once that works, unless a newer one replaced them.
    pub(super) pending: BTreeMap<Source, (String, Document)>,
}

/// How often a document refused for a local reason is tried again.
pub(super) const PENDING_RETRY: Duration = Duration::from_secs(5);

/// The `reported` document, written by the inbox (documents) and the executor (deployments).
pub(super) type Shared = Arc<Mutex<Reported>>;

pub(super) fn publish_reported(handle: &LinkHandle, topics: &Topics, reported: &Shared) {
    let payload = {
        let mut r = reported.lock().unwrap_or_else(|e| e.into_inner());
        r.at = chrono::Utc::now();
        serde_json::to_vec(&*r).unwrap_or_default()
    };
    handle.set_state(topics.reported(), payload);
}

impl Inbox {
    /// The inbox, with the desired state restored from the store (what the executor runs with no broker).
    pub(super) fn new(
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
            repairs: Vec::new(),
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
            command_slots: Arc::new(tokio::sync::Semaphore::new(config.commands.max_concurrent)),
            pending: BTreeMap::new(),
        };
        inbox.refresh_desired();
        (inbox, rx, reported)
    }

    /// Overlays the stored documents and hands the result to the executor. Nothing stored: `None`, so the
    /// executor leaves containers alone.
    pub(super) fn refresh_desired(&self) {
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

    pub(super) fn publish_reported(&self) {
        publish_reported(&self.handle, &self.topics, &self.reported);
    }

    pub(super) async fn run(
        mut self,
        mut incoming: tokio::sync::mpsc::Receiver<Delivery>,
        shutdown: CancellationToken,
    ) {
        let mut retry = tokio::time::interval(PENDING_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let delivery = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = retry.tick(), if !self.pending.is_empty() => {
                    self.retry_pending().await;
                    continue;
                }
                m = incoming.recv() => match m { Some(m) => m, None => return },
            };
            match delivery {
                Delivery::Message(msg) => self.handle(msg).await,
                Delivery::Refused(r) => self.refused(&r),
            }
        }
    }

    /// A retained message too large for the link: reported (in `rejected` for a desired topic, and as an
    /// event) with its size, the limit and when the link tries the topic again.
    pub(super) fn refused(&self, r: &crate::link::subscriptions::Refusal) {
        let limit = crate::link::mqtt::MAX_INCOMING_PACKET;
        let reason = format!(
            "a retained message of {} bytes on {} is over the agent's {limit}-byte packet limit (documents may have at most {} bytes); the agent does not follow {} until it tries again in {} s: publish a smaller document there, or clear it with an empty retained message",
            r.bytes,
            r.filter,
            protocol::MAX_INCOMING_BYTES,
            r.filter,
            r.retry_in.as_secs()
        );
        emit(
            &self.handle,
            "message_refused",
            serde_json::json!({ "topic": r.filter, "bytes": r.bytes, "limit": limit, "retry_in_s": r.retry_in.as_secs() }),
        );
        let source = match protocol::classify(&self.topics, &self.groups, &r.filter) {
            Incoming::Desired { group: None } => Source::Device,
            Incoming::Desired { group: Some(g) } => Source::Group(g),
            _ => return,
        };
        let rejected =
            Rejected { source: source.to_string(), generation: None, reasons: vec![reason], at: chrono::Utc::now() };
        self.reported.lock().unwrap_or_else(|e| e.into_inner()).rejected = Some(rejected);
        self.publish_reported();
    }

    /// Tries again to store the documents refused for a local reason; each one stored is applied.
    pub(super) async fn retry_pending(&mut self) {
        let mut changed = false;
        for (source, (topic, doc)) in std::mem::take(&mut self.pending) {
            let (store, src, d) = (self.store.clone(), source.clone(), doc.clone());
            match tokio::task::spawn_blocking(move || store.save(&src, &d)).await {
                Ok(Ok(())) => {
                    info!(%topic, generation = ?doc.generation, "desired stored and applied after an earlier local failure");
                    self.accepted(&topic, &source, &doc);
                    changed = true;
                }
                _ => {
                    self.pending.insert(source, (topic, doc));
                }
            }
        }
        if changed {
            self.publish_reported();
        }
    }

    /// A document was stored: report it, clear its source's rejection, hand the new desired state on.
    fn accepted(&mut self, topic: &str, source: &Source, doc: &Document) {
        info!(%topic, generation = ?doc.generation, "desired accepted");
        emit(&self.handle, "desired_accepted", serde_json::json!({ "topic": topic, "generation": doc.generation }));
        {
            let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            if r.rejected.as_ref().is_some_and(|x| x.source == source.to_string()) {
                r.rejected = None;
            }
        }
        self.pending.remove(source);
        self.refresh_desired();
    }

    pub(super) async fn handle(&mut self, msg: Message) {
        match protocol::classify(&self.topics, &self.groups, &msg.topic) {
            Incoming::Desired { group } => self.desired(&msg, group).await,
            Incoming::Cmd { request_id } => self.command(&msg, request_id),
            Incoming::Other => debug!(topic = %msg.topic, "ignoring message on unexpected topic"),
        }
    }

    pub(super) async fn desired(&mut self, msg: &Message, group: Option<String>) {
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
        let rejected = match document::parse(&msg.payload, Some(Format::Json), &msg.topic) {
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
                let stored = match tokio::task::spawn_blocking(move || store.save(&src, &d)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match stored {
                    Ok(()) => self.accepted(&msg.topic, &source, &doc),
                    Err(err) => {
                        // Valid, but the state dir refused it (a full disk): tried again until it can be stored.
                        self.pending.insert(source.clone(), (msg.topic.clone(), doc));
                        self.reject(
                            msg,
                            Rejected {
                                source: source.to_string(),
                                generation,
                                reasons: vec![format!(
                                    "cannot store the document: {err}; tried again every {}s and applied once it \
                                     can be stored",
                                    PENDING_RETRY.as_secs()
                                )],
                                at: now,
                            },
                        )
                    }
                }
            }
            Err(rejection) => self.reject(msg, rejection),
        }
        self.publish_reported();
    }

    pub(super) fn reject(&self, msg: &Message, rejection: Rejected) {
        warn!(topic = %msg.topic, bytes = msg.payload.len(), reasons = ?rejection.reasons, "desired rejected");
        emit(&self.handle, "desired_rejected", serde_json::json!({ "topic": msg.topic, "reasons": rejection.reasons }));
        self.reported.lock().unwrap_or_else(|e| e.into_inner()).rejected = Some(rejection);
    }

    pub(super) fn command(&self, msg: &Message, request_id: Result<String, protocol::Error>) {
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
        // Slow commands answer from their own task so the inbox keeps handling messages; at most
        // `commands.max_concurrent` at once, so a flood of commands cannot spawn unbounded work.
        let Ok(permit) = self.command_slots.clone().try_acquire_owned() else {
            let limit = self.config.commands.max_concurrent;
            warn!(topic = %msg.topic, limit, "command refused: too many commands running");
            let message = format!(
                "the device is busy: {limit} commands are already running (commands.max_concurrent); send this one again when one of them has answered"
            );
            self.send_reply(&id, &Reply { ok: false, error: Some(message), request_id: id.clone(), result: None });
            return;
        };
        let (handle, topics, runtime, config) =
            (self.handle.clone(), self.topics.clone(), self.runtime.clone(), self.config.clone());
        let requests = self.requests.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = commands::run(command, runtime, requests, &config).await;
            let reply = match result {
                Ok(value) => Reply::ok(&id, value),
                Err(message) => Reply { ok: false, error: Some(message), request_id: id.clone(), result: None },
            };
            handle.send(topics.reply(&id), serde_json::to_vec(&reply).unwrap_or_default());
        });
    }

    pub(super) fn send_reply(&self, id: &str, reply: &Reply) {
        self.handle.send(self.topics.reply(id), serde_json::to_vec(reply).unwrap_or_default());
    }
}
