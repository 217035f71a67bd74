//! CDI (Container Device Interface) specs: the typed form of the files `nvidia-ctk cdi generate` writes to
//! `/etc/cdi` and `/var/run/cdi`, their parsing (YAML or JSON) and the structural checks that make a broken
//! spec fail here, with the file named, instead of inside a container start.
//!
//! Pure parsing apart from [`load`] and [`find_specs`], which only read. Applying the edits to an OCI spec is a
//! later concern and does not live here; nor does checking device majors against the live /dev (they can
//! change across reboots on Jetson, so that check belongs right before use).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::os::fsutil::under_root;

/// The directories the CDI standard reads specs from, in priority order (later overrides earlier).
pub(crate) const SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// Largest spec file read. Generated Jetson specs are ~100 KiB; anything this big is not a CDI spec.
const MAX_SPEC_BYTES: u64 = 4 * 1024 * 1024;

/// Error loading or checking a CDI spec. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read CDI spec {path}: {source}")]
    Read {
        /// The spec file (host path).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than any CDI spec should be.
    #[error("CDI spec {path} is larger than {MAX_SPEC_BYTES} bytes: not a CDI spec; remove it or move it out of the CDI directory")]
    TooLarge {
        /// The spec file (host path).
        path: PathBuf,
    },
    /// The text is not YAML/JSON of the CDI spec's shape.
    #[error("CDI spec {path} cannot be parsed as {format}: {message}; regenerate it (e.g. `nvidia-ctk cdi generate --output={path}`) or remove it")]
    Syntax {
        /// The spec file (host path).
        path: PathBuf,
        /// `YAML` or `JSON`.
        format: &'static str,
        /// The parser's message, with line and column where it gives them.
        message: String,
    },
    /// The spec parsed but breaks a rule of the CDI standard.
    #[error("CDI spec {path} is invalid: {problem}; regenerate it (e.g. `nvidia-ctk cdi generate --output={path}`) or fix it by hand")]
    Invalid {
        /// The spec file (host path).
        path: PathBuf,
        /// What is wrong, with the field path (`devices[1].containerEdits.deviceNodes[0].path`).
        problem: String,
    },
}

/// Result of this module's fallible operations.
pub type Result<T> = std::result::Result<T, Error>;

/// The text format of a spec file, from its extension (the CDI standard reads only `.yaml` and `.json`; `.yml`
/// is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yaml` / `.yml`.
    Yaml,
    /// `.json`.
    Json,
}

impl Format {
    /// The format for a file name, or `None` for a file the CDI standard ignores.
    pub(crate) fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// A whole CDI spec file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Version of the CDI standard the file follows, e.g. `0.5.0`.
    pub cdi_version: String,
    /// `vendor/class`, e.g. `nvidia.com/gpu`; device names are qualified as `kind=name`.
    pub kind: String,
    /// Free-form annotations of the spec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The devices the spec declares (at least one).
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Edits applied for every device of this spec that a container gets.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// One device of a spec, e.g. `0` or `all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Name, unique within the spec; the container asks for `kind=name`.
    pub name: String,
    /// Free-form annotations of the device.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Edits applied when a container gets this device.
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// Changes to a container's OCI spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    /// `NAME=value` environment entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Device nodes to create in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
    /// OCI hooks to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<Hook>,
    /// Bind mounts to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Extra group ids for the container's process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_gids: Vec<u32>,
}

/// A device node to create in the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// Path in the container (and on the host when `host_path` is absent).
    pub path: String,
    /// Path on the host when it differs from `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `c` (char), `b` (block), `u` or `p`; taken from the host node when absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Device major number; taken from the host node when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    /// Device minor number; taken from the host node when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// File mode of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// Cgroup device permissions, a combination of `r`, `w`, `m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    /// Owner uid of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner gid of the node in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A mount to add to the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Source on the host.
    pub host_path: String,
    /// Target in the container.
    pub container_path: String,
    /// Mount type (`bind` when absent).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Mount options, e.g. `ro`, `nosuid`, `nodev`, `rbind`, `rprivate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// An OCI hook to add to the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// The OCI hook point: `prestart`, `createRuntime`, `createContainer`, `startContainer`, `poststart`,
    /// `poststop`.
    pub hook_name: String,
    /// Host path of the program.
    pub path: String,
    /// Full argv, including argv\[0\].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment of the hook process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Seconds before the runtime kills the hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// The OCI hook points a CDI hook may name.
const HOOK_NAMES: [&str; 6] =
    ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

impl Spec {
    /// The spec's device names, in file order.
    pub(crate) fn device_names(&self) -> Vec<String> {
        self.devices.iter().map(|d| d.name.clone()).collect()
    }

