//! The metrics sampler: what tegrastats and jtop show (CPU load and per-core clocks, memory and the GPU's share
//! of it, GPU load, clocks and gating, thermal zones and hwmon temperatures, power rails with their limits and
//! the total, fan, power mode, EMC, the engines' clocks, whether jetson_clocks is on) plus disk, network and
//! load, read straight from procfs, sysfs and debugfs under the host root. No process is spawned per sample.
//!
//! The sampler keeps the previous counters (CPU jiffies, network bytes) to turn them into rates; it never
//! writes anything and never fails as a whole: an unreadable source leaves its field empty and adds a warning
//! naming the file. It must not touch anything outside the host root except the state dir's file system
//! (statvfs), and it owns no config.
//!
//! Cost: the sysfs layout (GPU devfreq node, thermal zones, hwmon devices, INA3221 channels, EMC files) is
//! discovered once, on the first sample, and discovered again only when a cached file disappears (a driver
//! reload renumbers hwmonN). Each sample then reads only the small files it needs into one reused buffer.
//!
//! Why procfs is parsed here and not with `procfs-core`: its parsers are all-or-nothing (`Meminfo` needs some
//! twenty fields and fails on a minimal or truncated file, `KernelStats` fails on one short line) and allocate
//! maps per parse, while this sampler must give partial results with a warning per broken line and stay
//! allocation-light at one sample a second. The formats read here (/proc/stat, meminfo, loadavg, uptime,
//! net/dev) are a few whitespace-separated lines each. `sysinfo` is not used because it cannot be pointed at a
//! host root (fixtures, or a containerised agent reading the host's /proc mounted elsewhere).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::os::fsutil::under_root;

mod clocks;
mod cpu;
mod cpufreq;
mod disk;
mod emc;
mod engines;
mod fan;
mod gpu;
mod load;
mod memory;
mod net;
mod power;
mod power_mode;
mod read;
mod sources;
mod text;
mod thermal;

use clocks::*;
use cpu::*;
use cpufreq::*;
use disk::*;
use emc::*;
use engines::*;
use fan::*;
use gpu::*;
use load::*;
use memory::*;
use net::*;
use power::*;
use power_mode::*;
pub use power_mode::{parse_nvpmodel_conf, parse_nvpmodel_default, parse_nvpmodel_status};
use read::*;
use sources::*;
pub use thermal::zone_measures_temperature;
use thermal::*;

/// One metrics sample. Field names are a public contract (telemetry payload, `jetship metrics --json`):
/// see docs/metrics.md. Fields added after the first release carry `#[serde(default)]` so a newer controller
/// reads an older agent's telemetry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time of the sample in milliseconds.
    pub ts_ms: u64,
    /// CPU busy percentages, from /proc/stat.
    pub cpu: Option<Cpu>,
    /// Every core under /sys/devices/system/cpu with its id, online state, governor and clocks.
    #[serde(default)]
    pub cpu_cores: Vec<CpuCore>,
    /// RAM, from /proc/meminfo. On Jetson the GPU shares it.
    pub memory: Option<Memory>,
    /// Swap (zram included), from /proc/meminfo.
    pub swap: Option<Swap>,
    /// The file system holding the state dir (images, layers, logs).
    pub disk: Option<Disk>,
    /// Network interfaces from /proc/net/dev, loopback left out.
    pub net: Vec<NetIf>,
    /// Load average over 1, 5 and 15 minutes.
    pub load: Option<[f64; 3]>,
    /// Seconds since boot.
    pub uptime_s: Option<f64>,
    /// The integrated GPU (Jetson only).
    pub gpu: Option<Gpu>,
    /// Every thermal zone, in zone number order.
    pub thermal: Vec<ThermalZone>,
    /// Temperature sensors of hwmon devices (an NVMe drive's, for instance), in device and sensor order.
    #[serde(default)]
    pub hwmon_temps: Vec<HwmonTemp>,
    /// INA3221 power rails (Jetson only), in device and channel order.
    pub power: Vec<PowerRail>,
    /// The module's total power: the input rail, or the sum of the rails where the board has none.
    #[serde(default)]
    pub power_total: Option<PowerTotal>,
    /// Fan duty and speed (Jetson boards with a pwm-fan).
    pub fan: Option<Fan>,
    /// The nvpmodel power mode.
    pub power_mode: Option<PowerMode>,
    /// External memory controller clock and load (debugfs: root only).
    pub emc: Option<Emc>,
    /// The hardware engines (NVDEC, NVENC, NVJPG, VIC, DLA, PVA, APE, ...) and their clocks (debugfs: root only).
    #[serde(default)]
    pub engines: Vec<Engine>,
    /// Whether jetson_clocks has pinned the clocks at their maximum; `None` when it cannot be told.
    #[serde(default)]
    pub jetson_clocks: Option<bool>,
    /// Problems met while sampling, each naming the file; the matching field is left empty.
    pub warnings: Vec<String>,
}

