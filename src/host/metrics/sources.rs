//! The sysfs files the sampler reads, discovered once and again when one disappears.

use super::*;

// ---------------------------------------------------------------------------------------------------------
// sysfs discovery

/// The sysfs and debugfs files found by discovery.
#[derive(Debug, Default)]
pub(super) struct Sources {
    pub(super) cores: CoreFiles,
    pub(super) gpu: Option<GpuFiles>,
    pub(super) zones: Vec<ZoneFiles>,
    pub(super) hwmon_temps: Vec<HwmonTempFiles>,
    pub(super) rails: Vec<RailFiles>,
    pub(super) fan: Option<FanFiles>,
    pub(super) power_mode: Option<PowerModeFiles>,
    pub(super) emc: Option<EmcFiles>,
    pub(super) engines: Vec<EngineFiles>,
    /// Problems found during discovery; repeated in every sample until the layout is discovered again.
    pub(super) warnings: Vec<String>,
}

/// Entries of a directory sorted by the number at the end of their name (hwmon2 before hwmon10), then name.
pub(super) fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> =
        rd.filter_map(|e| e.ok()).map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())).collect();
    v.sort_by_key(|(n, _)| (trailing_number(n), n.clone()));
    v
}

pub(super) fn trailing_number(name: &str) -> u64 {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[name.len() - digits..].parse().unwrap_or(0)
}

/// A sysfs attribute's text without the trailing newline or NUL (device-tree strings end in NUL).
pub(super) fn attr(reader: &mut Reader, path: &Path) -> io::Result<String> {
    Ok(reader.text(path)?.trim_matches(|c: char| c.is_whitespace() || c == '\0').to_string())
}

/// The real path behind sysfs class symlinks, so each sample's open does not walk them again.
pub(super) fn resolved(path: PathBuf) -> PathBuf {
    fs::canonicalize(&path).unwrap_or(path)
}

impl Sources {
    pub(super) fn discover(root: &Path, reader: &mut Reader) -> Sources {
        let mut s = Sources { cores: discover_cores(root), ..Sources::default() };
        s.gpu = discover_gpu(root, reader);
        s.zones = discover_zones(root, reader, &mut s.warnings);
        discover_hwmon(root, reader, &mut s);
        if s.rails.is_empty() {
            s.rails = discover_iio_rails(root, reader, &mut s.warnings);
        }
        s.power_mode = discover_power_mode(root, reader, &mut s.warnings);
        s.emc = discover_emc(root);
        s.engines = discover_engines(root);
        tracing::debug!(
            gpu = s.gpu.is_some(),
            zones = s.zones.len(),
            rails = s.rails.len(),
            fan = s.fan.is_some(),
            power_mode = s.power_mode.is_some(),
            emc = s.emc.is_some(),
            engines = s.engines.len(),
            cores = s.cores.len(),
            "metrics sources discovered"
        );
        s
    }
}
