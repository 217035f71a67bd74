//! Fan PWM and tachometer (hwmon).

use super::*;

#[derive(Debug, Default)]
pub(super) struct FanFiles {
    pub(super) pwm: Option<PathBuf>,
    pub(super) rpm: Option<PathBuf>,
}

impl FanFiles {
    pub(super) fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> Fan {
        Fan {
            pwm: self.pwm.as_ref().and_then(|p| r.sysfs_number(p, w, gone)),
            rpm: self.rpm.as_ref().and_then(|p| r.sysfs_number(p, w, gone)),
        }
    }
}