/// CPU busy percentages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// Busy percentage of all cores since the previous sample (since boot for the first).
    pub total_pct: f64,
    /// Busy percentage per online core, in the order /proc/stat lists them (offline cores are absent there).
    pub per_core_pct: Vec<f64>,
}

/// One CPU core as sysfs shows it (`/sys/devices/system/cpu/cpuN` and its cpufreq policy).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuCore {
    /// The core's number N of `cpuN`.
    pub id: u32,
    /// Whether the core is online (nvpmodel switches cores off in the lower power modes).
    pub online: bool,
    /// Busy percentage from /proc/stat, as in [`Cpu::per_core_pct`]; `None` for an offline core.
    pub load_pct: Option<f64>,
    /// cpufreq `scaling_governor`, e.g. `schedutil`.
    pub governor: Option<String>,
    /// cpufreq `scaling_cur_freq` in Hz.
    pub cur_freq_hz: Option<u64>,
    /// cpufreq `scaling_min_freq` in Hz: the lowest clock the governor may pick now.
    pub min_freq_hz: Option<u64>,
    /// cpufreq `scaling_max_freq` in Hz: the highest clock the governor may pick now (nvpmodel caps it).
    pub max_freq_hz: Option<u64>,
    /// cpufreq `cpuinfo_min_freq` in Hz: the hardware's lowest clock.
    pub hw_min_freq_hz: Option<u64>,
    /// cpufreq `cpuinfo_max_freq` in Hz: the hardware's highest clock.
    pub hw_max_freq_hz: Option<u64>,
}

/// RAM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemAvailable` (or `MemFree + Buffers + Cached` on kernels without it).
    pub available_bytes: u64,
    /// `total_bytes - available_bytes`: memory that cannot be had without swapping.
    pub used_bytes: u64,
    /// `MemTotal - MemFree - Buffers - Cached`: what tegrastats and jtop call used.
    #[serde(default)]
    pub used_tegrastats_bytes: Option<u64>,
    /// `MemFree`.
    #[serde(default)]
    pub free_bytes: Option<u64>,
    /// `Buffers`.
    #[serde(default)]
    pub buffers_bytes: Option<u64>,
    /// `Cached` (jtop shows `Cached + SReclaimable` as cached).
    #[serde(default)]
    pub cached_bytes: Option<u64>,
    /// `NvMapMemUsed`: memory the GPU and the engines hold through NvMap, out of the same RAM.
    #[serde(default)]
    pub gpu_shared_bytes: Option<u64>,
}

/// Swap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Swap {
    /// `SwapTotal`; 0 when no swap is configured.
    pub total_bytes: u64,
    /// `SwapTotal - SwapFree`.
    pub used_bytes: u64,
    /// `SwapCached`: swapped-out pages also still in RAM.
    #[serde(default)]
    pub cached_bytes: Option<u64>,
}

/// The file system of the state dir.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// The path measured: the state dir, or its nearest existing ancestor before the agent created it.
    pub path: PathBuf,
    /// Size of the file system.
    pub total_bytes: u64,
    /// Space an unprivileged writer can still use.
    pub available_bytes: u64,
    /// Space in use (total minus free blocks, reserved blocks not counted as used).
    pub used_bytes: u64,
}

