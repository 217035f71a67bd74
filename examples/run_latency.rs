//! Times the native backend's create + start of a cached image: from `create` (bundle, overlay, config.json,
//! conmon + runc create) to `start` returning, when the container's process has been exec'd. Used by
//! `scripts/bench-run`; prints one line per run, in milliseconds, and leaves the containers running
//! (`<prefix>-<n>`) so the script can measure memory with them up. The containers get the default confinement
//! (seccomp profile, no_new_privs, pids limit, AppArmor where enforced); with `JETSHIP_BENCH_UNCONFINED=1` none
//! of it, which is what the defaults cost. With `JETSHIP_BENCH_NETWORK=bridge` the containers join the agent's
//! bridge, and with `JETSHIP_BENCH_PORT=P` run `n` publishes host port `P+n` to port 80. `--remove PREFIX` in place
//! of the image stops and removes the containers whose id starts with PREFIX (detaching bridge ones).
//!
//!     cargo run --release --example run_latency -- <agent.toml> <pinned-image> <runs> <prefix> [ARGS...]
//!     cargo run --release --example run_latency -- <agent.toml> --remove <prefix>

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use jetship::runtime::oci::{OciBackend, OciSettings};
use jetship::runtime::{labels, Confinement, ContainerConfig, ContainerRuntime};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() == 3 && args[1] == "--remove" {
        let cfg = jetship::config::load(Some(std::path::Path::new(&args[0])))?.config;
        let backend = OciBackend::new(OciSettings::from_config(&cfg))?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return rt.block_on(async {
            for c in backend.list_owned().await?.into_iter().filter(|c| c.id.starts_with(&args[2])) {
                backend.stop(&c.id, std::time::Duration::ZERO).await?;
                backend.remove(&c.id).await?;
            }
            Ok(())
        });
    }
    if args.len() < 4 {
        bail!("usage: run_latency <agent.toml> <pinned-image> <runs> <prefix> [ARGS...]");
    }
    let cfg = jetship::config::load(Some(std::path::Path::new(&args[0])))?.config;
    let runs: usize = args[2].parse().context("runs must be a number")?;
    let backend = OciBackend::new(OciSettings::from_config(&cfg))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let bridge = std::env::var("JETSHIP_BENCH_NETWORK").is_ok_and(|v| v == "bridge");
    let port: Option<u16> = match std::env::var("JETSHIP_BENCH_PORT") {
        Ok(p) => Some(p.parse().context("JETSHIP_BENCH_PORT must be a port")?),
        Err(_) => None,
    };
    let config = ContainerConfig {
        image: args[1].clone(),
        args: (args.len() > 4).then(|| args[4..].to_vec()),
        ..Default::default()
    };
    let config = if std::env::var_os("JETSHIP_BENCH_UNCONFINED").is_some_and(|v| v == "1") {
        let none = Confinement {
            seccomp: false,
            apparmor: false,
            no_new_privileges: false,
            pids_limit: None,
            ..Default::default()
        };
        ContainerConfig { confinement: none, ..config }
    } else {
        config
    };
    rt.block_on(async {
        backend.ensure_image(&config.image).await?;
        for n in 0..runs {
            let id = format!("{}-{n}", args[3]);
            let mut config = config.clone();
            if bridge {
                config.network = jetship::base::NetworkMode::Bridge;
                if let Some(p) = port {
                    config.ports = vec![format!("{}:80", p + n as u16).parse().map_err(anyhow::Error::msg)?];
                }
            }
            let labels = BTreeMap::from([(labels::DEPLOYMENT.to_string(), id.clone())]);
            let t = Instant::now();
            backend.create(&id, &config, labels).await?;
            backend.start(&id).await?;
            println!("{:.1}", t.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(())
    })
}
