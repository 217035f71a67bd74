//! What the plan needs across agent restarts (resolved digests, rolled-back versions, the restart book and the
//! last exit code): one small file per deployment under `<state_dir>/deployments/`, written atomically with a
//! mirror copy (`<name>.json.bak`), so a device that lost one copy still runs the digest it resolved without
//! asking a registry, and a restarted agent reports the same restart count and continues the backoff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Error, Result};
use chrono::{DateTime, Utc};

use crate::deploy::plan::{Observed, Resolved, RestartBook, RolledBack, Time};

/// What the plan needs of a deployment after an agent restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Persisted {
    resolved: Option<(String, String)>,
    rolled_back: Option<(String, String)>,
    /// Absent in files written before restart state was kept: the book then starts from zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restart: Option<PersistedRestart>,
}

/// The restart book on disk: the scheduled restart as a wall-clock time, since the executor's monotonic
/// [`Time`] starts again at every agent start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PersistedRestart {
    restarts: u32,
    consecutive: u32,
    next_at: Option<DateTime<Utc>>,
    last_exit: Option<i32>,
}

/// A deployment's state as loaded: what goes into [`Observed`] and the last exit code for the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Loaded {
    pub(super) observed: Observed,
    pub(super) last_exit: Option<i32>,
}

/// The clocks a save or load converts between: the executor's monotonic `now` and the wall clock at that
/// moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) now: Time,
    pub(super) wall: DateTime<Utc>,
}

impl Clock {
    fn to_wall(self, at: Time) -> DateTime<Utc> {
        let ahead = chrono::Duration::from_std(at.saturating_sub(self.now)).unwrap_or(chrono::Duration::zero());
        self.wall + ahead
    }

    /// A wall-clock time on the monotonic scale; a time already past is `now` (due at once). A wall clock that
    /// jumped far ahead cannot delay it beyond `cap`.
    fn to_mono(self, at: DateTime<Utc>, cap: std::time::Duration) -> Time {
        self.now + (at - self.wall).to_std().unwrap_or_default().min(cap)
    }
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

    pub(super) fn save(&self, name: &str, obs: &Observed, last_exit: Option<i32>, clock: Clock) -> Result<()> {
        let book = &obs.restart;
        let restart = (*book != RestartBook::default() || last_exit.is_some()).then(|| PersistedRestart {
            restarts: book.restarts,
            consecutive: book.consecutive,
            next_at: book.next_at.map(|at| clock.to_wall(at)),
            last_exit,
        });
        let p = Persisted {
            resolved: obs.resolved.as_ref().map(|r| (r.doc_hash.clone(), r.image.clone())),
            rolled_back: obs.rolled_back.as_ref().map(|r| (r.doc_hash.clone(), r.reason.clone())),
            restart,
        };
        let path = self.path(name);
        let store = |source| Error::Store { path: path.clone(), source };
        std::fs::create_dir_all(&self.dir).map_err(store)?;
        let json = serde_json::to_vec(&p).expect("persisted state serializes");
        crate::os::fsutil::write_mirrored(&path, &json).map_err(store)
    }

    pub(super) fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        crate::os::fsutil::remove_mirrored(&path).map_err(|source| Error::Store { path, source })
    }

    /// Every deployment's persisted state; unreadable files are reported and skipped (the deployment is then
    /// resolved again). A scheduled restart is placed on `clock`'s monotonic scale, at most `cap` ahead.
    pub(super) fn load(&self, clock: Clock, cap: std::time::Duration) -> BTreeMap<String, Loaded> {
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return out };
        // A deployment's file or only its copy (the file itself lost).
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.to_owned();
                let stem = n.strip_suffix(".json.bak").or_else(|| n.strip_suffix(".json"))?;
                crate::base::valid_id(stem).then(|| stem.to_owned())
            })
            .collect();
        names.sort();
        names.dedup();
        for name in &names {
            let path = self.path(name);
            use crate::os::fsutil::{read_mirrored, MirrorRead};
            let check = |b: &[u8]| serde_json::from_slice::<Persisted>(b).map(drop).map_err(|e| e.to_string());
            let subject = format!("deployments/{name}.json");
            let bytes = match read_mirrored(&path, 64 * 1024, check) {
                MirrorRead::Sound { bytes, copy_problem } => {
                    if let Some(problem) = copy_problem {
                        crate::os::journal::note(crate::base::Repair::new(
                            format!("{subject}.bak"),
                            problem,
                            "rewritten from the file",
                        ));
                    }
                    bytes
                }
                MirrorRead::Restored { bytes, problem } => {
                    crate::os::journal::note(crate::base::Repair::new(subject, problem, "restored from its copy"));
                    bytes
                }
                MirrorRead::Missing => continue,
                MirrorRead::Damaged { problem } => {
                    warn!(path = %path.display(), %problem, "ignoring unreadable deployment state");
                    let _ = crate::os::fsutil::remove_mirrored(&path);
                    crate::os::journal::note(
                        crate::base::Repair::new(subject, problem, "removed; the image is resolved again")
                            .lost("the resolved digest, any rollback and the restart count of this deployment"),
                    );
                    continue;
                }
            };
            let Ok(p) = serde_json::from_slice::<Persisted>(&bytes) else { continue };
            let restart = p.restart.unwrap_or_default();
            let observed = Observed {
                resolved: p.resolved.map(|(doc_hash, image)| Resolved { doc_hash, image }),
                rolled_back: p.rolled_back.map(|(doc_hash, reason)| RolledBack { doc_hash, reason }),
                restart: RestartBook {
                    restarts: restart.restarts,
                    consecutive: restart.consecutive,
                    next_at: restart.next_at.map(|at| clock.to_mono(at, cap)),
                },
                ..Default::default()
            };
            out.insert(name.to_owned(), Loaded { observed, last_exit: restart.last_exit });
        }
        out
    }
}

/// The restart count the agent recorded for `deployment` under `state_dir` (what `reported` shows), for
/// `jetship ps`; `None` without a readable record.
pub fn recorded_restarts(state_dir: &Path, deployment: &str) -> Option<u32> {
    if !crate::base::valid_id(deployment) {
        return None;
    }
    let path = state_path(state_dir).join(format!("{deployment}.json"));
    let check = |b: &[u8]| serde_json::from_slice::<Persisted>(b).map(drop).map_err(|e| e.to_string());
    match crate::os::fsutil::read_mirrored(&path, 64 * 1024, check) {
        crate::os::fsutil::MirrorRead::Sound { bytes, .. } | crate::os::fsutil::MirrorRead::Restored { bytes, .. } => {
            let p: Persisted = serde_json::from_slice(&bytes).ok()?;
            Some(p.restart.map_or(0, |r| r.restarts))
        }
        _ => None,
    }
}

/// The deployments directory under a state dir, where the executor persists what the plan needs.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("deployments")
}