/// One network interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetIf {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Bytes received since boot (the kernel counter).
    pub rx_bytes: u64,
    /// Bytes sent since boot.
    pub tx_bytes: u64,
    /// Bytes per second since the previous sample; `None` on the first.
    pub rx_bps: Option<f64>,
    /// Bytes per second since the previous sample; `None` on the first.
    pub tx_bps: Option<f64>,
}

/// The integrated GPU, from its devfreq node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// Load in percent (sysfs gives per-mille).
    pub load_pct: Option<f64>,
    /// Current clock in Hz.
    pub cur_freq_hz: Option<u64>,
    /// Lowest clock devfreq may pick, in Hz.
    pub min_freq_hz: Option<u64>,
    /// Highest clock devfreq may pick, in Hz.
    pub max_freq_hz: Option<u64>,
    /// The device-tree name of the GPU (`ga10b` Orin, `gv11b` Xavier, `gb10b` Thor, `gp10b`, `gpu`).
    #[serde(default)]
    pub name: Option<String>,
    /// The devfreq governor, e.g. `nvhost_podgov`.
    #[serde(default)]
    pub governor: Option<String>,
    /// `railgate_enable`: whether the GPU is power-gated when idle.
    #[serde(default)]
    pub railgate: Option<bool>,
    /// `enable_3d_scaling`: whether the GPU's clock follows its load.
    #[serde(default)]
    pub scaling_3d: Option<bool>,
    /// Measured clocks of the GPCs in Hz (Orin debugfs `nafll_gpcN/pto_counter`; root only).
    #[serde(default)]
    pub gpc_freq_hz: Vec<u64>,
}

/// One thermal zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThermalZone {
    /// The zone's `type`, e.g. `cpu-thermal`.
    pub name: String,
    /// Degrees Celsius; `None` when the zone cannot be read (cv* zones return EAGAIN).
    pub temp_c: Option<f64>,
    /// `false` for zones that do not measure a temperature (`PMIC-Die` reads 100 °C unless an alarm fires):
    /// [`Sample::hottest`] and the fleet view skip them.
    #[serde(default = "yes")]
    pub measures_temperature: bool,
}

fn yes() -> bool {
    true
}

impl Default for ThermalZone {
    fn default() -> Self {
        Self { name: String::new(), temp_c: None, measures_temperature: true }
    }
}

/// One temperature sensor of a hwmon device (`tempN_*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HwmonTemp {
    /// The hwmon device's `name`, e.g. `nvme`.
    pub device: String,
    /// `tempN_label`, e.g. `Composite`; `tempN` without a label.
    pub label: String,
    /// `tempN_input` in °C.
    pub temp_c: Option<f64>,
    /// `tempN_max` in °C; `None` without one (or when it says "no threshold").
    pub max_c: Option<f64>,
    /// `tempN_crit` in °C.
    pub crit_c: Option<f64>,
    /// `tempN_min` in °C.
    pub min_c: Option<f64>,
    /// `tempN_alarm` (or `tempN_crit_alarm`) as read.
    pub alarm: Option<bool>,
}

/// One power rail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PowerRail {
    /// Rail label, e.g. `VDD_IN`.
    pub name: String,
    /// Bus voltage in mV.
    pub voltage_mv: Option<u64>,
    /// Current in mA.
    pub current_ma: Option<u64>,
    /// Power in mW (`voltage_mv * current_ma / 1000`, or the driver's own figure on R32).
    pub power_mw: u64,
    /// Mean power since the sampler started, in mW (tegrastats' second figure).
    #[serde(default)]
    pub avg_mw: u64,
    /// Warning current limit in mA (`currN_max`; R32 `warn_current_limit_N`).
    #[serde(default)]
    pub warn_limit_ma: Option<u64>,
    /// Critical current limit in mA (`currN_crit`; R32 `crit_current_limit_N`).
    #[serde(default)]
    pub crit_limit_ma: Option<u64>,
    /// `currN_max_alarm` as read (the flag latches: it may be set while the current is below the limit).
    #[serde(default)]
    pub warn_alarm: Option<bool>,
    /// `currN_crit_alarm` as read.
    #[serde(default)]
    pub crit_alarm: Option<bool>,
}

