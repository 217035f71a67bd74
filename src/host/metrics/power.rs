//! Power rails: INA3221 hwmon channels and the iio rails of older Jetsons.

use super::*;

#[derive(Debug)]
pub(super) enum RailFiles {
    /// hwmon ina3221 (JP5 and later): bus voltage and current, power computed.
    Hwmon { name: String, voltage: PathBuf, current: PathBuf },
    /// iio ina3221x (R32): the driver's own power, plus voltage and current when present.
    Iio { name: String, power: PathBuf, voltage: Option<PathBuf>, current: Option<PathBuf> },
}

/// INA3221 rails, the fan PWM and the fan tachometer from /sys/class/hwmon.
pub(super) fn discover_hwmon(root: &Path, reader: &mut Reader, s: &mut Sources) {
    for (_, dir) in sorted_entries(&under_root(root, "/sys/class/hwmon")) {
        let dir = resolved(dir);
        let name_path = dir.join("name");
        let name = match attr(reader, &name_path) {
            Ok(n) => n,
            Err(err) => {
                s.warnings.push(format!("{}: cannot read: {err}; hwmon device skipped", name_path.display()));
                continue;
            }
        };
        match name.as_str() {
            "ina3221" => discover_ina3221_channels(&dir, reader, s),
            "pwmfan" => s.fan.get_or_insert_with(FanFiles::default).pwm = Some(dir.join("pwm1")),
            "pwm_tach" => s.fan.get_or_insert_with(FanFiles::default).rpm = Some(dir.join("rpm")),
            _ => {}
        }
    }
}

/// The labelled channels of one INA3221 hwmon device.
///
/// Skipped: labels containing `NC` (not connected), and the sum channel (channel 7, labelled "sum of shunt
/// voltages"): it adds up the other channels' shunt voltages, has no current of its own and is not a rail, so
/// reporting it would count the same power twice. The module's total is the VDD_IN rail.
pub(super) fn discover_ina3221_channels(dir: &Path, reader: &mut Reader, s: &mut Sources) {
    for ch in 1..=8u32 {
        let label_path = dir.join(format!("in{ch}_label"));
        let Ok(label) = attr(reader, &label_path) else {
            continue;
        };
        if label.contains("NC") || ch == 7 || label.to_ascii_lowercase().starts_with("sum of") {
            continue;
        }
        let voltage = dir.join(format!("in{ch}_input"));
        let current = dir.join(format!("curr{ch}_input"));
        if !voltage.is_file() || !current.is_file() {
            s.warnings
                .push(format!("{}: rail `{label}` has no in{ch}_input/curr{ch}_input; rail skipped", dir.display()));
            continue;
        }
        s.rails.push(RailFiles::Hwmon { name: label, voltage, current });
    }
}

/// R32's iio ina3221x rails: `rail_name_N` with `in_power{N}_input` (mW), `in_voltage{N}_input` (mV) and
/// `in_current{N}_input` (mA), under /sys/bus/i2c/devices/<dev>/iio:deviceM.
pub(super) fn discover_iio_rails(root: &Path, reader: &mut Reader, w: &mut Vec<String>) -> Vec<RailFiles> {
    let mut rails = Vec::new();
    for (_, dev) in sorted_entries(&under_root(root, "/sys/bus/i2c/devices")) {
        for (name, iio) in sorted_entries(&dev) {
            if !name.starts_with("iio:device") {
                continue;
            }
            let iio = resolved(iio);
            for ch in 0..8u32 {
                let label_path = iio.join(format!("rail_name_{ch}"));
                let Ok(label) = attr(reader, &label_path) else {
                    continue;
                };
                if label.contains("NC") || label.is_empty() {
                    continue;
                }
                let power = iio.join(format!("in_power{ch}_input"));
                if !power.is_file() {
                    w.push(format!("{}: rail `{label}` has no in_power{ch}_input; rail skipped", iio.display()));
                    continue;
                }
                let opt = |p: PathBuf| p.is_file().then_some(p);
                rails.push(RailFiles::Iio {
                    name: label,
                    power,
                    voltage: opt(iio.join(format!("in_voltage{ch}_input"))),
                    current: opt(iio.join(format!("in_current{ch}_input"))),
                });
            }
        }
    }
    rails
}

impl RailFiles {
    pub(super) fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> Option<PowerRail> {
        match self {
            RailFiles::Hwmon { name, voltage, current } => {
                let mv = r.sysfs_number::<u64>(voltage, w, gone);
                let ma = r.sysfs_number::<u64>(current, w, gone);
                Some(PowerRail {
                    name: name.clone(),
                    voltage_mv: mv,
                    current_ma: ma,
                    power_mw: mv?.saturating_mul(ma?) / 1000,
                })
            }
            RailFiles::Iio { name, power, voltage, current } => {
                let mw = r.sysfs_number::<u64>(power, w, gone);
                let mv = voltage.as_ref().and_then(|p| r.sysfs_number(p, w, gone));
                let ma = current.as_ref().and_then(|p| r.sysfs_number(p, w, gone));
                Some(PowerRail { name: name.clone(), voltage_mv: mv, current_ma: ma, power_mw: mw? })
            }
        }
    }
}