    /// The device called `name`, if declared.
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// Checks the rules of the CDI standard that a consumer relies on; returns the first problem with its field
    /// path.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if self.cdi_version.trim().is_empty() {
            return Err("`cdiVersion` is empty".into());
        }
        check_kind(&self.kind)?;
        if self.devices.is_empty() {
            return Err("`devices` is empty: a spec must declare at least one device".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, dev) in self.devices.iter().enumerate() {
            check_device_name(&dev.name).map_err(|e| format!("devices[{i}].name: {e}"))?;
            if !seen.insert(dev.name.as_str()) {
                return Err(format!("devices[{i}].name: `{}` is declared twice", dev.name));
            }
            dev.container_edits.validate(&format!("devices[{i}].containerEdits"))?;
        }
        self.container_edits.validate("containerEdits")
    }
}

impl ContainerEdits {
    /// Checks the edits; `at` is the field path used in messages.
    fn validate(&self, at: &str) -> std::result::Result<(), String> {
        for (i, e) in self.env.iter().enumerate() {
            match e.split_once('=') {
                Some((name, _)) if !name.is_empty() => {}
                _ => return Err(format!("{at}.env[{i}]: `{e}` is not NAME=value")),
            }
        }
        for (i, n) in self.device_nodes.iter().enumerate() {
            let at = format!("{at}.deviceNodes[{i}]");
            if !n.path.starts_with('/') {
                return Err(format!("{at}.path: `{}` is not an absolute path", n.path));
            }
            if let Some(h) = &n.host_path {
                if !h.starts_with('/') {
                    return Err(format!("{at}.hostPath: `{h}` is not an absolute path"));
                }
            }
            if let Some(t) = &n.kind {
                if !["c", "b", "u", "p"].contains(&t.as_str()) {
                    return Err(format!("{at}.type: `{t}` is not one of c, b, u, p"));
                }
            }
            if let Some(p) = &n.permissions {
                if p.is_empty() || !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                    return Err(format!("{at}.permissions: `{p}` is not a combination of r, w, m"));
                }
            }
            for (field, v) in [("major", n.major), ("minor", n.minor)] {
                if v.is_some_and(|v| v < 0) {
                    return Err(format!("{at}.{field}: must not be negative"));
                }
            }
        }
        for (i, m) in self.mounts.iter().enumerate() {
            if m.host_path.is_empty() {
                return Err(format!("{at}.mounts[{i}].hostPath is empty"));
            }
            if !m.container_path.starts_with('/') {
                return Err(format!("{at}.mounts[{i}].containerPath: `{}` is not an absolute path", m.container_path));
            }
        }
        for (i, h) in self.hooks.iter().enumerate() {
            if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
                return Err(format!(
                    "{at}.hooks[{i}].hookName: `{}` is not one of {}",
                    h.hook_name,
                    HOOK_NAMES.join(", ")
                ));
            }
            if !h.path.starts_with('/') {
                return Err(format!("{at}.hooks[{i}].path: `{}` is not an absolute path", h.path));
            }
        }
        Ok(())
    }
}

/// `vendor/class`: vendor a DNS-like name, class alphanumerics with `-`, `_`, `.`.
fn check_kind(kind: &str) -> std::result::Result<(), String> {
    let bad = |why: &str| Err(format!("kind `{kind}` {why} (expected vendor/class such as nvidia.com/gpu)"));
    let Some((vendor, class)) = kind.split_once('/') else {
        return bad("has no `/`");
    };
    let ok_chars = |s: &str, extra: &[char]| {
        !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    };
    if !ok_chars(vendor, &['-', '.']) {
        return bad("has an invalid vendor");
    }
    if !ok_chars(class, &['-', '_', '.']) {
        return bad("has an invalid class");
    }
    Ok(())
}

/// Device names: start alphanumeric, then alphanumerics and `_ . : -`.
fn check_device_name(name: &str) -> std::result::Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid device name (letters, digits, `_ . : -`)"))
    }
}

/// Parses and validates spec text. `path` only names the file in errors.
pub fn parse(text: &str, format: Format, path: &Path) -> Result<Spec> {
    let spec: Spec = match format {
        Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| Error::Syntax {
            path: path.to_owned(),
            format: "YAML",
            message: e.to_string(),
        })?,
        Format::Json => serde_json::from_str(text).map_err(|e| Error::Syntax {
            path: path.to_owned(),
            format: "JSON",
            message: e.to_string(),
        })?,
    };
    spec.validate().map_err(|problem| Error::Invalid { path: path.to_owned(), problem })?;
    Ok(spec)
}

