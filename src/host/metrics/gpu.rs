//! GPU load and clocks from the integrated GPU's devfreq node.

use super::*;

/// devfreq `of_node` names of Jetson integrated GPUs (Xavier, TX2/Nano-class, Orin, Thor, Nano/TX1).
pub(super) const GPU_OF_NODE_NAMES: [&str; 5] = ["gv11b", "gp10b", "ga10b", "gb10b", "gpu"];

#[derive(Debug)]
pub(super) struct GpuFiles {
    pub(super) load: Option<PathBuf>,
    pub(super) cur: PathBuf,
    pub(super) min: PathBuf,
    pub(super) max: PathBuf,
}

/// The devfreq node whose device's device-tree node is a Jetson GPU.
pub(super) fn discover_gpu(root: &Path, reader: &mut Reader) -> Option<GpuFiles> {
    for (_, node) in sorted_entries(&under_root(root, "/sys/class/devfreq")) {
        let Ok(of_name) = attr(reader, &node.join("device/of_node/name")) else {
            continue;
        };
        if !GPU_OF_NODE_NAMES.contains(&of_name.as_str()) {
            continue;
        }
        let node = resolved(node);
        let load = resolved(node.join("device")).join("load");
        return Some(GpuFiles {
            load: load.is_file().then_some(load),
            cur: node.join("cur_freq"),
            min: node.join("min_freq"),
            max: node.join("max_freq"),
        });
    }
    None
}

// ---------------------------------------------------------------------------------------------------------
// sysfs per-sample reads

impl GpuFiles {
    pub(super) fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> Gpu {
        Gpu {
            load_pct: self
                .load
                .as_ref()
                .and_then(|p| r.sysfs_number::<u64>(p, w, gone))
                .map(|permille| round2(permille as f64 / 10.0)),
            cur_freq_hz: r.sysfs_number(&self.cur, w, gone),
            min_freq_hz: r.sysfs_number(&self.min, w, gone),
            max_freq_hz: r.sysfs_number(&self.max, w, gone),
        }
    }
}
