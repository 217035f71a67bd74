//! The fleet protocol over MQTT: topic names, payload types and the validation of what controllers send
//! (`desired`, `cmd/<request_id>`). The contract is documented in docs/protocol.md.
//!
//! Pure: no IO, no clock reads except where a caller passes a timestamp. It must not know about connections,
//! the spool or the agent's state; those live in `mqtt`, `spool` and `agent`.

use serde::{Deserialize, Serialize};

use crate::base::valid_id;

/// Topic prefix of protocol version 1.
pub(crate) const ROOT: &str = "jetship/v1";

/// Largest `desired` or `cmd` payload the agent accepts. Larger messages are refused with an error report.
pub(crate) const MAX_INCOMING_BYTES: usize = 1024 * 1024;

/// Topic level under `cmd/` and `reply/` used to answer a command whose request id is not valid: the bad id
/// cannot become a topic level, so the reply goes here and carries the id in its body.
pub(crate) const INVALID_REQUEST_ID_REPLY: &str = "_invalid";

/// Why an incoming message was refused. The text is sent back to the controller in the reply or report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("payload is {size} bytes, over the {limit}-byte limit: split the document or remove unused fields")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not UTF-8 JSON: {message}")]
    NotJson { message: String },
    #[error("field `{field}` must be {expected}")]
    WrongType { field: String, expected: &'static str },
    #[error("unknown command `{name}`: known commands are {known}")]
    UnknownCommand { name: String, known: &'static str },
    #[error("invalid {what} `{id}`: it must match [A-Za-z0-9_-]{{1,64}} (no `+`, `#` or `/`)")]
    InvalidId { what: &'static str, id: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One of the two ordered, spooled streams a device publishes. Each has its own `seq` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Telemetry,
    Events,
}

impl Stream {
    /// The topic level under the device root.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Telemetry => "telemetry",
            Stream::Events => "events",
        }
    }

    /// Index into per-stream arrays (and the byte stored in spool records).
    pub fn index(self) -> usize {
        match self {
            Stream::Telemetry => 0,
            Stream::Events => 1,
        }
    }

    /// The stream stored as `index`, if any.
    pub(crate) fn from_index(i: u8) -> Option<Stream> {
        match i {
            0 => Some(Stream::Telemetry),
            1 => Some(Stream::Events),
            _ => None,
        }
    }
}

/// The topics of one device: `jetship/v1/<device_id>/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topics for `device_id`, which must be a valid id (the config check guarantees it for the agent).
    pub fn new(device_id: &str) -> Result<Topics> {
        if !valid_id(device_id) {
            return Err(Error::InvalidId { what: "device id", id: device_id.to_owned() });
        }
        Ok(Topics { base: format!("{ROOT}/{device_id}") })
    }

    /// `jetship/v1/<id>`.
    pub fn base(&self) -> &str {
        &self.base
    }
    /// Retained presence.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    /// Retained host facts.
    pub fn host(&self) -> String {
        format!("{}/host", self.base)
    }
    /// Retained report of what the agent applied.
    pub fn reported(&self) -> String {
        format!("{}/reported", self.base)
    }
    /// Retained desired state written by controllers.
    pub fn desired(&self) -> String {
        format!("{}/desired", self.base)
    }
    /// The topic of a spooled stream.
    pub fn stream(&self, stream: Stream) -> String {
        format!("{}/{}", self.base, stream.name())
    }
    /// The filter the agent subscribes to for commands. `#` rather than `+` so that malformed ids (with a `/`)
    /// still reach the agent and get an error reply instead of silence.
    pub(crate) fn cmd_filter(&self) -> String {
        format!("{}/cmd/#", self.base)
    }
    /// Where a command is sent.
    pub fn cmd(&self, request_id: &str) -> String {
        format!("{}/cmd/{request_id}", self.base)
    }
    /// Where the answer to `cmd/<request_id>` goes.
    pub fn reply(&self, request_id: &str) -> String {
        format!("{}/reply/{request_id}", self.base)
    }
}