/// Reads and parses one spec file. `file` is where to read (under the host root); `host_path` names it in
/// errors. Files without a `.yaml`/`.yml`/`.json` extension are read as YAML (a superset of JSON).
pub fn load(file: &Path, host_path: &Path) -> Result<Spec> {
    let read_err = |source| Error::Read { path: host_path.to_owned(), source };
    if !std::fs::metadata(file).map_err(read_err)?.is_file() {
        // A FIFO or device here would block or misbehave when read.
        return Err(read_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
    }
    let mut buf = Vec::new();
    File::open(file).map_err(read_err)?.take(MAX_SPEC_BYTES + 1).read_to_end(&mut buf).map_err(read_err)?;
    if buf.len() as u64 > MAX_SPEC_BYTES {
        return Err(Error::TooLarge { path: host_path.to_owned() });
    }
    let text = String::from_utf8(buf).map_err(|e| Error::Syntax {
        path: host_path.to_owned(),
        format: "UTF-8 text",
        message: format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
    })?;
    parse(&text, Format::from_path(file).unwrap_or(Format::Yaml), host_path)
}

/// A spec file found on the host: its host path and the parse result.
#[derive(Debug)]
pub struct FoundSpec {
    /// Host path, e.g. `/etc/cdi/nvidia.yaml`.
    pub path: PathBuf,
    /// The parsed spec, or why it could not be used.
    pub spec: Result<Spec>,
}

/// Every `.yaml`/`.yml`/`.json` file in the CDI spec directories under `root`, in directory priority then name
/// order, parsed. Missing directories are normal (no CDI on this host).
pub fn find_specs(root: &Path) -> Vec<FoundSpec> {
    let mut found = Vec::new();
    for dir in SPEC_DIRS {
        let Ok(entries) = std::fs::read_dir(under_root(root, dir)) else {
            continue;
        };
        let mut names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            // A name that is not UTF-8 could not be reported in JSON; the CDI tools write ASCII names.
            .filter(|n| n.to_str().is_some() && Format::from_path(Path::new(n)).is_some())
            .collect();
        names.sort();
        for name in names {
            let host_path = Path::new(dir).join(&name);
            let file = under_root(root, dir).join(&name);
            if file.is_dir() {
                continue;
            }
            found.push(FoundSpec { spec: load(&file, &host_path), path: host_path });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const JETSON_YAML: &str = r#"---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
    - path: /dev/nvgpu/igpu0/ctrl
      hostPath: /dev/nvgpu/igpu0/ctrl
      type: c
      major: 507
      minor: 0
      permissions: rw
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvmap
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args:
    - nvidia-cdi-hook
    - update-ldcache
    - --folder
    - /usr/lib/aarch64-linux-gnu/nvidia
  mounts:
  - hostPath: /usr/lib/aarch64-linux-gnu/nvidia/libcuda.so.1.1
    containerPath: /usr/lib/aarch64-linux-gnu/nvidia/libcuda.so.1.1
    options:
    - ro
    - nosuid
    - nodev
    - rbind
    - rprivate
"#;

    fn p() -> &'static Path {
        Path::new("/etc/cdi/nvidia.yaml")
    }

    #[test]
    fn parses_generated_jetson_yaml_with_every_edit() {
        let spec = parse(JETSON_YAML, Format::Yaml, p()).unwrap();
        assert_eq!(spec.cdi_version, "0.5.0");
        assert_eq!(spec.kind, "nvidia.com/gpu");
        assert_eq!(spec.device_names(), ["0", "all"]);
        let node = &spec.device("0").unwrap().container_edits.device_nodes[1];
        assert_eq!(node.host_path.as_deref(), Some("/dev/nvgpu/igpu0/ctrl"));
        assert_eq!((node.kind.as_deref(), node.major, node.minor), (Some("c"), Some(507), Some(0)));
        assert_eq!(node.permissions.as_deref(), Some("rw"));
        let edits = &spec.container_edits;
        assert_eq!(edits.env, ["NVIDIA_VISIBLE_DEVICES=void"]);
        assert_eq!(edits.hooks[0].hook_name, "createContainer");
        assert_eq!(edits.hooks[0].args[1], "update-ldcache");
        assert_eq!(edits.mounts[0].options, ["ro", "nosuid", "nodev", "rbind", "rprivate"]);
        assert_eq!(edits.mounts[0].kind, None);
    }

    #[test]
    fn json_and_yaml_give_the_same_spec() {
        let yaml = parse(JETSON_YAML, Format::Yaml, p()).unwrap();
        let json = serde_json::to_string(&yaml).unwrap();
        assert!(
            json.contains("\"containerEdits\"") && json.contains("\"hostPath\"") && json.contains("\"type\":\"c\""),
            "{json}"
        );
        assert_eq!(parse(&json, Format::Json, Path::new("/etc/cdi/nvidia.json")).unwrap(), yaml);
    }

    #[test]
    fn yaml_syntax_error_names_file_and_line() {
        let err = parse("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: [unclosed\n", Format::Yaml, p())
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Syntax { format: "YAML", .. }), "{err:?}");
        assert!(msg.contains("/etc/cdi/nvidia.yaml") && msg.contains("line"), "{msg}");
        assert!(msg.contains("regenerate"), "{msg}");
    }

    #[test]
    fn wrong_shapes_are_syntax_errors() {
        for text in [
            "",
            "just a string",
            "cdiVersion: 0.5.0\n",
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: 7\n",
            "\u{0}\u{1}garbage",
        ] {
            let err = parse(text, Format::Yaml, p()).unwrap_err();
            assert!(matches!(err, Error::Syntax { .. }), "{text:?}: {err:?}");
        }
        let err = parse("{\"cdiVersion\": \"0.5.0\",", Format::Json, Path::new("/var/run/cdi/x.json")).unwrap_err();
        assert!(err.to_string().contains("/var/run/cdi/x.json") && err.to_string().contains("JSON"), "{err}");
    }

    #[test]
    fn rule_violations_name_the_field() {
        let base = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\n";
        let cases = [
            ("cdiVersion: 0.5.0\nkind: gpu\ndevices:\n- name: a\n", "kind `gpu`"),
            (&format!("{base}devices: []\n") as &str, "`devices` is empty"),
            (&format!("{base}devices:\n- name: a\n- name: a\n"), "devices[1].name"),
            (&format!("{base}devices:\n- name: '-bad'\n"), "devices[0].name"),
            (&format!("{base}devices:\n- name: a\n  containerEdits:\n    deviceNodes:\n    - path: dev/x\n"), "devices[0].containerEdits.deviceNodes[0].path"),
            (&format!("{base}devices:\n- name: a\n  containerEdits:\n    deviceNodes:\n    - path: /dev/x\n      type: z\n"), ".type"),
            (&format!("{base}devices:\n- name: a\n  containerEdits:\n    deviceNodes:\n    - path: /dev/x\n      permissions: rx\n"), ".permissions"),
            (&format!("{base}devices:\n- name: a\ncontainerEdits:\n  env: [NOEQUALS]\n"), "containerEdits.env[0]"),
            (&format!("{base}devices:\n- name: a\ncontainerEdits:\n  mounts:\n  - hostPath: /a\n    containerPath: rel\n"), "containerEdits.mounts[0].containerPath"),
            (&format!("{base}devices:\n- name: a\ncontainerEdits:\n  hooks:\n  - hookName: beforeLunch\n    path: /bin/true\n"), "containerEdits.hooks[0].hookName"),
        ];
        for (text, want) in cases {
            let err = parse(text, Format::Yaml, p()).unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{text}: {err:?}");
            assert!(err.to_string().contains(want), "{text}: {err} lacks {want}");
        }
    }

    #[test]
    fn load_rejects_non_utf8_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin.yaml");
        std::fs::write(&bin, [b'k', 0xff, 0xfe]).unwrap();
        assert!(matches!(load(&bin, Path::new("/etc/cdi/bin.yaml")), Err(Error::Syntax { .. })));
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; MAX_SPEC_BYTES as usize + 1]).unwrap();
        assert!(matches!(load(&big, Path::new("/etc/cdi/big.yaml")), Err(Error::TooLarge { .. })));
        let missing = load(&dir.path().join("none.yaml"), Path::new("/etc/cdi/none.yaml")).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read CDI spec /etc/cdi/none.yaml"), "{missing}");
    }

    #[test]
    fn find_specs_reads_both_dirs_and_ignores_other_files() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/cdi")).unwrap();
        std::fs::create_dir_all(root.path().join("var/run/cdi")).unwrap();
        std::fs::write(root.path().join("etc/cdi/nvidia.yaml"), JETSON_YAML).unwrap();
        std::fs::write(root.path().join("etc/cdi/README"), "not a spec").unwrap();
        std::fs::write(root.path().join("var/run/cdi/broken.json"), "{").unwrap();
        let found = find_specs(root.path());
        let paths: Vec<_> = found.iter().map(|f| f.path.to_str().unwrap()).collect();
        assert_eq!(paths, ["/etc/cdi/nvidia.yaml", "/var/run/cdi/broken.json"]);
        assert!(found[0].spec.is_ok());
        assert!(found[1].spec.is_err());
    }
}
