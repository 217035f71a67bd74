//! External memory controller (EMC) load and clock.

use super::*;

#[derive(Debug)]
pub(super) struct EmcFiles {
    pub(super) rate: PathBuf,
    pub(super) mc_all: Option<PathBuf>,
    pub(super) max_rate: Option<PathBuf>,
    pub(super) min_rate: Option<PathBuf>,
}

/// The BPMP's EMC clock files and cactmon's activity counter. debugfs is root-only: without access the files
/// do not even appear to exist.
pub(super) fn discover_emc(root: &Path) -> Option<EmcFiles> {
    let file = |abs: &str| Some(under_root(root, abs)).filter(|p| p.is_file());
    Some(EmcFiles {
        rate: file("/sys/kernel/debug/bpmp/debug/clk/emc/rate")?,
        mc_all: file("/sys/kernel/debug/cactmon/mc_all"),
        max_rate: file("/sys/kernel/debug/bpmp/debug/clk/emc/max_rate"),
        min_rate: file("/sys/kernel/debug/bpmp/debug/clk/emc/min_rate"),
    })
}

impl EmcFiles {
    /// debugfs reads fail without root: that is "unknown", not a warning. Garbage is warned.
    pub(super) fn read(&self, r: &mut Reader, w: &mut Vec<String>) -> Option<Emc> {
        let mut number = |p: Option<&PathBuf>| p.and_then(|p| r.number::<u64>(p, w).ok().flatten());
        let rate_hz = number(Some(&self.rate));
        let mc_all = number(self.mc_all.as_ref());
        let max_rate_hz = number(self.max_rate.as_ref());
        let min_rate_hz = number(self.min_rate.as_ref());
        let load_pct = match (mc_all, rate_hz) {
            (Some(mc), Some(rate)) if rate >= 1000 => {
                Some(round2((mc as f64 * 100.0 / (rate / 1000) as f64).min(100.0)))
            }
            _ => None,
        };
        (rate_hz.is_some() || load_pct.is_some()).then_some(Emc { rate_hz, load_pct, max_rate_hz, min_rate_hz })
    }
}
