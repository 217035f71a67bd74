//! Health checkers: `http` and `tcp` probe from the host (containers use host networking by default),
//! `running_for` waits, and `exec` runs the command through the backend's exec
//! ([`ContainerRuntime::exec`]): inside the container with its own user, capabilities, seccomp, AppArmor,
//! no_new_privs, cgroup and environment, never as a host process entering its namespaces. A failed exec check
//! reports its exit code and the first [`OUTPUT_KEEP`] bytes of its output. What the results mean is the pure
//! [`Gate`]'s.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::deploy::document::{DurationSpec, HealthCheck};
use crate::deploy::plan::health::{Gate, Verdict};
use crate::deploy::plan::Health;
use crate::runtime::exec::Capture;
use crate::runtime::ContainerRuntime;

/// Bytes of an exec check's output kept for the report.
pub(super) const OUTPUT_KEEP: usize = 512;

/// Time the backend gets beyond the check's timeout to kill a command that overran it.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// One container's health checker.
pub(super) struct Probe {
    pub(super) check: HealthCheck,
    pub(super) runtime: Arc<dyn ContainerRuntime>,
    /// The container's backend id.
    pub(super) id: String,
}

impl Probe {
    /// Probes until the gate ([`Gate`]) decides for good, reporting each verdict it gives on the way. A
    /// `running_for` check is healthy once the container kept running that long.
    pub(super) async fn run(self, report: impl Fn(Health)) {
        let started = Instant::now();
        if let Some(d) = &self.check.running_for {
            tokio::time::sleep(d.0).await;
            report(Health::Healthy);
            return;
        }
        let mut gate = Gate::new(&self.check);
        // The backend kills an exec'd command at the timeout itself; this limit is the backstop.
        let limit = self.check.timeout.0 + if self.check.exec.is_some() { KILL_GRACE } else { Duration::ZERO };
        loop {
            let result = match tokio::time::timeout(limit, self.probe()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {}", DurationSpec(self.check.timeout.0))),
            };
            match gate.observe(result, started.elapsed()) {
                Verdict::Wait => {}
                Verdict::Report(h) => report(h),
                Verdict::Final(h) => return report(h),
            }
            tokio::time::sleep(self.check.interval.0).await;
        }
    }

    async fn probe(&self) -> std::result::Result<(), String> {
        if let Some(url) = &self.check.http {
            crate::install_crypto_provider();
            let client = reqwest::Client::builder().build().map_err(|e| format!("http client: {e}"))?;
            let resp = client.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
            let status = resp.status();
            return if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("GET {url} answered {status}"))
            };
        }
        if let Some(target) = &self.check.tcp {
            return tokio::net::TcpStream::connect(&target.0)
                .await
                .map(drop)
                .map_err(|e| format!("tcp connect to {}: {e}", target.0));
        }
        if let Some(cmd) = &self.check.exec {
            let capture = Capture::new(OUTPUT_KEEP);
            let code = self
                .runtime
                .exec(&self.id, cmd, Some(self.check.timeout.0), capture.sink())
                .await
                .map_err(|e| format!("exec health check `{}`: {e}", cmd.join(" ")))?;
            return if code == 0 {
                Ok(())
            } else {
                let output = capture.text();
                let output = if output.is_empty() { "no output".to_owned() } else { format!("output: {output}") };
                Err(format!("`{}` exited with code {code} ({output})", cmd.join(" ")))
            };
        }
        Err("health check has no probe".into())
    }
}