/// The desired topic shared by the devices of `group`.
pub(crate) fn group_desired(group: &str) -> String {
    format!("{ROOT}/groups/{group}/desired")
}

/// What an incoming message on the agent's subscriptions is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// `desired` for this device (`group == None`) or for one of its groups.
    Desired { group: Option<String> },
    /// `cmd/<request_id>`; `Err` carries the refused id (already explained by `Error::InvalidId`).
    Cmd { request_id: std::result::Result<String, Error> },
    /// Anything else (ignored).
    Other,
}

/// Classifies a topic the agent received.
pub(crate) fn classify(topics: &Topics, groups: &[String], topic: &str) -> Incoming {
    if topic == topics.desired() {
        return Incoming::Desired { group: None };
    }
    if let Some(rest) = topic.strip_prefix(&format!("{}/cmd/", topics.base)) {
        let request_id = if valid_id(rest) {
            Ok(rest.to_owned())
        } else {
            Err(Error::InvalidId { what: "request id", id: rest.to_owned() })
        };
        return Incoming::Cmd { request_id };
    }
    if let Some(group) = topic.strip_prefix(&format!("{ROOT}/groups/")).and_then(|r| r.strip_suffix("/desired")) {
        if groups.iter().any(|g| g == group) {
            return Incoming::Desired { group: Some(group.to_owned()) };
        }
    }
    Incoming::Other
}

/// What a device topic seen by a controller is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceTopic {
    Status,
    Host,
    Telemetry,
    Events,
    Reported,
    Desired,
}

/// Splits `jetship/v1/<device_id>/<kind>` into the device id and the kind. `None` for other topics and for
/// device ids that are not valid (a controller never trusts a topic level it did not check).
pub(crate) fn parse_device_topic(topic: &str) -> Option<(&str, DeviceTopic)> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let (id, kind) = rest.split_once('/')?;
    if !valid_id(id) || id == "groups" {
        return None;
    }
    let kind = match kind {
        "status" => DeviceTopic::Status,
        "host" => DeviceTopic::Host,
        "telemetry" => DeviceTopic::Telemetry,
        "events" => DeviceTopic::Events,
        "reported" => DeviceTopic::Reported,
        "desired" => DeviceTopic::Desired,
        _ => return None,
    };
    Some((id, kind))
}

/// The retained presence payload on `status`. The will carries the same with `online: false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub online: bool,
    pub agent_version: String,
    /// RFC 3339 start time of the agent process.
    pub started_at: String,
    /// The kernel's boot id, so a controller can tell an agent restart from a reboot.
    pub boot_id: Option<String>,
    /// The fleet groups this device is in (its config's `groups`), so a controller can address `group:NAME`
    /// with commands, which go to each device.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// An imperative command the agent knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Answer at once; used to measure the round trip.
    Ping,
    /// `{"cmd":"logs","args":{"deployment":"a","tail":100,"follow_s":10}}`: the deployment's output, the last
    /// `tail` lines (all when absent); with `follow_s` the agent also collects what the container writes for that
    /// many seconds (at most [`MAX_FOLLOW_S`]) and answers once, with everything, when the time is up.
    Logs { deployment: String, tail: Option<usize>, follow_s: Option<u64> },
    /// `{"cmd":"restart","args":{"deployment":"a"}}`: stops and starts the deployment's container.
    Restart { deployment: String },
    /// `{"cmd":"resolve","args":{"image":"repo:{auto}"}}`: explains which tag the device would run and why.
    Resolve { image: String },
    /// `{"cmd":"power-mode","args":{"mode":"30W"}}` (a name or an id, as a string or a number): sets the nvpmodel
    /// power mode. The agent looks the mode up in its own nvpmodel.conf; the text never reaches a command line.
    PowerMode { mode: String },
    /// `{"cmd":"clocks","args":{"on":true}}`: turns jetson_clocks on or off.
    Clocks { on: bool },
}

