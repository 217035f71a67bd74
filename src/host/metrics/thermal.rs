//! Thermal zones (/sys/class/thermal) and the temperature sensors of hwmon devices (an NVMe drive's, say).

use super::*;

#[derive(Debug)]
pub(super) struct ZoneFiles {
    pub(super) name: String,
    pub(super) temp: PathBuf,
}

/// Whether a thermal zone of this `type` measures a temperature. The PMIC's die zone on Xavier, TX2 and Nano
/// (`PMIC-Die`) reads a fixed 100 °C unless its alarm fires; jtop leaves it out for that reason.
pub fn zone_measures_temperature(name: &str) -> bool {
    !name.to_ascii_uppercase().starts_with("PMIC")
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
        ThermalZone { name: self.name.clone(), temp_c, measures_temperature: zone_measures_temperature(&self.name) }
    }
}

/// One `tempN_*` sensor of a hwmon device.
#[derive(Debug)]
pub(super) struct HwmonTempFiles {
    device: String,
    label: String,
    input: Option<PathBuf>,
    max: Option<PathBuf>,
    crit: Option<PathBuf>,
    min: Option<PathBuf>,
    alarms: Vec<PathBuf>,
}

/// The temperature sensors of one hwmon device: every N with a `tempN_input` or `tempN_label`, in N order.
pub(super) fn discover_hwmon_temps(device: &str, dir: &Path, reader: &mut Reader, out: &mut Vec<HwmonTempFiles>) {
    let mut ids: Vec<u32> = Vec::new();
    for (name, _) in sorted_entries(dir) {
        let Some(rest) = name.strip_prefix("temp") else { continue };
        let Some((n, kind)) = rest.split_once('_') else { continue };
        if (kind == "input" || kind == "label") && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = n.parse::<u32>() {
                if !ids.contains(&n) {
                    ids.push(n);
                }
            }
        }
    }
    ids.sort_unstable();
    for n in ids {
        let file = |suffix: &str| {
            let p = dir.join(format!("temp{n}_{suffix}"));
            p.symlink_metadata().is_ok().then_some(p)
        };
        let label = file("label")
            .and_then(|p| attr(reader, &p).ok())
            .filter(|l| !l.is_empty() && !l.chars().any(char::is_control))
            .unwrap_or_else(|| format!("temp{n}"));
        out.push(HwmonTempFiles {
            device: device.to_owned(),
            label,
            input: file("input"),
            max: file("max"),
            crit: file("crit"),
            min: file("min"),
            alarms: ["alarm", "crit_alarm"].iter().filter_map(|s| file(s)).collect(),
        });
    }
}

/// hwmon temperatures in m°C; the NVMe driver says "no threshold" with 0 K and 65535 K.
fn hwmon_celsius(milli: i64) -> Option<f64> {
    (milli > -273_150 && milli < 65_261_850).then(|| milli as f64 / 1000.0)
}

impl HwmonTempFiles {
    /// Unlike a thermal zone, a hwmon sensor that exists is expected to read: a failure is a warning.
    pub(super) fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> HwmonTemp {
        let mut temp =
            |p: &Path, r: &mut Reader, w: &mut Vec<String>| r.sysfs_number::<i64>(p, w, gone).and_then(hwmon_celsius);
        let temp_c = self.input.as_ref().and_then(|p| temp(p, r, w));
        let max_c = self.max.as_ref().and_then(|p| temp(p, r, w));
        let crit_c = self.crit.as_ref().and_then(|p| temp(p, r, w));
        let min_c = self.min.as_ref().and_then(|p| temp(p, r, w));
        let mut alarm = None;
        for p in &self.alarms {
            if let Some(on) = sysfs_flag(r, p, w, gone) {
                alarm = Some(alarm.unwrap_or(false) || on);
            }
        }
        HwmonTemp { device: self.device.clone(), label: self.label.clone(), temp_c, max_c, crit_c, min_c, alarm }
    }
}
