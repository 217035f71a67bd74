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
            let meta = match conmon::Meta::read(&entry.path()) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.discard(&id, "its record (meta.json) is missing".to_owned());
                    repairs += 1;
                    continue;
                }
                Err(problem) => {
                    repairs += 1;
                    match conmon::Meta::read_unsealed(&entry.path()) {
                        Some(m) => {
                            self.reseal(&m, &problem);
                            m
                        }
                        None => {
                            self.discard(&id, format!("its record (meta.json) is unusable: {problem}"));
                            continue;
                        }
                    }
                }
            };
            if let Some(problem) = bundle_problem(&meta) {
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

    /// Seals again a record that is whole but has no checksum (an older agent's, or one cut right after its
    /// content), and notes it.
    fn reseal(&self, meta: &conmon::Meta, problem: &str) {
        let dir = self.settings.state_dir.join("containers").join(&meta.id);
        let action = match meta.write(&dir) {
            Ok(()) => "its content is whole: sealed again".to_owned(),
            Err(e) => format!("its content is whole; sealing it again failed: {e}"),
        };
        crate::os::journal::note(crate::base::Repair::new(
            format!("container {}", meta.id),
            format!("its record (meta.json) is not sealed: {problem}"),
            action,
        ));
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

/// Why a container's bundle cannot be used to create it again: no bundle, no `config.json`, one that is not
/// a runtime spec, or one that differs from what the record says the runtime was told (a flipped bit).
fn bundle_problem(meta: &conmon::Meta) -> Option<String> {
    let bundle = &meta.bundle;
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
    // The spec it was created with (the usual case, every round): no need to parse it again.
    let digest = crate::os::fsutil::sha256_hex(&bytes);
    match &meta.config_sha256 {
        Some(want) if *want == digest => None,
        Some(want) => Some(format!("its bundle's config.json has sha256 {digest}, not the {want} it was created with")),
        // An older agent's record has no digest: at least the spec must parse.
        None => serde_json::from_slice::<oci_spec::runtime::Spec>(&bytes)
            .err()
            .map(|e| format!("its bundle's config.json is not a runtime spec ({e})")),
    }
}
