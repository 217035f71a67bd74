//! `jetship run`: one container the way `docker run` starts it, on the configured backend; `jetship exec`: a
//! command in a running container through the backend's exec.

use super::*;

/// `jetship run`: resolve (JetPack-matched), pull, unpack, create, start; then stream the output and exit with
/// the container's code, or print the id with `-d`. SIGINT/SIGTERM stop the container with the grace period.
pub(super) fn run_container(config: &Option<PathBuf>, log_level: Option<&str>, args: RunArgs) -> anyhow::Result<i32> {
    use crate::runtime::{self, labels, ContainerConfig};
    for (k, v) in &args.sysctls {
        if let Some(problem) = runtime::privileges::sysctl_problem(k, v, args.ipc, args.network) {
            anyhow::bail!("--sysctl {k}: {problem}");
        }
    }
    let cfg = image_config(config, log_level)?;
    crate::base::ports::require_bridge(args.network, &args.ports).map_err(anyhow::Error::msg)?;
    let (vars, _) = host_vars(&cfg, None);
    let opts = crate::image::pull::PullOptions::from_config(&cfg.registry, args.platform.as_deref())?;
    let client =
        crate::image::registry::Client::new(crate::image::registry::ClientOptions::from_config(&cfg.registry)?)?;
    let store = crate::image::store::ImageStore::open(&cfg.state_dir)?;
    let id = args.name.clone().unwrap_or_else(|| format!("run-{:08x}", rand::random::<u32>()));
    let grace = Duration::from_secs(cfg.runtime.stop_grace_s);
    let rt = image_runtime()?;
    let backend = rt.block_on(runtime::open(&cfg, None))?;
    rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        // A digest-pinned image already here (in the store, or the Engine's own for Docker, which ensure_image
        // asks first) starts without any registry request.
        let offline = crate::image::offline::pinned(&args.image, &vars)
            .filter(|p| backend.name() == "docker" || crate::image::offline::stored(&store, p, &opts.platform));
        // The Docker Engine keeps its own image store: resolve and pin here, let the Engine pull the digest.
        let pulled = if let Some(pinned) = offline {
            Ok(pinned.to_string())
        } else if backend.name() == "docker" {
            crate::image::pull::resolve(&client, &args.image, &vars).await.map(|r| r.reference.to_string())
        } else {
            crate::image::pull::pull(&client, &store, &args.image, &vars, &opts, None, cancel)
                .await
                .map(|r| r.record.resolved)
        };
        let image = match pulled {
            Ok(resolved) => resolved,
            // Offline (or the registry is down): a copy pulled earlier under the same name still runs.
            Err(err) => match local_image(&store, &args.image, &vars) {
                Some(resolved) => {
                    eprintln!("warning: cannot pull {} ({err}); running the local copy {resolved}", args.image);
                    resolved
                }
                None => return Err(anyhow::Error::new(err).context(format!("cannot pull {}", args.image))),
            },
        };
        backend.ensure_image(&image).await.with_context(|| format!("cannot unpack {image}"))?;
        let container = ContainerConfig {
            image: image.clone(),
            entrypoint: args.entrypoint.clone().map(|e| vec![e]),
            args: (!args.command.is_empty()).then(|| args.command.clone()),
            env: args.env.clone(),
            working_dir: args.workdir.clone(),
            user: args.user.clone(),
            ipc: args.ipc,
            network: args.network,
            ports: args.ports.clone(),
            shm_size_bytes: args.shm_size,
            volumes: args.volumes.clone(),
            gpu: args.gpu.clone(),
            cameras: args.cameras.clone(),
            devices: args.devices.clone(),
            privileged: args.privileged,
            cap_drop: args.cap_drop.clone(),
            group_add: args.group_add.clone(),
            ulimits: args.ulimits.clone(),
            sysctls: args.sysctls.iter().cloned().collect(),
            read_only_rootfs: args.read_only,
            tmpfs: args.tmpfs.clone(),
            confinement: runtime::Confinement {
                cap_add: args.cap_add.clone(),
                pids_limit: Some(args.pids_limit.unwrap_or(runtime::DEFAULT_PIDS_LIMIT)),
                ..Default::default()
            },
            jetson: args.jetson.clone(),
            ..Default::default()
        };

        let deployment = args.name.clone().unwrap_or_else(|| id.clone());
        let labels = std::collections::BTreeMap::from([
            (labels::DEPLOYMENT.to_string(), deployment),
            (labels::OWNER.to_string(), labels::OWNER_RUN.to_string()),
        ]);
        backend.create(&id, &container, labels).await.with_context(|| format!("cannot create container {id}"))?;
        if let Err(e) = backend.start(&id).await {
            let _ = backend.remove(&id).await;
            return Err(anyhow::Error::new(e).context(format!("cannot start container {id}")));
        }
        if args.detach {
            println!("{id}");
            return Ok(0);
        }
        let code = follow(backend.clone(), &id, grace).await?;
        if args.rm {
            backend.remove(&id).await.with_context(|| format!("cannot remove container {id}"))?;
        }
        Ok(code)
    })
}

