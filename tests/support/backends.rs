//! One container backend under test with a private state dir: the native one (runc under conmon, its own run dir
//! and cgroup parent) or Docker (this test binary's private dockerd), and what the agent does to a deployment
//! before a backend sees it. Shared by the container tests (attacks, devices, Jetson conveniences).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jetship::config::PolicyConfig;
use jetship::deploy::document::{parse, Format};
use jetship::runtime::docker::{DockerBackend, DockerOptions};
use jetship::runtime::oci::{OciBackend, OciSettings};
use jetship::runtime::{ContainerConfig, ContainerRuntime, LogLine, RunState};

use super::backend_contract::wait_for_state;

pub struct Backend {
    pub rt: Box<dyn ContainerRuntime>,
    pub state: PathBuf,
    /// Starts the id of every container this backend makes in a test (`n…` native, `d…` Docker).
    pub prefix: String,
    keep: Vec<tempfile::TempDir>,
}

impl Backend {
    /// The native backend (runc under conmon) for agent `agent`, reading the host at `host_root`.
    pub fn native(agent: &str, host_root: &Path) -> Backend {
        assert!(nix::unistd::geteuid().is_root(), "container tests need root (scripts/test runs as root)");
        super::require_tool("conmon", "conmon");
        super::require_tool("runc", "runc");
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut cfg = jetship::config::Config { device_id: Some(agent.into()), ..Default::default() };
        cfg.state_dir = state.clone();
        cfg.host.root = host_root.to_path_buf();
        cfg.registry.disk_reserve_bytes = 0;
        cfg.runtime.oci_runtime = "runc".into();
        cfg.runtime.run_dir = dir.path().join("run");
        cfg.runtime.cgroup_parent = PathBuf::from(format!("/jetship-{agent}-{}", std::process::id()));
        let rt = Box::new(OciBackend::new(OciSettings::from_config(&cfg)).unwrap());
        Backend { rt, state, prefix: format!("n{:06x}", rand::random::<u32>() & 0xffffff), keep: vec![dir] }
    }

    /// The Docker backend on this test binary's private dockerd, for agent `agent`, reading the host at `host_root`.
    pub async fn docker(agent: &str, host_root: &Path) -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let opts = DockerOptions {
            agent_id: agent.into(),
            host_root: host_root.to_path_buf(),
            gpu_mode: jetship::base::GpuMode::Auto,
            credentials: Default::default(),
            state_dir: state.clone(),
        };
        let rt = Box::new(DockerBackend::connect(&super::dockerd::shared(), opts).await.unwrap());
        Backend { rt, state, prefix: format!("d{:06x}", rand::random::<u32>() & 0xffffff), keep: vec![dir] }
    }

    /// Keeps `dir` (a fixture host root the backend reads) as long as the backend.
    pub fn keeping(mut self, dir: tempfile::TempDir) -> Backend {
        self.keep.push(dir);
        self
    }

    /// The container id for `name` in this test.
    pub fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// What the agent gives the backend for deployment `name` of `toml` with `policy`: the document parsed and
    /// checked (it must be within the policy), converted, and confined.
    pub fn as_agent(&self, toml: &str, name: &str, image: &str, policy: &PolicyConfig) -> ContainerConfig {
        let doc = parse(toml.as_bytes(), Some(Format::Toml), "test.toml").unwrap();
        let problems = jetship::deploy::policy::check(&doc, policy, &self.state);
        assert!(problems.is_empty(), "within policy: {problems:?}");
        let mut c = doc.deployments[name].container_config(name, image).unwrap();
        jetship::deploy::policy::confine(&mut c, policy, &self.state);
        c
    }

    /// Runs `config` as container `id` to its exit and removes it; returns what it printed, both streams.
    pub async fn run_logs(&self, id: &str, config: &ContainerConfig) -> Vec<LogLine> {
        let rt = self.rt.name();
        self.rt.create(id, config, BTreeMap::new()).await.unwrap_or_else(|e| panic!("{rt}: create {id}: {e}"));
        self.rt.start(id).await.unwrap_or_else(|e| panic!("{rt}: start {id}: {e}"));
        wait_for_state(self.rt.as_ref(), id, RunState::Exited, Duration::from_secs(30)).await;
        let logs = self.rt.logs(id, None).await.unwrap();
        self.rt.remove(id).await.unwrap();
        logs
    }

    /// Stops and removes every container of this test.
    pub async fn cleanup(&self) {
        for c in self.rt.list_owned().await.unwrap_or_default() {
            if c.id.starts_with(&self.prefix) {
                let _ = self.rt.stop(&c.id, Duration::from_millis(200)).await;
                let _ = self.rt.remove(&c.id).await;
            }
        }
    }
}
