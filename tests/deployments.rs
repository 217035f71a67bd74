//! Deployment documents on disk: files in each format, the size limit, the desired-state store across agent
//! restarts, and the examples against the default policy, all through the public API.

use std::path::Path;

use jetship::config::PolicyConfig;
use jetship::deploy::desired::{DesiredStore, Source};
use jetship::deploy::document::{self, Error};

#[test]
fn documents_are_read_in_the_format_their_extension_names() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("d.toml");
    std::fs::write(&toml, "[deployments.hello]\nimage = \"busybox:1.36\"\nmemory = \"32m\"\n").unwrap();
    let yaml = dir.path().join("d.yml");
    std::fs::write(&yaml, "deployments:\n  hello:\n    image: busybox:1.36\n    memory: 32m\n").unwrap();
    let json = dir.path().join("d.json");
    std::fs::write(&json, r#"{"deployments": {"hello": {"image": "busybox:1.36", "memory": 33554432}}}"#).unwrap();
    let a = document::read_file(&toml).unwrap();
    assert_eq!(document::read_file(&yaml).unwrap(), a);
    assert_eq!(document::read_file(&json).unwrap(), a);
    // TOML text in a .json file is a JSON error naming the file, not a guess.
    let wrong = dir.path().join("wrong.json");
    std::fs::copy(&toml, &wrong).unwrap();
    let err = document::read_file(&wrong).unwrap_err().to_string();
    assert!(err.contains("wrong.json") && err.contains("JSON"), "{err}");
}

#[test]
fn two_mib_document_file_is_refused_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    let mut text = String::from("[deployments.hello]\nimage = \"busybox\"\n");
    text.push_str(&"# padding\n".repeat(2 * 1024 * 1024 / 10));
    std::fs::write(&big, text).unwrap();
    let err = document::read_file(&big).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("big.toml"), "{err}");
}

#[test]
fn bad_document_lists_every_reason_in_each_format() {
    let toml = "generation = \"x\"\n[deployments.Bad]\nimage = \"busybox\"\n[deployments.ok]\nimage = \"busybox\"\nrestart = \"sometimes\"\nvolumes = [{ host = \"rel\", container = \"/c\" }]\n";
    let yaml = "generation: x\ndeployments:\n  Bad:\n    image: busybox\n  ok:\n    image: busybox\n    restart: sometimes\n    volumes: [{host: rel, container: /c}]\n";
    let json = r#"{"generation": "x", "deployments": {"Bad": {"image": "busybox"}, "ok": {"image": "busybox", "restart": "sometimes", "volumes": [{"host": "rel", "container": "/c"}]}}}"#;
    for (text, format) in
        [(toml, document::Format::Toml), (yaml, document::Format::Yaml), (json, document::Format::Json)]
    {
        let err = document::parse(text.as_bytes(), Some(format), "desired").unwrap_err();
        let Error::Invalid { problems, .. } = &err else { panic!("{format}: {err}") };
        let mut keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["deployments.Bad", "deployments.ok.restart", "deployments.ok.volumes[0].host", "generation"],
            "{format}: {err}"
        );
    }
}

#[test]
fn stored_desired_state_survives_an_agent_restart() {
    let state = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let hello = document::read_file(&examples.join("hello.toml")).unwrap();
    let yolo = document::read_file(&examples.join("yolo.toml")).unwrap();
    {
        let store = DesiredStore::new(state.path());
        store.save(&Source::Group("cameras".into()), &yolo).unwrap();
        store.save(&Source::Device, &hello).unwrap();
    }
    // A new store over the same state dir, as after a power cycle with no broker.
    let store = DesiredStore::new(state.path());
    let (overlay, problems) = store.load_overlay(&["cameras".into()]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(overlay.document.deployments.keys().collect::<Vec<_>>(), ["hello", "yolo"]);
    assert_eq!(overlay.document.deployments["yolo"], yolo.deployments["yolo"]);
    assert_eq!(overlay.origin["hello"], Source::Device);
    // Both examples are within the default policy of an agent whose state dir is /var/lib/jetship.
    for doc in [&hello, &yolo] {
        assert_eq!(jetship::deploy::policy::check(doc, &PolicyConfig::default(), Path::new("/var/lib/jetship")), []);
    }
}

#[test]
fn corrupt_stored_document_is_reported_and_the_rest_still_loads() {
    let state = tempfile::tempdir().unwrap();
    let store = DesiredStore::new(state.path());
    let doc = document::parse(b"[deployments.a]\nimage = \"busybox\"\n", None, "t").unwrap();
    store.save(&Source::Device, &doc).unwrap();
    std::fs::write(store.dir().join("group-lab.json"), [0xff, 0x00, 0x13]).unwrap();
    let loaded = store.load_all();
    assert_eq!(loaded.documents.len(), 1);
    assert_eq!(loaded.problems.len(), 1);
    assert!(loaded.problems[0].contains("group-lab.json"), "{:?}", loaded.problems);
}

#[test]
fn the_ros2_robot_example_validates_is_refused_by_the_default_policy_and_runs_with_its_commented_keys() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ros2-robot.toml");
    let doc = document::read_file(&path).unwrap_or_else(|e| panic!("examples/ros2-robot.toml must validate: {e}"));
    assert_eq!(doc.deployments.keys().collect::<Vec<_>>(), ["dashboard", "imu", "micro-ros"]);
    let state = Path::new("/var/lib/jetship");
    // The default policy refuses the devices and groups, naming the keys that allow them.
    let refused = jetship::deploy::policy::check(&doc, &PolicyConfig::default(), state);
    let text = format!("{refused:?}");
    for key in ["policy.allowed_devices", "policy.allowed_groups"] {
        assert!(text.contains(key), "{key} not named: {text}");
    }
    assert!(!text.contains("dashboard"), "the bridge network and port 8080 are within the default policy: {text}");
    // The [policy] block the example shows (commented) allows exactly what it needs.
    let text = std::fs::read_to_string(&path).unwrap();
    let shown: Vec<&str> =
        text.lines().skip_while(|l| *l != "#   [policy]").skip(1).map_while(|l| l.strip_prefix("#   ")).collect();
    let policy: PolicyConfig = toml::from_str(&shown.join("\n")).unwrap_or_else(|e| panic!("{shown:?}: {e}"));
    assert_eq!(jetship::deploy::policy::check(&doc, &policy, state), [], "{shown:?}");
}
