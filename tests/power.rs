//! Power control from the fleet, end to end through a real Mosquitto: `jetship power-mode` and `jetship clocks`
//! sent by the CLI, carried out by a real agent with stand-ins for nvpmodel and jetson_clocks (they cannot exist
//! here) that record their arguments and rewrite the fixture's status files as the real programs would; refused
//! without `[policy.power] allow_control`; `group:NAME` reaching the devices whose status lists the group only;
//! a hostile controller able to choose a mode of the device's nvpmodel.conf and nothing else.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::mosquitto::{publish, Mosquitto, Observer};

/// Stand-in for L4T's nvpmodel: records its arguments (and what its stdin gave), writes the status file that
/// nvpmodel writes, and, for mode 0 on this board, says a reboot is needed and asks whether to reboot now as
/// nvpmodel does.
const NVPMODEL: &str = r#"#!/bin/sh
root=$(cd "$(dirname "$0")/../.." && pwd)
echo "$*" >> "$root/nvpmodel.args"
if read -r answer; then echo "answered: $answer" >> "$root/nvpmodel.stdin"; else echo "stdin: EOF" >> "$root/nvpmodel.stdin"; fi
if [ "$1" != "-m" ] || [ -z "$2" ]; then echo "NVPM ERROR: usage: nvpmodel -m <id>"; exit 1; fi
printf 'pmode:%04d fmode:quiet\n' "$2" > "$root/var/lib/nvpmodel/status"
if [ "$2" = 0 ]; then
  echo "NVPM WARN: Reboot required for changing to this power mode: 0"
  echo "NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:"
fi
"#;

/// Stand-in for jetson_clocks: records its arguments; `--store FILE` saves the minimum clocks, no argument pins
/// every minimum (online cores' cpufreq policies, the GPU's devfreq, the EMC rate) to its maximum, `--restore FILE`
/// writes the saved minimums back.
const JETSON_CLOCKS: &str = r#"#!/bin/sh
root=$(cd "$(dirname "$0")/../.." && pwd)
echo "$*" >> "$root/jetson_clocks.args"
cpu="$root/sys/devices/system/cpu/cpufreq"
gpu="$root/sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu"
emc="$root/sys/kernel/debug/bpmp/debug/clk/emc"
pairs() {
  for p in "$cpu"/policy*; do [ -f "$p/scaling_min_freq" ] && echo "$p/scaling_min_freq $p/scaling_max_freq"; done
  echo "$gpu/min_freq $gpu/max_freq"
  echo "$emc/rate $emc/max_rate"
}
case "$1" in
  --store) pairs | while read -r lo hi; do echo "$lo $(cat "$lo")"; done > "$2" ;;
  --restore) while read -r f v; do echo "$v" > "$f"; done < "$2" ;;
  "") pairs | while read -r lo hi; do cat "$hi" > "$lo"; done ;;
  *) echo "unknown option $1" >&2; exit 1 ;;
esac
"#;

/// A device: a copy of the agx-orin-jp62 tree with the stand-ins installed, and its agent.
struct Device {
    id: String,
    root: tempfile::TempDir,
    state: tempfile::TempDir,
    agent: Child,
    log: PathBuf,
}

