//! A device's desired state: the documents of its groups overlaid by its own, and the store that keeps the last
//! valid document of each source under `<state_dir>/desired/` so a device that reboots without a broker still
//! knows what to run.
//!
//! Owns the overlay precedence and the store's files. It must not validate documents against the local policy
//! (`crate::deploy::policy`) or receive them over MQTT (`crate::link::mqtt`); it is handed documents that already passed both.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::deploy::document::{self, Document};

/// Where a document came from: the device's own `desired` topic or one of its groups'.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// `jetship/v1/<device>/desired`.
    Device,
    /// `jetship/v1/groups/<group>/desired`.
    Group(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device => f.write_str("device"),
            Self::Group(g) => write!(f, "group:{g}"),
        }
    }
}

impl Source {
    /// The store's file name: `device.json` or `group-<name>.json`.
    pub fn file_name(&self) -> String {
        match self {
            Self::Device => "device.json".into(),
            Self::Group(g) => format!("group-{g}.json"),
        }
    }

    /// The source a store file name stands for; `None` for other files (temp files, strays).
    pub(crate) fn from_file_name(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".json")?;
        if stem == "device" {
            return Some(Self::Device);
        }
        let group = stem.strip_prefix("group-")?;
        crate::base::valid_id(group).then(|| Self::Group(group.to_owned()))
    }
}

/// The overlaid desired state and where each part came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// The deployments to run. `generation` is the device document's (`None` without one); per-source
    /// generations are in `generations`.
    pub document: Document,
    /// The generation of each source's document.
    pub generations: BTreeMap<Source, Option<u64>>,
    /// The source each deployment was taken from.
    pub origin: BTreeMap<String, Source>,
}

/// Overlays documents: group documents in the order given (the order of `groups` in the agent config), each
/// replacing same-named deployments of the groups before it, then the device's own document, whose deployments
/// replace same-named group deployments whole (fields are never merged).
pub fn overlay(groups: &[(String, Document)], device: Option<&Document>) -> Document {
    overlay_with_origin(groups, device).document
}

/// [`overlay`], keeping the generations and the source of every deployment for `reported`.
pub(crate) fn overlay_with_origin(groups: &[(String, Document)], device: Option<&Document>) -> Overlay {
    let mut out = Overlay::default();
    let sources = groups.iter().map(|(g, d)| (Source::Group(g.clone()), d)).chain(device.map(|d| (Source::Device, d)));
    for (source, doc) in sources {
        out.generations.insert(source.clone(), doc.generation);
        for (name, d) in &doc.deployments {
            out.document.deployments.insert(name.clone(), d.clone());
            out.origin.insert(name.clone(), source.clone());
        }
    }
    out.document.generation = device.and_then(|d| d.generation);
    out
}

/// Errors of the store, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write desired state {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove desired state {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The last valid document of each source, as JSON files under `<state_dir>/desired/`.
#[derive(Debug, Clone)]
pub struct DesiredStore {
    dir: PathBuf,
}

/// What [`DesiredStore::load_all`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The valid documents by source.
    pub documents: BTreeMap<Source, Document>,
    /// One line per file that could not be read or is not a valid document (it is left in place, ignored).
    pub problems: Vec<String>,
}

