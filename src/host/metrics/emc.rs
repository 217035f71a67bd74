//! External memory controller (EMC) load and clock.

use super::*;

#[derive(Debug)]
pub(super) struct EmcFiles {
    pub(super) rate: PathBuf,
    pub(super) mc_all: Option<PathBuf>,
}

impl EmcFiles {
    /// debugfs reads fail without root: that is "unknown", not a warning. Garbage is warned.
    pub(super) fn read(&self, r: &mut Reader, w: &mut Vec<String>) -> Option<Emc> {
        let rate_hz = r.number::<u64>(&self.rate, w).ok().flatten();
        let mc_all = self.mc_all.as_ref().and_then(|p| r.number::<u64>(p, w).ok().flatten());
        let load_pct = match (mc_all, rate_hz) {
            (Some(mc), Some(rate)) if rate >= 1000 => {
                Some(round2((mc as f64 * 100.0 / (rate / 1000) as f64).min(100.0)))
            }
            _ => None,
        };
        (rate_hz.is_some() || load_pct.is_some()).then_some(Emc { rate_hz, load_pct })
    }
}
