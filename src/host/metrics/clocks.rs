//! Whether jetson_clocks is on, told from sysfs alone (no process is spawned): jetson_clocks pins every clock
//! at its maximum, so the minimum the governors may pick equals the maximum.

use super::*;

/// On when every online core's `scaling_min_freq` equals its `scaling_max_freq`, the GPU's devfreq
/// `min_freq` equals `max_freq`, and (where the EMC's debugfs is readable) the EMC `rate` equals `max_rate`.
/// Any unpinned clock makes it off; a value that cannot be read makes it unknown (`None`) unless another clock
/// already says off. Without a Jetson GPU there is no jetson_clocks: `None`.
pub(super) fn jetson_clocks_on(cores: &[CpuCore], gpu: Option<&Gpu>, emc: Option<&Emc>) -> Option<bool> {
    let gpu = gpu?;
    let pinned = |lo: Option<u64>, hi: Option<u64>| Some(lo? == hi?);
    let mut checks = vec![pinned(gpu.min_freq_hz, gpu.max_freq_hz)];
    let online: Vec<&CpuCore> = cores.iter().filter(|c| c.online).collect();
    if online.is_empty() {
        checks.push(None);
    }
    checks.extend(online.iter().map(|c| pinned(c.min_freq_hz, c.max_freq_hz)));
    if let Some(e) = emc.filter(|e| e.rate_hz.is_some() && e.max_rate_hz.is_some()) {
        checks.push(pinned(e.rate_hz, e.max_rate_hz));
    }
    if checks.contains(&Some(false)) {
        Some(false)
    } else if checks.contains(&None) {
        None
    } else {
        Some(true)
    }
}
