//! Power rails: INA3221 hwmon channels and the iio rails of older Jetsons.

use super::*;

#[derive(Debug)]
pub(super) enum RailFiles {
    /// hwmon ina3221 (JP5 and later): bus voltage and current, power computed.
    Hwmon { name: String, voltage: PathBuf, current: PathBuf, limits: Limits },
    /// iio ina3221x (R32): the driver's own power, plus voltage and current when present.
    Iio { name: String, power: PathBuf, voltage: Option<PathBuf>, current: Option<PathBuf>, limits: Limits },
}

/// A rail's current limits and alarm flags, where the driver has them.
#[derive(Debug, Default)]
pub(super) struct Limits {
    warn: Option<PathBuf>,
    crit: Option<PathBuf>,
    warn_alarm: Option<PathBuf>,
    crit_alarm: Option<PathBuf>,
}

fn existing(p: PathBuf) -> Option<PathBuf> {
    p.symlink_metadata().is_ok().then_some(p)
}

/// INA3221 rails, the fan PWM and tachometer, and every device's temperature sensors from /sys/class/hwmon.
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
        discover_hwmon_temps(&name, &dir, reader, &mut s.hwmon_temps);
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
        let limits = Limits {
            warn: existing(dir.join(format!("curr{ch}_max"))),
            crit: existing(dir.join(format!("curr{ch}_crit"))),
            warn_alarm: existing(dir.join(format!("curr{ch}_max_alarm"))),
            crit_alarm: existing(dir.join(format!("curr{ch}_crit_alarm"))),
        };
        s.rails.push(RailFiles::Hwmon { name: label, voltage, current, limits });
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
                    limits: Limits {
                        warn: opt(iio.join(format!("warn_current_limit_{ch}"))),
                        crit: opt(iio.join(format!("crit_current_limit_{ch}"))),
                        ..Limits::default()
                    },
                });
            }
        }
    }
    rails
}

impl Limits {
    fn read(&self, rail: &mut PowerRail, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) {
        rail.warn_limit_ma = self.warn.as_ref().and_then(|p| r.sysfs_number(p, w, gone));
        rail.crit_limit_ma = self.crit.as_ref().and_then(|p| r.sysfs_number(p, w, gone));
        rail.warn_alarm = self.warn_alarm.as_ref().and_then(|p| sysfs_flag(r, p, w, gone));
        rail.crit_alarm = self.crit_alarm.as_ref().and_then(|p| sysfs_flag(r, p, w, gone));
    }
}

impl RailFiles {
    pub(super) fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> Option<PowerRail> {
        let (mut rail, limits) = match self {
            RailFiles::Hwmon { name, voltage, current, limits } => {
                let mv = r.sysfs_number::<u64>(voltage, w, gone);
                let ma = r.sysfs_number::<u64>(current, w, gone);
                let rail = PowerRail {
                    name: name.clone(),
                    voltage_mv: mv,
                    current_ma: ma,
                    power_mw: mv?.saturating_mul(ma?) / 1000,
                    ..PowerRail::default()
                };
                (rail, limits)
            }
            RailFiles::Iio { name, power, voltage, current, limits } => {
                let mw = r.sysfs_number::<u64>(power, w, gone);
                let mv = voltage.as_ref().and_then(|p| r.sysfs_number(p, w, gone));
                let ma = current.as_ref().and_then(|p| r.sysfs_number(p, w, gone));
                let rail = PowerRail {
                    name: name.clone(),
                    voltage_mv: mv,
                    current_ma: ma,
                    power_mw: mw?,
                    ..PowerRail::default()
                };
                (rail, limits)
            }
        };
        limits.read(&mut rail, r, w, gone);
        rail.avg_mw = rail.power_mw;
        Some(rail)
    }
}

/// The module's input rail: `VDD_IN` (JP5 and later), `POM_5V_IN` (R32).
pub(super) fn input_rail(rails: &[PowerRail]) -> Option<&PowerRail> {
    rails.iter().find(|r| r.name == "VDD_IN" || r.name == "POM_5V_IN")
}

/// The total power: the input rail, which the other rails are part of; on boards without one (AGX Orin) the
/// sum of every rail reported, as jtop shows it. `None` without rails.
pub(super) fn power_total(rails: &[PowerRail]) -> Option<PowerTotal> {
    if let Some(r) = input_rail(rails) {
        return Some(PowerTotal { power_mw: r.power_mw, avg_mw: r.avg_mw, source: r.name.clone() });
    }
    if rails.is_empty() {
        return None;
    }
    Some(PowerTotal {
        power_mw: rails.iter().map(|r| r.power_mw).sum(),
        avg_mw: rails.iter().map(|r| r.avg_mw).sum(),
        source: POWER_TOTAL_SUM.to_owned(),
    })
}

/// Sets each rail's `avg_mw` to its mean power over every sample so far (`sums` holds, per rail name, the sum
/// and the count), like tegrastats' second figure.
pub(super) fn average_power(rails: &mut [PowerRail], sums: &mut Vec<(String, u128, u64)>) {
    for rail in rails {
        let i = match sums.iter().position(|(n, _, _)| *n == rail.name) {
            Some(i) => i,
            None => {
                sums.push((rail.name.clone(), 0, 0));
                sums.len() - 1
            }
        };
        let (_, sum, count) = &mut sums[i];
        *sum += u128::from(rail.power_mw);
        *count += 1;
        rail.avg_mw = u64::try_from(*sum / u128::from(*count)).unwrap_or(u64::MAX);
    }
}