/// The module's total power.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerTotal {
    /// Power in mW.
    pub power_mw: u64,
    /// Mean since the sampler started, in mW.
    pub avg_mw: u64,
    /// Where it comes from: the input rail's name (`VDD_IN`, R32 `POM_5V_IN`), or [`POWER_TOTAL_SUM`] on boards
    /// without one (AGX Orin), where it is the sum of every rail reported.
    pub source: String,
}

/// [`PowerTotal::source`] of a total that is the sum of the rails.
pub const POWER_TOTAL_SUM: &str = "sum";

/// The fan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fan {
    /// PWM duty 0-255.
    pub pwm: Option<u32>,
    /// Measured speed from the tachometer.
    pub rpm: Option<u32>,
}

/// The nvpmodel power mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PowerMode {
    /// Mode id, e.g. 2.
    pub id: u32,
    /// Mode name from /etc/nvpmodel.conf, e.g. `MAXN_SUPER`; `None` when the file does not name it.
    pub name: Option<String>,
}

/// The external memory controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Emc {
    /// EMC clock in Hz.
    pub rate_hz: Option<u64>,
    /// Memory controller activity as a percentage of the clock (`mc_all` kHz / `rate` kHz).
    pub load_pct: Option<f64>,
    /// Highest EMC clock in Hz (`max_rate`).
    #[serde(default)]
    pub max_rate_hz: Option<u64>,
    /// Lowest EMC clock in Hz (`min_rate`).
    #[serde(default)]
    pub min_rate_hz: Option<u64>,
}

/// A hardware engine (jtop's grouping of the debugfs clocks: `dla0_core` and `dla0_falcon` are DLA0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Engine {
    /// `APE`, `CVNAS`, `DLA0`, `MSENC`, `NVDEC`, `NVENC`, `NVJPG`, `OFA`, `PVA0`, `SE`, `VIC`, ...
    pub name: String,
    /// Whether any of its clocks is enabled.
    pub on: bool,
    /// Its clocks, by name.
    pub clocks: Vec<EngineClock>,
}

/// One clock of an engine (`/sys/kernel/debug/clk/<name>/`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineClock {
    /// The clock's directory name, e.g. `nvdec`, `dla0_core`.
    pub name: String,
    /// `clk_enable_count` >= 1.
    pub on: Option<bool>,
    /// `clk_rate` in Hz.
    pub rate_hz: Option<u64>,
    /// `clk_max_rate` in Hz; `None` when the clock has no limit (the kernel says 2^64-1).
    pub max_hz: Option<u64>,
    /// `clk_min_rate` in Hz.
    pub min_hz: Option<u64>,
}

impl Sample {
    /// The hottest readable zone that measures a temperature (PMIC-Die does not: it reads 100 °C).
    pub fn hottest(&self) -> Option<&ThermalZone> {
        self.thermal
            .iter()
            .filter(|z| z.temp_c.is_some() && z.measures_temperature && zone_measures_temperature(&z.name))
            .max_by(|a, b| a.temp_c.partial_cmp(&b.temp_c).unwrap_or(std::cmp::Ordering::Equal))
    }

    /// The module's input power (VDD_IN, or the R32 `POM_5V_IN`) in mW.
    pub fn input_power_mw(&self) -> Option<u64> {
        input_rail(&self.power).map(|r| r.power_mw)
    }

    /// The total power: [`Sample::power_total`], or for telemetry of an agent that did not send it, the same
    /// rule applied to its rails.
    pub fn total_power(&self) -> Option<PowerTotal> {
        self.power_total.clone().or_else(|| power_total(&self.power))
    }
}

/// Samples metrics under a host root, keeping the counters needed for rates between calls.
pub struct Sampler {
    root: PathBuf,
    state_dir: PathBuf,
    reader: Reader,
    fixed: FixedPaths,
    sources: Option<Sources>,
    prev: Option<Previous>,
    /// Reused scratch for the CPU counters of the current sample.
    cpu_now: Vec<CpuTimes>,
    /// Sum and count of every rail's power since the sampler started, by rail name, for the averages.
    power_sums: Vec<(String, u128, u64)>,
    /// How the root appears at the start of paths in warnings (as given, and resolved), so warnings can name
    /// host paths (`/sys/...`) whatever the root is.
    root_prefixes: Vec<String>,
}

