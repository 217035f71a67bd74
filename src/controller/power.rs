//! The controller side of power control: `jetship power-mode TARGET MODE` and `jetship clocks TARGET on|off`
//! send `cmd/<request_id>` to a device, or to every device whose retained `status` lists the group, and collect
//! each reply. What a device does (and whether its local policy lets it) is the agent's business; the lines
//! printed for each reply are made by [`describe`], which is pure.

use std::time::Duration;

use serde_json::Value;

use crate::controller::deploy::{command, Target};
use crate::controller::fleet::{snapshot, Error, Result};
use crate::link::mqtt::BrokerAccess;
use crate::link::protocol::Reply;

/// What to ask of the devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerRequest {
    /// Set the nvpmodel mode (a name or an id of the device's nvpmodel.conf).
    Mode(String),
    /// Turn jetson_clocks on or off.
    Clocks(bool),
}

impl PowerRequest {
    /// The command's name and arguments on the wire (docs/protocol.md).
    pub fn command(&self) -> (&'static str, Value) {
        match self {
            Self::Mode(m) => ("power-mode", serde_json::json!({ "mode": m })),
            Self::Clocks(on) => ("clocks", serde_json::json!({ "on": on })),
        }
    }
}

/// The devices a target names: the device itself, or every device whose retained `status` says it is in the group.
pub(crate) async fn devices_of(access: &BrokerAccess, target: &Target, limit: Duration) -> Result<Vec<String>> {
    match target {
        Target::Device(d) => Ok(vec![d.clone()]),
        Target::Group(g) => {
            let fleet = snapshot(access, "+", limit).await?;
            let members: Vec<String> = fleet
                .values()
                .filter(|v| v.status.as_ref().is_some_and(|s| s.groups.iter().any(|x| x == g)))
                .map(|v| v.id.clone())
                .collect();
            if members.is_empty() {
                return Err(Error::Invalid(crate::link::protocol::Error::WrongType {
                    field: format!("group:{g}"),
                    expected: "a group some device is in (a device lists its groups in its retained status: \
                               `groups` in its agent.toml)",
                }));
            }
            Ok(members)
        }
    }
}

/// Sends `request` to every device of `target` at once and waits up to `limit` for each reply.
pub async fn send(
    access: &BrokerAccess,
    target: &Target,
    request: &PowerRequest,
    limit: Duration,
) -> Result<Vec<(String, Result<Reply>)>> {
    let devices = devices_of(access, target, limit.min(Duration::from_secs(10))).await?;
    let (name, args) = request.command();
    let replies =
        futures_util::future::join_all(devices.iter().map(|d| command(access, d, name, args.clone(), limit))).await;
    Ok(devices.into_iter().zip(replies).collect())
}

fn mode_text(v: &Value) -> String {
    match (v.get("id").and_then(Value::as_u64), v.get("name").and_then(Value::as_str)) {
        (Some(id), Some(name)) => format!("{id} {name}"),
        (Some(id), None) => id.to_string(),
        _ => "unknown".into(),
    }
}

fn on_off(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    }
}

/// One line for a device's answer: `orin-1: power mode 2 30W -> 1 15W`, with `(reboot required)` when the
/// device says the mode takes effect after a reboot; `orin-1: jetson_clocks off -> on`; or the refusal.
pub fn describe(device: &str, request: &PowerRequest, reply: &Reply) -> String {
    if !reply.ok {
        return format!("{device}: refused: {}", reply.error.as_deref().unwrap_or("no reason given"));
    }
    let r = reply.result.clone().unwrap_or_default();
    let reboot = if r["reboot_required"].as_bool() == Some(true) { " (reboot required)" } else { "" };
    match request {
        PowerRequest::Mode(_) => {
            format!("{device}: power mode {} -> {}{reboot}", mode_text(&r["before"]), mode_text(&r["after"]))
        }
        PowerRequest::Clocks(_) => {
            format!("{device}: jetson_clocks {} -> {}{reboot}", on_off(&r["before"]), on_off(&r["after"]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(result: Value) -> Reply {
        Reply { ok: true, error: None, request_id: "r".into(), result: Some(result) }
    }

    #[test]
    fn replies_read_as_one_line_per_device() {
        let mode = PowerRequest::Mode("0".into());
        let r = reply(serde_json::json!({
            "before": {"id": 2, "name": "30W"}, "after": {"id": 0, "name": "MAXN"}, "reboot_required": true
        }));
        assert_eq!(describe("orin-1", &mode, &r), "orin-1: power mode 2 30W -> 0 MAXN (reboot required)");
        let r =
            reply(serde_json::json!({ "before": null, "after": {"id": 1, "name": null}, "reboot_required": false }));
        assert_eq!(describe("orin-1", &mode, &r), "orin-1: power mode unknown -> 1");
        let clocks = PowerRequest::Clocks(true);
        let r = reply(serde_json::json!({ "before": false, "after": true, "reboot_required": false }));
        assert_eq!(describe("x", &clocks, &r), "x: jetson_clocks off -> on");
        let no = Reply { ok: false, error: Some("not allowed".into()), request_id: "r".into(), result: None };
        assert_eq!(describe("x", &clocks, &no), "x: refused: not allowed");
    }

    #[test]
    fn requests_go_on_the_wire_as_the_protocol_says() {
        let (name, args) = PowerRequest::Mode("MAXN".into()).command();
        assert_eq!((name, args), ("power-mode", serde_json::json!({"mode": "MAXN"})));
        let (name, args) = PowerRequest::Clocks(false).command();
        let parsed = crate::link::protocol::parse_command(
            serde_json::to_string(&serde_json::json!({"cmd": name, "args": args})).unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(parsed, crate::link::protocol::Command::Clocks { on: false });
    }
}
