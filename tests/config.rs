//! The documented example config and the `check-config` command.

mod support;

use std::path::Path;
use std::process::Command;

use jetship::config::{self, Config};

fn example_path() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/agent.toml"))
}

#[test]
fn example_config_parses_and_equals_the_defaults() {
    let loaded = config::load_files(example_path(), true).expect("config/agent.toml must parse");
    loaded.config.check().expect("config/agent.toml must be valid");
    assert_eq!(loaded.config, Config::default(), "config/agent.toml must document the defaults");
}

#[test]
fn example_config_documents_every_key_of_the_defaults() {
    // Every leaf key of the default config must appear in the example, uncommented or as `# key =`.
    let text = std::fs::read_to_string(example_path()).unwrap();
    let defaults = toml::Value::try_from(Config::default()).unwrap();
    let mut missing = Vec::new();
    fn walk(v: &toml::Value, prefix: &str, text: &str, section: &str, missing: &mut Vec<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match v {
                    toml::Value::Table(_) => walk(v, &path, text, &path, missing),
                    _ => {
                        let header_ok = section.is_empty() || text.contains(&format!("[{section}]"));
                        let key_ok = text.lines().any(|l| {
                            let l = l.trim_start_matches('#').trim_start();
                            l.starts_with(&format!("{k} ="))
                        });
                        if !(header_ok && key_ok) {
                            missing.push(path);
                        }
                    }
                }
            }
        }
    }
    walk(&defaults, "", &text, "", &mut missing);
    // device_id defaults to None, which TOML cannot show; it is documented as a commented line.
    assert!(text.contains("# device_id ="), "device_id must be documented");
    assert!(missing.is_empty(), "keys missing from config/agent.toml: {missing:?}");
}

#[test]
fn check_config_reports_file_and_key_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[telemetry]\ninterval_secs = 5\n").unwrap();
    let out = Command::new(support::jetship_bin()).arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("agent.toml") && stderr.contains("telemetry.interval_secs"), "{stderr}");
}

#[test]
fn check_config_prints_merged_config_with_drop_ins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "device_id = \"lab-1\"\n").unwrap();
    std::fs::create_dir(dir.path().join("agent.d")).unwrap();
    std::fs::write(dir.path().join("agent.d/50-telemetry.toml"), "[telemetry]\ninterval_s = 2\n").unwrap();
    let out = Command::new(support::jetship_bin())
        .arg("check-config")
        .arg(&path)
        .env_remove("JETSHIP_STATE_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let merged: Config = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(merged.device_id.as_deref(), Some("lab-1"));
    assert_eq!(merged.telemetry.interval_s, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("50-telemetry.toml"));
}

#[test]
fn state_dir_env_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "state_dir = \"/var/lib/other\"\n").unwrap();
    let out = Command::new(support::jetship_bin())
        .arg("check-config")
        .arg(&path)
        .env("JETSHIP_STATE_DIR", "/srv/jetship")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("state_dir = \"/srv/jetship\""));
}

#[test]
fn jetship_config_env_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.toml");
    std::fs::write(&path, "groups = [\"lab\"]\n").unwrap();
    let out = Command::new(support::jetship_bin()).arg("check-config").env("JETSHIP_CONFIG", &path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("groups = [\"lab\"]"));
}
