//! Repairing what a kill or a power cut left half done in the native backend's own state: containers whose
//! monitor is gone, unusable records and bundles, bundles without a container.

use super::*;

impl Inner {
    /// Finds what a kill or a power cut left half done and repairs it, noting each repair in `os::journal`:
    /// a container whose conmon is gone is deleted from the runtime and created again from its bundle under a
    /// new conmon (never left running unsupervised; the plan then starts it); a container whose record or
    /// bundle does not parse is stopped and removed (its deployment creates it again); a bundle without a
    /// container (a kill during create or remove) is unmounted and removed. Skipped while another process holds
    /// the backend's lock. Returns how many repairs it made.
    pub(super) fn repair(&self) -> Result<usize> {
        let Some(_lock) = self.lock(false)? else { return Ok(0) };
        let mut repairs = 0;
        let containers = self.settings.state_dir.join("containers");
        for entry in std::fs::read_dir(&containers).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !conmon::valid_id(&id) || !entry.path().is_dir() {
                continue;
            }
            let meta_path = entry.path().join("meta.json");
            let meta = match std::fs::read(&meta_path) {
                Ok(b) => serde_json::from_slice::<conmon::Meta>(&b).map_err(|e| format!("unreadable ({e})")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("missing".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            let meta = match meta {
                Ok(m) => m,
                Err(problem) => {
                    self.discard(&id, format!("container record (meta.json) {problem}"));
                    repairs += 1;
                    continue;
                }
            };
            if let Some(problem) = bundle_problem(&meta.bundle) {
                self.discard(&id, problem);
                repairs += 1;
                continue;
            }
            let sup = self.sup_for(&meta.labels);
            if sup.monitor_alive(&id) {
                continue;
            }
            let Ok(state) = sup.state(&id) else { continue };
            let lost = match state.status {
                Status::Created => None,
                Status::Running | Status::Paused => Some("the running process; its output while unsupervised"),
                Status::Stopped | Status::Missing => continue,
            };
            let problem =
                format!("its monitor (conmon) is gone while the container is {:?}", state.status).to_lowercase();
            let repair = match sup.recreate(&id) {
                Ok(()) => crate::base::Repair::new(
                    format!("container {id}"),
                    problem,
                    "deleted from the runtime and created again from its bundle under a new conmon; started again by its deployment",
                ),
                Err(e) => {
                    self.discard(&id, format!("{problem}; creating it again failed: {e}"));
                    repairs += 1;
                    continue;
                }
            };
            crate::os::journal::note(match lost {
                Some(l) => repair.lost(l),
                None => repair,
            });
            repairs += 1;
        }
        let bundles = self.settings.state_dir.join("bundles");
        for entry in std::fs::read_dir(&bundles).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if containers.join(&id).join("meta.json").exists() {
                continue;
            }
            let mounted = unmount(&entry.path().join("rootfs")).is_ok();
            let _ = std::fs::remove_dir_all(entry.path());
            crate::os::journal::note(crate::base::Repair::new(
                format!("bundles/{id}"),
                "a bundle without a container (a kill during create or remove)",
                if mounted { "its root file system unmounted and the bundle removed" } else { "removed" },
            ));
            repairs += 1;
        }
        repairs += self.sweep_network();
        Ok(repairs)
    }

    /// Stops and removes container `id` whose record or bundle is unusable, with its bundle (the overlay
    /// unmounted), and notes the repair: its deployment creates it again.
    fn discard(&self, id: &str, problem: String) {
        let result = self.sup.remove(id);
        let bundle = self.bundle_dir(id);
        if bundle.exists() {
            let _ = unmount(&bundle.join("rootfs"));
            let _ = std::fs::remove_dir_all(&bundle);
        }
        let action = match result {
            Ok(()) => "stopped and removed with its bundle; its deployment creates it again".to_owned(),
            Err(e) => format!("removing it failed: {e}"),
        };
        crate::os::journal::note(
            crate::base::Repair::new(format!("container {id}"), problem, action)
                .lost("its output log and writable layer"),
        );
    }
}

/// Why a container's bundle cannot be used to create it again: no bundle, no `config.json`, or one that is not
/// an OCI runtime spec. `None` when it is sound.
fn bundle_problem(bundle: &Path) -> Option<String> {
    let config = bundle.join("config.json");
    if !bundle.is_dir() {
        return Some(format!("its bundle {} is missing", bundle.display()));
    }
    let bytes = match std::fs::metadata(&config) {
        Ok(m) if m.len() > 16 << 20 => return Some(format!("its bundle's config.json is {} bytes", m.len())),
        Ok(_) => match std::fs::read(&config) {
            Ok(b) => b,
            Err(e) => return Some(format!("its bundle's config.json cannot be read ({e})")),
        },
        Err(e) => return Some(format!("its bundle's config.json cannot be read ({e})")),
    };
    match serde_json::from_slice::<oci_spec::runtime::Spec>(&bytes) {
        Ok(_) => None,
        Err(e) => Some(format!("its bundle's config.json is not a runtime spec ({e})")),
    }
}