impl Device {
    fn start(broker: &Mosquitto, id: &str, groups: &[&str], allow_control: bool) -> Device {
        let root = support::copy_fixture_host("agx-orin-jp62");
        install(root.path(), "usr/sbin/nvpmodel", NVPMODEL);
        install(root.path(), "usr/bin/jetson_clocks", JETSON_CLOCKS);
        let state = tempfile::tempdir().unwrap();
        let config = state.path().join("agent.toml");
        let groups: Vec<String> = groups.iter().map(|g| format!("{g:?}")).collect();
        std::fs::write(
            &config,
            format!(
                "device_id = \"{id}\"\nstate_dir = \"{}\"\ngroups = [{}]\n[host]\nroot = \"{}\"\n[telemetry]\n\
                 interval_s = 1\n[mqtt]\nurl = \"{}\"\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n\
                 [policy.power]\nallow_control = {allow_control}\n",
                state.path().join("state").display(),
                groups.join(", "),
                root.path().display(),
                broker.url()
            ),
        )
        .unwrap();
        let log = state.path().join("agent.log");
        let agent = Command::new(support::jetship_bin())
            .args(["--config", config.to_str().unwrap(), "agent"])
            .env_remove("JETSHIP_STATE_DIR")
            .env("RUST_LOG", "jetship=debug,info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let device = Device { id: id.into(), root, state, agent, log };
        device.wait_answering(broker);
        device
    }

    /// Waits until the agent answers a ping (so its command subscription is in place).
    fn wait_answering(&self, broker: &Mosquitto) {
        let started = Instant::now();
        loop {
            let out = support::jetship(&["ping", &self.id, "--broker", &broker.url(), "--timeout", "2"]);
            if out.status.success() {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "agent {} never answered:\n{}", self.id, self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// What the stand-in `program` was run with so far, one line per run.
    fn runs(&self, program: &str) -> Vec<String> {
        std::fs::read_to_string(self.root.path().join(format!("{program}.args")))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.path().join(rel)).unwrap().trim().to_owned()
    }

    fn saved_clocks(&self) -> PathBuf {
        self.state.path().join("state/power/l4t_dfs.conf")
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

fn install(root: &Path, rel: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn jetship(broker: &Mosquitto, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    let url = broker.url();
    all.extend(["--broker", &url, "--timeout", "20"]);
    support::jetship(&all)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The reply of one device from `--json` output.
fn json_reply(out: &Output) -> serde_json::Value {
    let line = stdout(out).lines().next().unwrap_or_default().to_owned();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    v["reply"].clone()
}

#[test]
fn power_mode_round_trip_runs_nvpmodel_with_the_id_of_the_devices_conf() {
    let broker = Mosquitto::start();
    let dev = Device::start(&broker, "orin-a", &["lab"], true);

    // By name: nvpmodel is run with the id nvpmodel.conf gives 15W, its stdin is /dev/null.
    let out = jetship(&broker, &["power-mode", "orin-a", "15W"]);
    assert!(out.status.success(), "{}\n{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr), dev.log());
    assert_eq!(stdout(&out), "orin-a: power mode 2 30W -> 1 15W\n");
    assert_eq!(dev.runs("nvpmodel"), ["-m 1"]);
    assert_eq!(std::fs::read_to_string(dev.root.path().join("nvpmodel.stdin")).unwrap(), "stdin: EOF\n");
    assert_eq!(dev.file("var/lib/nvpmodel/status"), "pmode:0001 fmode:quiet");

    // By id, to a mode that needs a reboot: reported, and the agent never answers nvpmodel's question.
    let out = jetship(&broker, &["power-mode", "orin-a", "0", "--json"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let reply = json_reply(&out);
    assert_eq!(reply["ok"], true, "{reply}");
    let r = &reply["result"];
    assert_eq!(r["requested"], serde_json::json!({"id": 0, "name": "MAXN"}));
    assert_eq!(r["before"], serde_json::json!({"id": 1, "name": "15W"}));
    assert_eq!(r["after"], serde_json::json!({"id": 0, "name": "MAXN"}));
    assert_eq!((r["changed"].as_bool(), r["reboot_required"].as_bool()), (Some(true), Some(true)));
    assert_eq!(r["program"], "/usr/sbin/nvpmodel");
    assert!(r["output"].as_str().unwrap().contains("Reboot required"), "{r}");
    assert_eq!(dev.runs("nvpmodel"), ["-m 1", "-m 0"]);

    // The agent's own telemetry sees the new mode.
    let obs = Observer::start(&broker, &["jetship/v1/orin-a/telemetry"], false, &[]);
    obs.wait_for("telemetry with power mode 0", Duration::from_secs(15), |lines| {
        lines.iter().any(|(_, p)| p.contains(r#""power_mode":{"id":0,"name":"MAXN"}"#))
    });

    // A mode the device's nvpmodel.conf does not have is refused with the list; nothing is run.
    let out = jetship(&broker, &["power-mode", "orin-a", "MAXN_SUPER"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "orin-a: refused: mode `MAXN_SUPER` is not in this device's /etc/nvpmodel.conf; its modes are 0 MAXN, 1 15W, \
         2 30W (default), 3 50W\n"
    );
    assert_eq!(dev.runs("nvpmodel").len(), 2);
}

#[test]
fn a_hostile_controller_can_pick_a_mode_and_nothing_else() {
    let broker = Mosquitto::start();
    let dev = Device::start(&broker, "orin-h", &[], true);
    // Argument strings, shell text and ids the conf lacks: refused before or at the mode lookup.
    for mode in ["0 --force", "MAXN 0", "$(touch /tmp/jetship-pwned)", "7", "2;reboot", "../../etc/passwd"] {
        let out = jetship(&broker, &["power-mode", "orin-h", mode]);
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", stdout(&out));
        let text = stdout(&out);
        assert!(text.starts_with("orin-h: refused: "), "{mode}: {text}");
        assert!(text.contains("nvpmodel.conf") || text.contains("`args.mode`"), "{mode}: {text}");
    }
    // Straight onto the topic, past the CLI: a list, a huge string, a negative id, extra arguments.
    let obs = Observer::start(&broker, &["jetship/v1/orin-h/reply/#"], false, &[]);
    let long = "M".repeat(100_000);
    let payloads = [
        r#"{"cmd":"power-mode","args":{"mode":["0","--force"]}}"#.to_owned(),
        format!(r#"{{"cmd":"power-mode","args":{{"mode":"{long}"}}}}"#),
        r#"{"cmd":"power-mode","args":{"mode":-1}}"#.to_owned(),
        r#"{"cmd":"power-mode","args":{"mode":"1","argv":["-m","0","--force"]}}"#.to_owned(),
        r#"{"cmd":"clocks","args":{"on":"--restore /etc/shadow"}}"#.to_owned(),
        r#"{"cmd":"power-mode","args":{"mode":"-m"}}"#.to_owned(),
    ];
    for (i, p) in payloads.iter().enumerate() {
        publish(&broker, &format!("jetship/v1/orin-h/cmd/hostile-{i}"), p.as_bytes(), false);
    }
    obs.wait_for("six replies", Duration::from_secs(15), |l| l.len() >= 6);
    let replies: Vec<serde_json::Value> =
        (0..6).map(|i| obs.json(&format!("jetship/v1/orin-h/reply/hostile-{i}")).pop().unwrap()).collect();
    for (i, r) in replies.iter().take(3).enumerate() {
        assert_eq!(r["ok"], false, "{i}: {r}");
        assert!(r["error"].as_str().unwrap().contains("`args.mode`"), "{i}: {r}");
    }
    // Extra arguments are not read: mode 1 of the conf, as `-m 1`.
    assert_eq!(replies[3]["ok"], true, "{}", replies[3]);
    assert!(replies[4]["error"].as_str().unwrap().contains("`args.on`"), "{}", replies[4]);
    assert!(replies[5]["error"].as_str().unwrap().contains("mode `-m` is not in"), "{}", replies[5]);
    assert_eq!(dev.runs("nvpmodel"), ["-m 1"], "only the conf's id ever reaches nvpmodel");
    assert!(dev.runs("jetson_clocks").is_empty());
    assert!(!Path::new("/tmp/jetship-pwned").exists());
}

#[test]
fn clocks_on_saves_the_clocks_and_off_restores_them() {
    let broker = Mosquitto::start();
    let dev = Device::start(&broker, "orin-c", &[], true);
    let saved = dev.saved_clocks();
    let policy0_min = "sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq";

    let out = jetship(&broker, &["clocks", "orin-c", "on"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), dev.log());
    assert_eq!(stdout(&out), "orin-c: jetson_clocks off -> on\n");
    // First the clocks it replaces are saved in the agent's state dir, then jetson_clocks pins them.
    assert_eq!(dev.runs("jetson_clocks"), [format!("--store {}", saved.display()), String::new()]);
    assert!(saved.is_file());
    assert_eq!(dev.file(policy0_min), "1728000");

    // Again: nothing new to save (the saved clocks are the unpinned ones).
    let out = jetship(&broker, &["clocks", "orin-c", "on", "--json"]);
    let r = &json_reply(&out)["result"];
    assert_eq!(
        (r["before"].as_bool(), r["after"].as_bool(), r["changed"].as_bool()),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(dev.runs("jetson_clocks").len(), 3);

    let out = jetship(&broker, &["clocks", "orin-c", "off"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(stdout(&out), "orin-c: jetson_clocks on -> off\n");
    assert_eq!(dev.runs("jetson_clocks").last().unwrap(), &format!("--restore {}", saved.display()));
    assert_eq!(dev.file(policy0_min), "115200");
    assert!(!saved.exists(), "restored clocks are not kept: the next `on` saves the clocks of that moment");

    // Already off: nothing to run.
    let out = jetship(&broker, &["clocks", "orin-c", "off"]);
    assert_eq!(stdout(&out), "orin-c: jetson_clocks off -> off\n");
    assert_eq!(dev.runs("jetson_clocks").len(), 4);

    // Off when jetship did not turn it on: nothing saved to restore, refused with what to do.
    let by_hand = Command::new(dev.root.path().join("usr/bin/jetson_clocks")).status().unwrap();
    assert!(by_hand.success());
    let out = jetship(&broker, &["clocks", "orin-c", "off"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("no saved clocks") && stdout(&out).contains("jetship power-mode"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn without_the_policy_key_power_commands_are_refused_and_groups_reach_their_members_only() {
    let broker = Mosquitto::start();
    let allowed = Device::start(&broker, "lab-allowed", &["lab"], true);
    let locked = Device::start(&broker, "lab-locked", &["lab", "edge"], false);
    let other = Device::start(&broker, "field-1", &["field"], true);

    let out = jetship(&broker, &["power-mode", "group:lab", "15W"]);
    assert_eq!(out.status.code(), Some(1), "one of the group refused: {}", stdout(&out));
    let mut lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "lab-allowed: power mode 2 30W -> 1 15W".to_owned(),
            "lab-locked: refused: changing the power mode is not allowed on this device: root on it allows power \
             control with `allow_control = true` under [policy.power] in the agent config (policy.power.allow_control)"
                .to_owned(),
        ]
    );
    assert_eq!(allowed.runs("nvpmodel"), ["-m 1"]);
    assert!(locked.runs("nvpmodel").is_empty(), "refused before anything runs");
    assert!(other.runs("nvpmodel").is_empty(), "not in the group");
    assert_eq!(locked.file("var/lib/nvpmodel/status"), "pmode:0002 fmode:quiet");

    let out = jetship(&broker, &["clocks", "lab-locked", "on"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("policy.power.allow_control"), "{}", stdout(&out));
    assert!(locked.runs("jetson_clocks").is_empty());

    let out = jetship(&broker, &["clocks", "group:field", "on"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(stdout(&out), "field-1: jetson_clocks off -> on\n");
    assert!(allowed.runs("jetson_clocks").is_empty());

    let out = jetship(&broker, &["power-mode", "group:nobody", "15W"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("group:nobody") && err.contains("groups"), "{err}");

    let out = jetship(&broker, &["clocks", "lab-allowed", "maybe"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses it: {}", String::from_utf8_lossy(&out.stderr));
}