/// Paths that do not depend on discovery.
struct FixedPaths {
    stat: PathBuf,
    meminfo: PathBuf,
    loadavg: PathBuf,
    uptime: PathBuf,
    net_dev: PathBuf,
}

/// Counters of the previous sample, for rates.
struct Previous {
    at: Instant,
    cpu: Vec<CpuTimes>,
    net: Vec<(String, u64, u64)>,
}

impl Sampler {
    /// A sampler reading /proc, /sys, /etc and /var under `root` and measuring the file system of `state_dir`.
    /// Nothing is read until the first sample.
    pub fn new(root: PathBuf, state_dir: PathBuf) -> Self {
        let fixed = FixedPaths {
            stat: under_root(&root, "/proc/stat"),
            meminfo: under_root(&root, "/proc/meminfo"),
            loadavg: under_root(&root, "/proc/loadavg"),
            uptime: under_root(&root, "/proc/uptime"),
            net_dev: under_root(&root, "/proc/net/dev"),
        };
        let mut root_prefixes = Vec::new();
        if root != Path::new("/") {
            let resolved = fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
            for r in [&resolved, &root] {
                let prefix = r.to_string_lossy().trim_end_matches('/').to_string();
                if !prefix.is_empty() && !root_prefixes.contains(&prefix) {
                    root_prefixes.push(prefix);
                }
            }
        }
        Self {
            root,
            state_dir,
            reader: Reader::default(),
            fixed,
            sources: None,
            prev: None,
            cpu_now: Vec::new(),
            power_sums: Vec::new(),
            root_prefixes,
        }
    }

    /// Takes one sample; rates cover the time since the previous one.
    pub fn sample(&mut self) -> Sample {
        self.sample_at(Instant::now())
    }

