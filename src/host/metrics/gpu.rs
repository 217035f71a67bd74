//! GPU load, clocks and gating from the integrated GPU's devfreq node and its device directory.

use super::*;

/// devfreq `of_node` names of Jetson integrated GPUs (Xavier, TX2/Nano-class, Orin, Thor, Nano/TX1).
pub(super) const GPU_OF_NODE_NAMES: [&str; 5] = ["gv11b", "gp10b", "ga10b", "gb10b", "gpu"];

#[derive(Debug)]
pub(super) struct GpuFiles {
    pub(super) name: String,
    pub(super) load: Option<PathBuf>,
    pub(super) cur: PathBuf,
    pub(super) min: PathBuf,
    pub(super) max: PathBuf,
    pub(super) governor: Option<PathBuf>,
    pub(super) railgate: Option<PathBuf>,
    pub(super) scaling_3d: Option<PathBuf>,
    /// debugfs `nafll_gpcN/pto_counter` (Orin; root only), in N order.
    pub(super) gpc: Vec<PathBuf>,
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
        let device = resolved(node.join("device"));
        let file = |p: PathBuf| p.is_file().then_some(p);
        let gpc = (0..8)
            .map(|n| under_root(root, &format!("/sys/kernel/debug/bpmp/debug/clk/nafll_gpc{n}/pto_counter")))
            .take_while(|p| p.is_file())
            .collect();
        return Some(GpuFiles {
            name: of_name,
            load: file(device.join("load")),
            cur: node.join("cur_freq"),
            min: node.join("min_freq"),
            max: node.join("max_freq"),
            governor: file(node.join("governor")),
            railgate: file(device.join("railgate_enable")),
            scaling_3d: file(device.join("enable_3d_scaling")),
            gpc,
        });
    }
    None
}

// ---------------------------------------------------------------------------------------------------------
// sysfs per-sample reads

impl GpuFiles {
    pub(super) fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> Gpu {
        let flag = |p: &Option<PathBuf>, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool| {
            p.as_ref().and_then(|p| sysfs_flag(r, p, w, gone))
        };
        Gpu {
            load_pct: self
                .load
                .as_ref()
                .and_then(|p| r.sysfs_number::<u64>(p, w, gone))
                .map(|permille| round2(permille as f64 / 10.0)),
            cur_freq_hz: r.sysfs_number(&self.cur, w, gone),
            min_freq_hz: r.sysfs_number(&self.min, w, gone),
            max_freq_hz: r.sysfs_number(&self.max, w, gone),
            name: Some(self.name.clone()),
            governor: self.governor.as_ref().and_then(|p| word_attr(r, p, w)),
            railgate: flag(&self.railgate, r, w, gone),
            scaling_3d: flag(&self.scaling_3d, r, w, gone),
            gpc_freq_hz: self.gpc.iter().filter_map(|p| r.sysfs_number::<u64>(p, w, gone)).collect(),
        }
    }
}
