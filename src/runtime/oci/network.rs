//! The native backend's side of bridge networking: when a bridge container is attached (before conmon
//! creates it, and again before a stopped one is created anew), detached (after it stops, when it is
//! removed) and what a sweep after a crash or at agent start cleans up ([`crate::runtime::network`] does it).

use super::*;

impl Inner {
    /// For a bridge container: records it (hostname, ports) and points its spec at its namespace and /etc
    /// files. Published ports without the bridge are refused here too, whoever built the config.
    pub(super) fn prepare_network(&self, id: &str, config: &ContainerConfig, run: &mut RunSpec) -> Result<()> {
        crate::base::ports::require_bridge(config.network, &config.ports).map_err(|m| ctr_err(id, m))?;
        if config.network != crate::base::NetworkMode::Bridge {
            return Ok(());
        }
        let hostname = crate::runtime::network::hostname(config.hostname.as_deref(), id);
        run.bridge = Some(self.settings.network.prepare(id, &hostname, &config.ports)?);
        run.hostname = Some(hostname);
        Ok(())
    }

    /// Attaches a bridge container that is not attached (a no-op for other containers).
    pub(super) fn network_up(&self, id: &str) -> Result<()> {
        if self.settings.network.has(id) {
            self.settings.network.attach(id)?;
        }
        Ok(())
    }

    /// Detaches container `id` from the bridge, if it was attached; `remove` drops its record too.
    pub(super) fn network_down(&self, id: &str, remove: bool) -> Result<()> {
        let net = &self.settings.network;
        if remove {
            net.remove(id)?;
        } else if net.holds_anything(id) {
            net.detach(id)?;
        }
        Ok(())
    }

    /// Stops container `id`, then detaches it from the bridge (under the backend's lock, so a concurrent
    /// start does not lose its fresh attachment).
    pub(super) fn stop(&self, id: &str, grace: Duration) -> Result<Option<i32>> {
        let code = self.sup_of(id)?.stop(id, grace)?;
        let _lock = self.lock(true)?;
        if self.sup_of(id).and_then(|s| Ok(s.state(id)?.status)).is_ok_and(|s| !matches!(s, Status::Running)) {
            self.network_down(id, false)?;
        }
        Ok(code)
    }

    /// What a kill, a crash of the container or a reboot left attached: a container that no longer runs (its
    /// process exited, or the runtime lost it) is detached, one whose record is gone is removed from the
    /// network with its record, and a namespace file nobody records is unmounted. Each is noted in
    /// `os::journal`; returns how many. Called by [`Inner::repair`] under the backend's lock.
    pub(super) fn sweep_network(&self) -> usize {
        let net = &self.settings.network;
        let mut repairs = 0;
        for id in net.known() {
            let status = match self.meta_labels(&id) {
                Ok(labels) => match self.sup_for(&labels).state(&id) {
                    Ok(s) => Some(s.status),
                    Err(_) => continue,
                },
                Err(Error::Supervisor(conmon::Error::NotFound { .. })) => None,
                Err(_) => continue,
            };
            let (problem, result) = match status {
                Some(Status::Running | Status::Created | Status::Paused) => continue,
                Some(_) if !net.holds_anything(&id) => continue,
                Some(s) => (format!("attached to the bridge while {s:?}").to_lowercase(), net.detach(&id)),
                None => ("a bridge attachment without a container".to_owned(), net.remove(&id)),
            };
            let action = match result {
                Ok(()) => "detached (CNI DEL: veth, port and firewall rules, address lease) and its namespace removed"
                    .to_owned(),
                Err(e) => format!("detaching it failed (tried again next round): {e}"),
            };
            crate::os::journal::note(crate::base::Repair::new(format!("network of container {id}"), problem, action));
            repairs += 1;
        }
        repairs
    }
}