/// The longest `follow_s` of a `logs` command: a reply must not wait on a device forever.
pub const MAX_FOLLOW_S: u64 = 60;
/// The largest `tail` of a `logs` command.
pub(crate) const MAX_TAIL: u64 = 10_000;
/// The longest image reference a `resolve` command may name.
pub(crate) const MAX_IMAGE_LEN: usize = 512;

const KNOWN_COMMANDS: &str = "`ping`, `logs`, `restart`, `resolve`, `power-mode`, `clocks`";

/// Longest power mode name or id a command may carry (nvpmodel.conf names are short words such as MAXN_SUPER).
pub(crate) const MAX_MODE_LEN: usize = 64;

/// `args.mode`: a name or an id, as a string or a whole number; printable, without spaces, at most
/// [`MAX_MODE_LEN`] bytes.
fn mode_arg(args: Option<&serde_json::Value>) -> Result<String> {
    let wrong = || Error::WrongType {
        field: "args.mode".into(),
        expected:
            "a power mode name or id from the device's nvpmodel.conf (a word of at most 64 characters, or a number)",
    };
    let mode = match args.and_then(|a| a.get("mode")) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.as_u64().ok_or_else(wrong)?.to_string(),
        _ => return Err(wrong()),
    };
    if mode.is_empty() || mode.len() > MAX_MODE_LEN || !mode.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(wrong());
    }
    Ok(mode)
}

fn string_arg(args: Option<&serde_json::Value>, name: &str) -> Result<String> {
    match args.and_then(|a| a.get(name)) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(Error::WrongType { field: format!("args.{name}"), expected: "present and a non-empty string" }),
    }
}

/// A deployment name argument: a valid id (deployment names are a subset), so it is short and topic-safe.
fn deployment_arg(args: Option<&serde_json::Value>) -> Result<String> {
    let name = string_arg(args, "deployment")?;
    if !valid_id(&name) {
        return Err(Error::WrongType {
            field: "args.deployment".into(),
            expected: "a deployment name ([a-z0-9_-], at most 64 characters)",
        });
    }
    Ok(name)
}

fn number_arg(args: Option<&serde_json::Value>, name: &str) -> Result<Option<u64>> {
    match args.and_then(|a| a.get(name)) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| Error::WrongType { field: format!("args.{name}"), expected: "a whole number" }),
    }
}

/// Checks a `cmd/<request_id>` payload: `{"cmd": "<name>", "args": {...}?}`.
pub(crate) fn parse_command(payload: &[u8]) -> Result<Command> {
    let value = parse_json_object(payload)?;
    let name = match value.get("cmd") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        _ => return Err(Error::WrongType { field: "cmd".into(), expected: "present and a string" }),
    };
    match value.get("args") {
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Object(_)) => {}
        Some(_) => return Err(Error::WrongType { field: "args".into(), expected: "an object" }),
    }
    let args = value.get("args");
    match name {
        "ping" => Ok(Command::Ping),
        "logs" => {
            let follow_s = number_arg(args, "follow_s")?;
            if follow_s.is_some_and(|f| f > MAX_FOLLOW_S) {
                return Err(Error::WrongType { field: "args.follow_s".into(), expected: "at most 60 (seconds)" });
            }
            let tail = number_arg(args, "tail")?;
            if tail.is_some_and(|t| t > MAX_TAIL) {
                return Err(Error::WrongType { field: "args.tail".into(), expected: "at most 10000 (lines)" });
            }
            Ok(Command::Logs { deployment: deployment_arg(args)?, tail: tail.map(|t| t as usize), follow_s })
        }
        "restart" => Ok(Command::Restart { deployment: deployment_arg(args)? }),
        "resolve" => {
            let image = string_arg(args, "image")?;
            if image.len() > MAX_IMAGE_LEN {
                return Err(Error::WrongType {
                    field: "args.image".into(),
                    expected: "an image reference of at most 512 bytes",
                });
            }
            Ok(Command::Resolve { image })
        }
        "power-mode" => Ok(Command::PowerMode { mode: mode_arg(args)? }),
        "clocks" => match args.and_then(|a| a.get("on")) {
            Some(serde_json::Value::Bool(on)) => Ok(Command::Clocks { on: *on }),
            _ => Err(Error::WrongType { field: "args.on".into(), expected: "true or false" }),
        },
        other => Err(Error::UnknownCommand { name: other.chars().take(64).collect(), known: KNOWN_COMMANDS }),
    }
}