impl DesiredStore {
    /// The store of the state dir `state_dir`. Nothing is created until the first save.
    pub fn new(state_dir: &Path) -> Self {
        Self { dir: state_dir.join("desired") }
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Persists `doc` as the last valid document of `source` (crash-safe: old or new, never half; sealed with a
    /// checksum and mirrored in `<file>.bak`, so one damaged copy is detected and the other used).
    pub fn save(&self, source: &Source, doc: &Document) -> Result<()> {
        let path = self.dir.join(source.file_name());
        let json = serde_json::to_vec(doc).expect("document serializes");
        crate::os::fsutil::write_mirrored(&path, &json).map_err(|source| Error::Write { path, source })
    }

    /// Forgets `source` (a group the device left). Absent is fine.
    pub fn remove(&self, source: &Source) -> Result<()> {
        let path = self.dir.join(source.file_name());
        crate::os::fsutil::remove_mirrored(&path)
            .and_then(|()| match crate::os::fsutil::sync_dir(&self.dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            })
            .map_err(|source| Error::Remove { path, source })
    }

    /// Loads every stored document. A missing folder is an empty store; an unreadable or invalid file is
    /// reported in [`Loaded::problems`] and skipped, never fatal.
    pub fn load_all(&self) -> Loaded {
        let mut out = Loaded::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
            Err(e) => {
                out.problems.push(format!("cannot list desired state {}: {e}", self.dir.display()));
                return out;
            }
        };
        // A source's file, or only its copy (the file itself lost).
        let mut sources: Vec<Source> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_owned();
                Source::from_file_name(name.strip_suffix(".bak").unwrap_or(&name))
            })
            .collect();
        sources.sort();
        sources.dedup();
        for source in sources {
            use crate::os::fsutil::{read_mirrored, MirrorRead};
            let path = self.dir.join(source.file_name());
            let subject = format!("desired/{}", source.file_name());
            let name = path.display().to_string();
            let check =
                |b: &[u8]| document::parse(b, Some(document::Format::Json), &name).map(drop).map_err(|e| e.to_string());
            let bytes = match read_mirrored(&path, document::MAX_DOCUMENT_BYTES as u64 + 128, check) {
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
                    tracing::warn!(path = %path.display(), %problem, "ignoring stored desired state");
                    crate::os::journal::note(
                        crate::base::Repair::new(
                            subject,
                            problem.clone(),
                            "ignored until the controller sends it again",
                        )
                        .lost(format!("the last {source} document")),
                    );
                    out.problems.push(format!("{name}: {problem}; ignored (the next valid document replaces it)"));
                    continue;
                }
            };
            match document::parse(&bytes, Some(document::Format::Json), &name) {
                Ok(doc) => {
                    out.documents.insert(source, doc);
                }
                Err(e) => out.problems.push(format!("{e}; ignored (the next valid document replaces it)")),
            }
        }
        out
    }

    /// The stored documents overlaid for a device in `groups` (config order); groups not listed are ignored.
    pub fn load_overlay(&self, groups: &[String]) -> (Overlay, Vec<String>) {
        let mut loaded = self.load_all();
        let group_docs: Vec<(String, Document)> = groups
            .iter()
            .filter_map(|g| loaded.documents.remove(&Source::Group(g.clone())).map(|d| (g.clone(), d)))
            .collect();
        let device = loaded.documents.remove(&Source::Device);
        (overlay_with_origin(&group_docs, device.as_ref()), loaded.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::document::Format;

    fn doc(text: &str) -> Document {
        document::parse(text.as_bytes(), Some(Format::Toml), "t.toml").unwrap()
    }

    #[test]
    fn device_replaces_group_deployments_whole_and_later_groups_win() {
        let lab = doc("generation = 3\n[deployments.app]\nimage = \"busybox:1\"\nenv = { A = \"lab\" }\n[deployments.mon]\nimage = \"busybox:mon\"\n");
        let cams = doc("generation = 9\n[deployments.app]\nimage = \"busybox:2\"\ngpu = true\n[deployments.cam]\nimage = \"busybox:cam\"\n");
        let dev = doc("generation = 5\n[deployments.cam]\nimage = \"busybox:mine\"\n");
        let groups = vec![("lab".to_string(), lab), ("cams".to_string(), cams)];
        let o = overlay_with_origin(&groups, Some(&dev));
        let d = &o.document.deployments;
        assert_eq!(d.keys().collect::<Vec<_>>(), ["app", "cam", "mon"]);
        assert_eq!(d["app"].image, "busybox:2");
        assert!(d["app"].env.0.is_empty(), "group documents are not merged field by field");
        assert_eq!(d["cam"].image, "busybox:mine");
        assert_eq!(d["cam"].gpu.0, None);
        assert_eq!(o.origin["app"], Source::Group("cams".into()));
        assert_eq!(o.origin["cam"], Source::Device);
        assert_eq!(o.origin["mon"], Source::Group("lab".into()));
        assert_eq!(o.document.generation, Some(5));
        assert_eq!(o.generations[&Source::Group("lab".into())], Some(3));
        assert_eq!(overlay(&groups, None).generation, None);
        assert_eq!(overlay(&groups, None).deployments["cam"].image, "busybox:cam");
        assert_eq!(overlay(&[], None), Document::default());
    }

    #[test]
    fn store_round_trips_and_skips_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = DesiredStore::new(dir.path());
        assert!(store.load_all().documents.is_empty(), "missing folder is an empty store");
        let dev = doc(
            "generation = 2\n[deployments.app]\nimage = \"busybox\"\n[deployments.app.health]\nrunning_for = \"5s\"\n",
        );
        let grp = doc("[deployments.mon]\nimage = \"busybox:mon\"\n");
        store.save(&Source::Device, &dev).unwrap();
        store.save(&Source::Group("lab".into()), &grp).unwrap();
        let broken = b"{\"deployments\": {\"x\": {\"imagee\": 1}}}";
        crate::os::fsutil::write_mirrored(&store.dir().join("group-broken.json"), broken).unwrap();
        std::fs::write(store.dir().join("group-trunc.json"), b"{\"deploym").unwrap();
        std::fs::write(store.dir().join("notes.txt"), b"ignored").unwrap();
        let loaded = store.load_all();
        assert_eq!(loaded.documents[&Source::Device], dev);
        assert_eq!(loaded.documents[&Source::Group("lab".into())], grp);
        assert_eq!(loaded.documents.len(), 2);
        assert_eq!(loaded.problems.len(), 2, "{:?}", loaded.problems);
        assert!(loaded.problems.iter().any(|p| p.contains("group-broken.json") && p.contains("imagee")));

        let (o, _) = store.load_overlay(&["lab".into(), "absent".into()]);
        assert_eq!(o.document.deployments.keys().collect::<Vec<_>>(), ["app", "mon"]);
        store.remove(&Source::Group("lab".into())).unwrap();
        store.remove(&Source::Group("lab".into())).unwrap();
        assert_eq!(store.load_all().documents.len(), 1);
    }

    #[test]
    fn a_torn_or_flipped_document_is_restored_from_its_copy_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = DesiredStore::new(dir.path());
        let dev = doc("generation = 4\n[deployments.app]\nimage = \"busybox:1\"\n");
        store.save(&Source::Device, &dev).unwrap();
        let path = store.dir().join("device.json");
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        assert_eq!(store.load_all().documents[&Source::Device], dev);
        let mut flipped = good.clone();
        let at = flipped.windows(7).position(|w| w == b"busybox").unwrap();
        flipped[at] ^= 0x01; // still valid JSON, another image: only the checksum tells
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(store.load_all().documents[&Source::Device], dev);
        let (repairs, _) = crate::os::journal::drain();
        assert_eq!(repairs.iter().filter(|r| r.subject == "desired/device.json").count(), 2, "{repairs:?}");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(store.load_all().documents[&Source::Device], dev, "the copy alone is enough");
    }

    #[test]
    fn source_file_names_round_trip() {
        for s in [Source::Device, Source::Group("lab-1".into())] {
            assert_eq!(Source::from_file_name(&s.file_name()), Some(s));
        }
        for other in ["group-.json", "group-a b.json", ".device.json.tmp-1", "device.toml"] {
            assert_eq!(Source::from_file_name(other), None, "{other}");
        }
        assert_eq!(Source::Group("lab".into()).to_string(), "group:lab");
    }
}
