//! The power commands (`power-mode`, `clocks`): the device's own `nvpmodel -m <id>` and `jetson_clocks`, carried
//! out only when the local `[policy.power] allow_control` says so. A controller chooses a mode by name or id and
//! the agent looks it up in its own nvpmodel.conf, so every argument these programs get comes from the device
//! (the file's id, the agent's own state path), never from the command's text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::Config;
use crate::host::metrics::{parse_nvpmodel_status, Sampler};
use crate::host::probe::{read_power_modes, PowerModes};
use crate::os::exec::{find_program, run_limited};
use crate::os::fsutil::under_root;

/// How long nvpmodel or jetson_clocks may take (they write a few hundred sysfs files).
const PROGRAM_LIMIT: Duration = Duration::from_secs(60);

/// Where nvpmodel and jetson_clocks are looked for under the host root, in order (L4T installs both in /usr/sbin
/// or /usr/bin).
const POWER_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/bin"];

/// One power change at a time: two nvpmodel runs at once would leave the clocks half of one mode.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn refused_by_policy(what: &str) -> String {
    format!(
        "{what} is not allowed on this device: root on it allows power control with `allow_control = true` under \
         [policy.power] in the agent config (policy.power.allow_control)"
    )
}

/// `jetship power-mode`: sets the nvpmodel mode `wanted` (a name or an id of this device's nvpmodel.conf).
pub(super) async fn power_mode(config: &Config, wanted: &str) -> Result<Value, String> {
    if !config.policy.power.allow_control {
        return Err(refused_by_policy("changing the power mode"));
    }
    let root = config.host.root.clone();
    let modes = blocking(move || {
        let mut w = Vec::new();
        (read_power_modes(&root, &mut w), w)
    })
    .await?;
    let modes = match modes {
        (Some(m), _) if !m.modes.is_empty() => m,
        (_, w) if !w.is_empty() => return Err(w.join("; ")),
        _ => return Err("this device has no /etc/nvpmodel.conf: it has no nvpmodel power modes".into()),
    };
    let Some(mode) = modes.find(wanted).cloned() else {
        return Err(format!(
            "mode `{wanted}` is not in this device's /etc/nvpmodel.conf; its modes are {}",
            modes.list()
        ));
    };
    let program = program(config, config.policy.power.nvpmodel.as_deref(), "nvpmodel", "nvidia-l4t-nvpmodel")?;
    let _one = ONE_AT_A_TIME.lock().await;
    let before = current_mode(config, &modes).await;
    let id = mode.id.to_string();
    info!(mode = %mode.name, id = mode.id, program = %program.host.display(), "setting the power mode");
    let output = run(&program, &["-m", &id]).await?;
    // nvpmodel asks whether to reboot when the new mode needs one; its stdin is /dev/null, so it never does.
    let reboot_required = output.to_ascii_lowercase().contains("reboot");
    // The clocks jetson_clocks saved belong to the previous mode: nvpmodel has just set the new mode's.
    let _ = std::fs::remove_file(saved_clocks(config));
    let after = current_mode(config, &modes).await;
    if reboot_required {
        warn!(mode = %mode.name, "the new power mode needs a reboot to take effect");
    }
    Ok(json!({
        "requested": { "id": mode.id, "name": mode.name },
        "before": before,
        "after": after,
        "changed": before != after,
        "reboot_required": reboot_required,
        "program": program.host,
        "output": output,
    }))
}

