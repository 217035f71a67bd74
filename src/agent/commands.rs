//! The deployment commands (`logs`, `restart`, `resolve`) and the power commands (`power-mode`, `clocks`, in
//! `power`): each answers a JSON result or an error message. Commands come from the network: `resolve` contacts
//! only registries the local policy allows, and a `logs` answer is cut to its last [`MAX_LOG_REPLY_BYTES`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::deploy::executor::Request;
use crate::link::protocol::Command;
use crate::runtime::{labels, ContainerRuntime, LogLine, RunState};

/// Bytes of log text a `logs` reply carries at most (the last lines are kept): a reply must fit any broker's
/// packet limit.
pub(super) const MAX_LOG_REPLY_BYTES: usize = 256 << 10;

pub(super) async fn run(
    command: Command,
    runtime: Option<Arc<dyn ContainerRuntime>>,
    requests: Option<mpsc::Sender<Request>>,
    config: &Config,
) -> Result<serde_json::Value, String> {
    let backend = || runtime.clone().ok_or_else(|| "no container backend on this device: see the agent log".to_owned());
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
            let (lines, truncated) = last_lines(lines, MAX_LOG_REPLY_BYTES);
            Ok(serde_json::json!({ "container": id, "lines": lines, "truncated": truncated }))
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
            // Before any network access: a controller must not make the device contact a registry the local
            // policy does not allow.
            if let Some(refusal) = crate::deploy::policy::registry_refusal(&image, &config.policy) {
                return Err(format!("resolve {image}: {refusal}"));
            }
            let (root, state_dir) = (config.host.root.clone(), config.state_dir.clone());
            let facts = tokio::task::spawn_blocking(move || crate::host::probe::probe(&root, &state_dir))
                .await
                .map_err(|e| e.to_string())?;
            let vars = crate::image::reference::TemplateVars::from_facts(&facts);
            let opts =
                crate::image::registry::ClientOptions::from_config(&config.registry).map_err(|e| e.to_string())?;
            let client = crate::image::registry::Client::new(opts).map_err(|e| e.to_string())?;
            let res = crate::image::pull::resolve(&client, &image, &vars).await.map_err(|e| e.to_string())?;
            Ok(serde_json::json!({
                "name": res.name,
                "reference": res.reference.to_string(),
                "l4t": facts.l4t.as_ref().map(|l| l.version.to_string()),
                "jetpack": facts.jetpack,
                "decision": res.decision,
                    "warnings": facts.warnings,
            }))
        }
        Command::PowerMode { mode } => super::power::power_mode(config, &mode).await,
        Command::Clocks { on } => super::power::clocks(config, on).await,
    }
}

/// The last lines of `lines` whose text fits in `limit` bytes, and whether some were left out.
fn last_lines(mut lines: Vec<LogLine>, limit: usize) -> (Vec<LogLine>, bool) {
    let mut size = 0usize;
    let keep = lines
        .iter()
        .rev()
        .take_while(|l| {
            size += l.text.len() + l.ts.len() + l.stream.len();
            size <= limit
        })
        .count();
    let cut = lines.len() - keep;
    (lines.split_off(cut), cut > 0)
}

/// The deployment's container: the running one, else any.
pub(super) async fn container_of(rt: &dyn ContainerRuntime, deployment: &str) -> Result<String, String> {
    let all = rt.list_owned().await.map_err(|e| e.to_string())?;
    let mine: Vec<_> =
        all.iter().filter(|c| c.labels.get(labels::DEPLOYMENT).map(String::as_str) == Some(deployment)).collect();
    mine.iter()
        .find(|c| c.state == RunState::Running)
        .or(mine.first())
        .map(|c| c.id.clone())
        .ok_or_else(|| format!("no container of deployment `{deployment}` on this device (see `jetship devices`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_replies_keep_the_last_lines_that_fit() {
        let line = |t: &str| LogLine { ts: "t".into(), stream: "s".into(), text: t.into() };
        let (kept, cut) = last_lines(vec![line("aaaa"), line("bbbb"), line("cccc")], 12);
        assert_eq!(kept.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["bbbb", "cccc"]);
        assert!(cut);
        let (kept, cut) = last_lines(vec![line("a")], 12);
        assert_eq!(kept.len(), 1);
        assert!(!cut);
        let (kept, cut) = last_lines(vec![line(&"x".repeat(100))], 12);
        assert!(kept.is_empty() && cut, "one line over the limit is left out");
    }
}
