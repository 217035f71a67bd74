//! Health checkers: `http` and `tcp` probe from the host (containers use host networking by default),
//! `running_for` waits, and `exec` runs the command inside the container's namespaces with
//! `nsenter --target <pid>` (the backend trait has no exec; this needs the agent to run as root, as it does on a
//! device, and a backend that reports the container's pid). What the results mean is the pure [`Gate`]'s.

use tokio::time::Instant;

use crate::deploy::document::{DurationSpec, HealthCheck};
use crate::deploy::plan::health::{Gate, Verdict};
use crate::deploy::plan::Health;

/// One container's health checker.
pub(super) struct Probe {
    pub(super) check: HealthCheck,
    pub(super) pid: Option<i32>,
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
        loop {
            let result = match tokio::time::timeout(self.check.timeout.0, self.probe()).await {
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
            let Some(pid) = self.pid else {
                return Err("exec health check: the backend reports no pid for the container".into());
            };
            let out = tokio::process::Command::new("nsenter")
                .args(["--target", &pid.to_string(), "--mount", "--uts", "--ipc", "--net", "--pid", "--"])
                .args(cmd)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| format!("cannot run nsenter for the exec health check (install util-linux): {e}"))?;
            return if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`{}` exited with {}: {}",
                    cmd.join(" "),
                    out.status,
                    crate::os::exec::trim_stderr(&out.stderr)
                ))
            };
        }
        Err("health check has no probe".into())
    }
}