/// `jetship clocks`: turns jetson_clocks on (saving the clocks it replaces in the state dir first) or off
/// (restoring what it saved).
pub(super) async fn clocks(config: &Config, on: bool) -> Result<Value, String> {
    if !config.policy.power.allow_control {
        return Err(refused_by_policy("changing jetson_clocks"));
    }
    let program = program(config, config.policy.power.jetson_clocks.as_deref(), "jetson_clocks", "nvidia-l4t-tools")?;
    let _one = ONE_AT_A_TIME.lock().await;
    let before = clocks_state(config).await;
    let saved = saved_clocks(config);
    let mut output = String::new();
    let mut ran = false;
    if on {
        if before != Some(true) && !saved.exists() {
            if let Some(dir) = saved.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            output += &run(&program, &[Path::new("--store"), &saved]).await?;
        }
        output += &run::<&str>(&program, &[]).await?;
        ran = true;
    } else if before != Some(false) {
        if !saved.exists() {
            return Err(format!(
                "jetson_clocks was not turned on by jetship here, so there are no saved clocks ({}) to restore: set a \
                 power mode with `jetship power-mode` (nvpmodel sets the mode's clocks) or reboot",
                saved.display()
            ));
        }
        output += &run(&program, &[Path::new("--restore"), &saved]).await?;
        let _ = std::fs::remove_file(&saved);
        ran = true;
    }
    let after = clocks_state(config).await;
    info!(on, ?before, ?after, "jetson_clocks");
    Ok(json!({
        "requested": on,
        "before": before,
        "after": after,
        "changed": before != after,
        "ran": ran,
        "reboot_required": false,
        "program": program.host,
        "saved": saved.exists().then_some(saved),
        "output": output,
    }))
}

/// A program to run: its host path (reported) and the path this process runs.
struct Program {
    host: PathBuf,
    run: PathBuf,
}

/// The configured path as given, else the first executable `name` in [`POWER_DIRS`] under the host root, as
/// [`find_program`] finds runtimes.
fn program(config: &Config, configured: Option<&Path>, name: &str, package: &str) -> Result<Program, String> {
    if let Some(p) = configured {
        return Ok(Program { host: p.to_path_buf(), run: p.to_path_buf() });
    }
    let root = &config.host.root;
    let host = find_program(root, name, POWER_DIRS).ok_or_else(|| {
        format!(
            "{name} not found in {} under {}: install it (package {package}) or set policy.power.{name}",
            POWER_DIRS.join(", "),
            root.display()
        )
    })?;
    Ok(Program { run: under_root(root, &host.to_string_lossy()), host })
}

/// Runs the program bounded in time; its stdout and stderr together, cut to their last 2000 bytes (as the exec
/// wrapper cuts stderr). nvpmodel reports
/// some failures with `NVPM ERROR` and exit status 0: that is a failure too.
async fn run<S: AsRef<std::ffi::OsStr>>(program: &Program, args: &[S]) -> Result<String, String> {
    let out = run_limited(&program.run, args, PROGRAM_LIMIT).await.map_err(|e| e.to_string())?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let text = crate::os::exec::trim_stderr(text.as_bytes());
    if text.contains("NVPM ERROR") {
        return Err(format!("{} failed: {text}", program.host.display()));
    }
    let mut text = text;
    if !text.is_empty() {
        text.push('\n');
    }
    Ok(text)
}

/// Where jetson_clocks saves the clocks it replaces: the agent's own state dir, never a path from the network.
fn saved_clocks(config: &Config) -> PathBuf {
    config.state_dir.join("power/l4t_dfs.conf")
}

/// The mode in /var/lib/nvpmodel/status, with its name from nvpmodel.conf.
async fn current_mode(config: &Config, modes: &PowerModes) -> Value {
    let status = under_root(&config.host.root, "/var/lib/nvpmodel/status");
    let id =
        blocking(move || crate::os::fsutil::read_small(&status, 4096).ok().and_then(|t| parse_nvpmodel_status(&t)))
            .await
            .ok()
            .flatten();
    match id {
        Some(id) => json!({ "id": id, "name": modes.name_of(id) }),
        None => Value::Null,
    }
}

/// Whether jetson_clocks is on, by the sampler's rule (docs/metrics.md).
async fn clocks_state(config: &Config) -> Option<bool> {
    let (root, state) = (config.host.root.clone(), config.state_dir.clone());
    blocking(move || Sampler::new(root, state).sample().jetson_clocks).await.ok().flatten()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("the power command's file work failed: {e}"))
}
