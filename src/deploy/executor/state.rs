//! What the plan needs across agent restarts (resolved digests, rolled-back versions): one small file per
//! deployment under `<state_dir>/deployments/`, written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Error, Result};
use crate::deploy::plan::{Observed, Resolved, RolledBack};

/// What the plan needs of a deployment after an agent restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Persisted {
    resolved: Option<(String, String)>,
    rolled_back: Option<(String, String)>,
}

/// `<state_dir>/deployments/<name>.json`: one small file per deployment, written atomically.
#[derive(Debug, Clone)]
pub(super) struct StateFiles {
    pub(super) dir: PathBuf,
}

impl StateFiles {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub(super) fn save(&self, name: &str, obs: &Observed) -> Result<()> {
        let p = Persisted {
            resolved: obs.resolved.as_ref().map(|r| (r.doc_hash.clone(), r.image.clone())),
            rolled_back: obs.rolled_back.as_ref().map(|r| (r.doc_hash.clone(), r.reason.clone())),
        };
        let path = self.path(name);
        let store = |source| Error::Store { path: path.clone(), source };
        std::fs::create_dir_all(&self.dir).map_err(store)?;
        let json = serde_json::to_vec(&p).expect("persisted state serializes");
        crate::os::fsutil::write_atomic(&path, &json).map_err(store)
    }

    pub(super) fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Store { path, source: e }),
            _ => Ok(()),
        }
    }

    /// Every deployment's persisted state; unreadable files are reported and skipped (the deployment is then
    /// resolved again).
    pub(super) fn load(&self) -> BTreeMap<String, Observed> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return out };
        for e in entries.flatten() {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let parsed = crate::os::fsutil::read_small(&path, 64 * 1024)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str::<Persisted>(&text).map_err(|e| e.to_string()));
            match parsed {
                Ok(p) => {
                    let obs = Observed {
                        resolved: p.resolved.map(|(doc_hash, image)| Resolved { doc_hash, image }),
                        rolled_back: p.rolled_back.map(|(doc_hash, reason)| RolledBack { doc_hash, reason }),
                        ..Default::default()
                    };
                    out.insert(name.to_owned(), obs);
                }
                Err(err) => warn!(path = %path.display(), %err, "ignoring unreadable deployment state"),
            }
        }
        out
    }
}

/// The deployments directory under a state dir, where the executor persists what the plan needs.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("deployments")
}