    /// Takes one sample as of the monotonic instant `now`: CPU percentages and network rates cover the span
    /// from the previous sample's `now`. [`Sampler::sample`] passes the current instant; tests pass chosen
    /// instants so rates are exact.
    pub fn sample_at(&mut self, now: Instant) -> Sample {
        let mut s = Sample { ts_ms: now_ms(), ..Sample::default() };
        let w = &mut s.warnings;
        let prev = self.prev.take();
        let elapsed = prev.as_ref().map(|p| now.saturating_duration_since(p.at));

        s.cpu = read_cpu(&mut self.reader, &self.fixed.stat, &mut self.cpu_now, prev.as_ref().map(|p| &p.cpu[..]), w);
        let mem = read_meminfo(&mut self.reader, &self.fixed.meminfo, w);
        (s.memory, s.swap) = mem;
        s.disk = read_disk(&self.state_dir, w);
        let mut net_now = prev.as_ref().map(|p| Vec::with_capacity(p.net.len())).unwrap_or_default();
        s.net = read_net(
            &mut self.reader,
            &self.fixed.net_dev,
            prev.as_ref().map(|p| &p.net[..]),
            elapsed,
            &mut net_now,
            w,
        );
        s.load = read_loadavg(&mut self.reader, &self.fixed.loadavg, w);
        s.uptime_s = read_uptime(&mut self.reader, &self.fixed.uptime, w);

        let sources = self.sources.get_or_insert_with(|| Sources::discover(&self.root, &mut self.reader));
        let mut gone = false;
        let r = &mut self.reader;
        let loads: Vec<(u32, f64)> = match &s.cpu {
            Some(c) => self.cpu_now.iter().filter_map(|t| t.id).zip(c.per_core_pct.iter().copied()).collect(),
            None => Vec::new(),
        };
        s.cpu_cores = sources.cores.read(r, &loads, w, &mut gone);
        s.gpu = sources.gpu.as_ref().map(|g| g.read(r, w, &mut gone));
        s.thermal = sources.zones.iter().map(|z| z.read(r, w, &mut gone)).collect();
        s.hwmon_temps = sources.hwmon_temps.iter().map(|t| t.read(r, w, &mut gone)).collect();
        s.power = sources.rails.iter().filter_map(|rail| rail.read(r, w, &mut gone)).collect();
        average_power(&mut s.power, &mut self.power_sums);
        s.power_total = power_total(&s.power);
        s.fan = sources.fan.as_ref().map(|f| f.read(r, w, &mut gone));
        s.power_mode = sources.power_mode.as_ref().and_then(|p| p.read(r, w));
        s.emc = sources.emc.as_ref().and_then(|e| e.read(r, w));
        s.engines = sources.engines.iter().map(|e| e.read(r, w, &mut gone)).collect();
        s.jetson_clocks = jetson_clocks_on(&s.cpu_cores, s.gpu.as_ref(), s.emc.as_ref());
        w.extend(sources.warnings.iter().cloned());
        if gone {
            // A cached sysfs file vanished (driver reload, hot-unplug): find the layout again next time.
            tracing::debug!("a cached metrics source disappeared; rediscovering on the next sample");
            self.sources = None;
        }
        for w in &mut s.warnings {
            if let Some(rest) = self.root_prefixes.iter().find_map(|p| w.strip_prefix(p.as_str())) {
                if rest.starts_with('/') {
                    *w = rest.to_string();
                }
            }
        }

        let mut cpu_prev = prev.map(|p| p.cpu).unwrap_or_default();
        std::mem::swap(&mut cpu_prev, &mut self.cpu_now);
        self.prev = Some(Previous { at: now, cpu: cpu_prev, net: net_now });
        s
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line_busy_excludes_idle_and_iowait_and_guest() {
        let t = parse_cpu_line("cpu0 100 10 50 800 40 0 0 0 30 0").unwrap();
        assert_eq!(t, CpuTimes { id: Some(0), busy: 160, total: 1000 });
        let all = parse_cpu_line("cpu  1 2 3 4").unwrap();
        assert_eq!(all, CpuTimes { id: None, busy: 6, total: 10 });
    }

    #[test]
    fn cpu_line_rejects_truncated_and_garbage_lines() {
        assert!(parse_cpu_line("cpu1 100 200").unwrap_err().contains("truncated"));
        assert!(parse_cpu_line("cpu1 100 x 1 1").unwrap_err().contains("bad counter"));
        assert!(parse_cpu_line("cpuX 1 1 1 1").unwrap_err().contains("bad cpu label"));
        assert!(parse_cpu_line("").unwrap_err().contains("not a cpu line"));
    }

    #[test]
    fn busy_pct_uses_deltas_and_falls_back_to_since_boot_on_counter_reset() {
        let prev = CpuTimes { id: None, busy: 100, total: 1000 };
        let now = CpuTimes { id: None, busy: 350, total: 2000 };
        assert_eq!(busy_pct(&now, Some(&prev)), 25.0);
        assert_eq!(busy_pct(&now, None), 17.5);
        assert_eq!(busy_pct(&prev, Some(&now)), 10.0);
        assert_eq!(busy_pct(&now, Some(&now)), 0.0);
    }

    #[test]
    fn nvpmodel_conf_and_status_parse() {
        let conf = "< PARAM TYPE=FILE NAME=CPU_ONLINE >\n< POWER_MODEL ID=0 NAME=15W >\nCPU_ONLINE CORE_0 1\n\
                    < POWER_MODEL ID=2 NAME=MAXN_SUPER >\n< POWER_MODEL ID=x NAME=BAD >\n";
        assert_eq!(parse_nvpmodel_conf(conf), vec![(0, "15W".to_string()), (2, "MAXN_SUPER".to_string())]);
        assert_eq!(parse_nvpmodel_status("pmode:0002 fmode:quiet\n"), Some(2));
        assert_eq!(parse_nvpmodel_status("pmode:zz"), None);
        assert_eq!(parse_nvpmodel_status(""), None);
    }

    #[test]
    fn entries_sort_by_trailing_number() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["thermal_zone10", "thermal_zone2", "thermal_zone1", "cooling_device0"] {
            fs::create_dir(dir.path().join(n)).unwrap();
        }
        let names: Vec<String> = sorted_entries(dir.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["cooling_device0", "thermal_zone1", "thermal_zone2", "thermal_zone10"]);
    }
}