fn parse_json_object(payload: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>> {
    if payload.len() > MAX_INCOMING_BYTES {
        return Err(Error::TooLarge { size: payload.len(), limit: MAX_INCOMING_BYTES });
    }
    let text = std::str::from_utf8(payload).map_err(|e| Error::NotJson { message: e.to_string() })?;
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::WrongType { field: "(top level)".into(), expected: "a JSON object" }),
        Err(e) => Err(Error::NotJson { message: e.to_string() }),
    }
}

/// The answer on `reply/<request_id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub error: Option<String>,
    /// The request id as received (also for refused ids, whose reply goes to `reply/_invalid`).
    pub request_id: String,
    /// Command-specific result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl Reply {
    /// A successful reply.
    pub fn ok(request_id: &str, result: serde_json::Value) -> Reply {
        Reply { ok: true, error: None, request_id: request_id.to_owned(), result: Some(result) }
    }

    /// A refusal naming what was wrong.
    pub fn error(request_id: &str, error: &Error) -> Reply {
        Reply { ok: false, error: Some(error.to_string()), request_id: request_id.to_owned(), result: None }
    }
}

/// Builds a stream message: `{"seq":N,"ts":MS,"dropped":N?, ...fields}`. `fields` must serialize to an object;
/// its own keys come after the envelope's and never replace them.
pub(crate) fn stream_body<T: Serialize>(seq: u64, ts_ms: u64, dropped: u64, fields: &T) -> Vec<u8> {
    let mut m = serde_json::Map::new();
    m.insert("seq".into(), seq.into());
    m.insert("ts".into(), ts_ms.into());
    if dropped > 0 {
        m.insert("dropped".into(), dropped.into());
    }
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(fields) {
        for (k, v) in fields {
            m.entry(k).or_insert(v);
        }
    }
    serde_json::to_vec(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Topics {
        Topics::new("orin-1").unwrap()
    }

    #[test]
    fn topics_are_built_under_the_device_root() {
        let t = t();
        assert_eq!(t.status(), "jetship/v1/orin-1/status");
        assert_eq!(t.host(), "jetship/v1/orin-1/host");
        assert_eq!(t.stream(Stream::Telemetry), "jetship/v1/orin-1/telemetry");
        assert_eq!(t.stream(Stream::Events), "jetship/v1/orin-1/events");
        assert_eq!(t.desired(), "jetship/v1/orin-1/desired");
        assert_eq!(t.reported(), "jetship/v1/orin-1/reported");
        assert_eq!(t.cmd_filter(), "jetship/v1/orin-1/cmd/#");
        assert_eq!(t.reply("r1"), "jetship/v1/orin-1/reply/r1");
        assert_eq!(group_desired("lab"), "jetship/v1/groups/lab/desired");
    }

    #[test]
    fn device_ids_with_wildcards_or_separators_are_refused() {
        for bad in ["", "a/b", "a+b", "#", "+", "a b", "é", &"x".repeat(65)] {
            assert!(matches!(Topics::new(bad), Err(Error::InvalidId { .. })), "{bad:?}");
        }
        assert!(Topics::new(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn classify_recognises_desired_groups_and_commands() {
        let t = t();
        let groups = vec!["lab".to_owned()];
        assert_eq!(classify(&t, &groups, "jetship/v1/orin-1/desired"), Incoming::Desired { group: None });
        assert_eq!(
            classify(&t, &groups, "jetship/v1/groups/lab/desired"),
            Incoming::Desired { group: Some("lab".into()) }
        );
        assert_eq!(classify(&t, &groups, "jetship/v1/groups/other/desired"), Incoming::Other);
        assert_eq!(classify(&t, &groups, "jetship/v1/orin-2/desired"), Incoming::Other);
        assert_eq!(
            classify(&t, &groups, "jetship/v1/orin-1/cmd/abc_1-2"),
            Incoming::Cmd { request_id: Ok("abc_1-2".into()) }
        );
    }

    #[test]
    fn classify_refuses_bad_request_ids() {
        let t = t();
        for bad in ["a/b", "", "a.b", "+", "#", "x+", &"r".repeat(65)] {
            let topic = format!("jetship/v1/orin-1/cmd/{bad}");
            match classify(&t, &[], &topic) {
                Incoming::Cmd { request_id: Err(Error::InvalidId { id, .. }) } => assert_eq!(id, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn parse_device_topic_splits_and_checks_ids() {
        assert_eq!(parse_device_topic("jetship/v1/d1/status"), Some(("d1", DeviceTopic::Status)));
        assert_eq!(parse_device_topic("jetship/v1/d1/telemetry"), Some(("d1", DeviceTopic::Telemetry)));
        assert_eq!(parse_device_topic("jetship/v1/d1/reported"), Some(("d1", DeviceTopic::Reported)));
        assert_eq!(parse_device_topic("jetship/v1/d1/cmd/x"), None);
        assert_eq!(parse_device_topic("jetship/v1/groups/desired"), None);
        assert_eq!(parse_device_topic("jetship/v2/d1/status"), None);
        assert_eq!(parse_device_topic("jetship/v1/d.1/status"), None);
    }

    #[test]
    fn oversized_payloads_are_refused_before_parsing() {
        let big = vec![b' '; MAX_INCOMING_BYTES + 1];
        assert!(matches!(parse_command(&big), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn commands_are_parsed_and_unknown_ones_named() {
        assert_eq!(parse_command(br#"{"cmd":"ping"}"#).unwrap(), Command::Ping);
        assert_eq!(parse_command(br#"{"cmd":"ping","args":{}}"#).unwrap(), Command::Ping);
        let err = parse_command(br#"{"cmd":"reboot"}"#).unwrap_err().to_string();
        assert!(err.contains("unknown command `reboot`") && err.contains("ping"), "{err}");
        assert!(parse_command(br#"{"cmd":5}"#).unwrap_err().to_string().contains("`cmd`"));
        assert!(parse_command(br#"{"cmd":"ping","args":[1]}"#).unwrap_err().to_string().contains("`args`"));
        assert!(matches!(parse_command(b"ping"), Err(Error::NotJson { .. })));
    }

    #[test]
    fn deployment_commands_take_their_arguments() {
        let logs = parse_command(br#"{"cmd":"logs","args":{"deployment":"a","tail":5,"follow_s":3}}"#).unwrap();
        assert_eq!(logs, Command::Logs { deployment: "a".into(), tail: Some(5), follow_s: Some(3) });
        let restart = parse_command(br#"{"cmd":"restart","args":{"deployment":"a"}}"#).unwrap();
        assert_eq!(restart, Command::Restart { deployment: "a".into() });
        let resolve = parse_command(br#"{"cmd":"resolve","args":{"image":"r/x:{auto}"}}"#).unwrap();
        assert_eq!(resolve, Command::Resolve { image: "r/x:{auto}".into() });
        let no_name = parse_command(br#"{"cmd":"logs","args":{"tail":5}}"#).unwrap_err().to_string();
        assert!(no_name.contains("`args.deployment`"), "{no_name}");
        let bad_tail = parse_command(br#"{"cmd":"logs","args":{"deployment":"a","tail":"x"}}"#).unwrap_err();
        assert!(bad_tail.to_string().contains("`args.tail`"), "{bad_tail}");
        let long = parse_command(br#"{"cmd":"logs","args":{"deployment":"a","follow_s":3600}}"#).unwrap_err();
        assert!(long.to_string().contains("at most 60"), "{long}");
    }

    #[test]
    fn command_arguments_are_bounded() {
        let tail = parse_command(br#"{"cmd":"logs","args":{"deployment":"a","tail":10001}}"#).unwrap_err();
        assert!(tail.to_string().contains("`args.tail`") && tail.to_string().contains("10000"), "{tail}");
        assert!(parse_command(br#"{"cmd":"logs","args":{"deployment":"a","tail":10000}}"#).is_ok());
        let name = format!(r#"{{"cmd":"restart","args":{{"deployment":"{}"}}}}"#, "a".repeat(65));
        let err = parse_command(name.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("`args.deployment`"), "{err}");
        let err = parse_command(br#"{"cmd":"logs","args":{"deployment":"../x"}}"#).unwrap_err().to_string();
        assert!(err.contains("`args.deployment`"), "{err}");
        let image = format!(r#"{{"cmd":"resolve","args":{{"image":"r/{}"}}}}"#, "x".repeat(600));
        let err = parse_command(image.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("`args.image`") && err.contains("512"), "{err}");
    }

    #[test]
    fn power_commands_take_a_mode_word_or_a_flag() {
        let by_name = parse_command(br#"{"cmd":"power-mode","args":{"mode":"MAXN_SUPER"}}"#).unwrap();
        assert_eq!(by_name, Command::PowerMode { mode: "MAXN_SUPER".into() });
        let by_id = parse_command(br#"{"cmd":"power-mode","args":{"mode":2}}"#).unwrap();
        assert_eq!(by_id, Command::PowerMode { mode: "2".into() });
        for bad in [
            r#"{"cmd":"power-mode"}"#,
            r#"{"cmd":"power-mode","args":{"mode":""}}"#,
            r#"{"cmd":"power-mode","args":{"mode":"0 --force"}}"#,
            r#"{"cmd":"power-mode","args":{"mode":"0;reboot\n"}}"#,
            r#"{"cmd":"power-mode","args":{"mode":-1}}"#,
            r#"{"cmd":"power-mode","args":{"mode":1.5}}"#,
            r#"{"cmd":"power-mode","args":{"mode":["0"]}}"#,
        ] {
            let err = parse_command(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("`args.mode`"), "{bad}: {err}");
        }
        let long = format!(r#"{{"cmd":"power-mode","args":{{"mode":"{}"}}}}"#, "M".repeat(MAX_MODE_LEN + 1));
        assert!(parse_command(long.as_bytes()).is_err());
        assert_eq!(parse_command(br#"{"cmd":"clocks","args":{"on":false}}"#).unwrap(), Command::Clocks { on: false });
        for bad in
            [r#"{"cmd":"clocks"}"#, r#"{"cmd":"clocks","args":{"on":"yes"}}"#, r#"{"cmd":"clocks","args":{"on":1}}"#]
        {
            assert!(parse_command(bad.as_bytes()).unwrap_err().to_string().contains("`args.on`"), "{bad}");
        }
    }

    #[test]
    fn status_of_an_older_agent_has_no_groups() {
        let s: Status =
            serde_json::from_str(r#"{"online":true,"agent_version":"0.1.0","started_at":"x","boot_id":null}"#).unwrap();
        assert!(s.groups.is_empty());
    }

    #[test]
    fn stream_body_envelope_wins_over_field_names() {
        #[derive(Serialize)]
        struct F {
            seq: u64,
            cpu: f64,
        }
        let body = stream_body(7, 1000, 0, &F { seq: 99, cpu: 1.5 });
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["ts"], 1000);
        assert_eq!(v["cpu"], 1.5);
        assert!(v.get("dropped").is_none());
        let v: serde_json::Value = serde_json::from_slice(&stream_body(8, 1, 3, &F { seq: 0, cpu: 0.0 })).unwrap();
        assert_eq!(v["dropped"], 3);
    }
}
