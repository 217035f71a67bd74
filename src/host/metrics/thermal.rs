//! Thermal zones (/sys/class/thermal).

use super::*;

#[derive(Debug)]
pub(super) struct ZoneFiles {
    pub(super) name: String,
    pub(super) temp: PathBuf,
}

pub(super) fn discover_zones(root: &Path, reader: &mut Reader, w: &mut Vec<String>) -> Vec<ZoneFiles> {
    let mut zones = Vec::new();
    for (name, dir) in sorted_entries(&under_root(root, "/sys/class/thermal")) {
        if !name.strip_prefix("thermal_zone").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let dir = resolved(dir);
        let type_path = dir.join("type");
        let zone_name = match attr(reader, &type_path) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => {
                w.push(format!("{}: empty zone type; using `{name}`", type_path.display()));
                name.clone()
            }
            Err(err) => {
                w.push(format!("{}: cannot read: {err}; using `{name}`", type_path.display()));
                name.clone()
            }
        };
        zones.push(ZoneFiles { name: zone_name, temp: dir.join("temp") });
    }
    zones
}

impl ZoneFiles {
    /// A zone whose sensor is off fails its read (EAGAIN for Orin's cv* zones, EINVAL or ENODATA elsewhere):
    /// any read error means "unavailable", not a problem to warn about. Garbage in a readable file is warned.
    pub(super) fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> ThermalZone {
        let temp_c = match r.number::<i64>(&self.temp, w) {
            Ok(v) => v.map(|milli| milli as f64 / 1000.0),
            Err(err) => {
                if err.kind() == io::ErrorKind::NotFound {
                    *gone = true;
                }
                None
            }
        };
        ThermalZone { name: self.name.clone(), temp_c }
    }
}