/// The pinned reference of an image stored under `input`'s name (templates expanded; `{auto}` names are stored
/// unexpanded), if it was pulled before.
pub(super) fn local_image(
    store: &crate::image::store::ImageStore,
    input: &str,
    vars: &crate::image::reference::TemplateVars,
) -> Option<String> {
    let expanded = crate::image::reference::expand(input, vars).ok()?;
    let name = crate::image::reference::Reference::parse(&expanded).ok()?.to_string();
    store.record(&name).ok().flatten().map(|r| r.resolved)
}

/// Streams the container's output until it exits (followed by byte offset, `ContainerRuntime::follow_logs`);
/// stops it on SIGINT/SIGTERM. Returns its exit code.
pub(super) async fn follow(
    backend: std::sync::Arc<dyn crate::runtime::ContainerRuntime>,
    id: &str,
    grace: Duration,
) -> anyhow::Result<i32> {
    use crate::runtime::RunState;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let stop = tokio_util::sync::CancellationToken::new();
    let follower = {
        let (backend, id, stop) = (backend.clone(), id.to_owned(), stop.clone());
        let sink: crate::runtime::LogSink = std::sync::Arc::new(super::local::print_line);
        tokio::spawn(async move { backend.follow_logs(&id, None, sink, stop).await })
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let code = loop {
        let signalled = tokio::select! {
            _ = tick.tick() => false,
            _ = term.recv() => true,
            _ = int.recv() => true,
        };
        if signalled {
            eprintln!("stopping {id} (grace {} s)", grace.as_secs());
            backend.stop(id, grace).await?;
        }
        match backend.inspect(id).await? {
            None => break Err(anyhow::anyhow!("container {id} disappeared while running")),
            Some(s) if matches!(s.state, RunState::Exited | RunState::Missing) => {
                if let Some(code) = s.exit_code {
                    break Ok(code);
                }
                if s.state == RunState::Missing {
                    break Err(anyhow::anyhow!("container {id} is gone from the runtime without an exit code"));
                }
            }
            Some(_) => {}
        }
    };
    // What the container wrote before it exited is read to the end, then the follower stops.
    stop.cancel();
    follower.await.context("the log follower failed")??;
    code
}

/// `jetship exec`: runs the command in `args.name` (a container id, else the running container of that
/// deployment) through the backend's exec, streaming its output; returns its exit code.
pub(super) fn exec_in_container(
    config: &Option<PathBuf>,
    log_level: Option<&str>,
    args: ExecArgs,
) -> anyhow::Result<i32> {
    use crate::runtime::{self, ExecStream, RunState};
    let cfg = image_config(config, log_level)?;
    let timeout = match args.timeout {
        Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => anyhow::bail!("--timeout {t}: use a positive number of seconds"),
        None => None,
    };
    let rt = image_runtime()?;
    rt.block_on(async {
        let backend = runtime::open(&cfg, None).await?;
        let owned = backend.list_owned().await?;
        let id = super::local::find(&owned, &args.name)?
            .into_iter()
            .find(|c| c.id == args.name || c.state == RunState::Running)
            .map(|c| c.id.clone())
            .with_context(|| format!("no running container of a deployment `{}` here (see `jetship ps`)", args.name))?;
        if args.interactive || args.tty {
            // Ctrl-C (without a terminal) reaches the command through the runtime; this process waits for its
            // exit code instead of dying first.
            let _int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("cannot install the SIGINT handler")?;
            let io = runtime::ExecIo { stdin: args.interactive, tty: args.tty, timeout };
            let code = backend.exec_attached(&id, &args.command, io).await.with_context(|| format!("exec in {id}"))?;
            return Ok(code);
        }
        let sink: runtime::ExecSink = std::sync::Arc::new(|stream, bytes: &[u8]| {
            let _ = match stream {
                ExecStream::Stdout => std::io::stdout().lock().write_all(bytes).and_then(|_| std::io::stdout().flush()),
                ExecStream::Stderr => std::io::stderr().lock().write_all(bytes),
            };
        });
        let code = backend.exec(&id, &args.command, timeout, sink).await.with_context(|| format!("exec in {id}"))?;
        Ok(code)
    })
}
