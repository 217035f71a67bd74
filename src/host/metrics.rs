//! The metrics sampler: what tegrastats and jtop show (CPU, memory, GPU load and clocks, thermal zones, power
//! rails, fan, power mode, EMC) plus disk, network and load, read straight from procfs and sysfs under the host
//! root. No process is spawned per sample.
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

/// One metrics sample. Field names are a public contract (telemetry payload, `jetship metrics --json`):
/// see docs/metrics.md.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time of the sample in milliseconds.
    pub ts_ms: u64,
    /// CPU busy percentages, from /proc/stat.
    pub cpu: Option<Cpu>,
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
    /// INA3221 power rails (Jetson only), in device and channel order.
    pub power: Vec<PowerRail>,
    /// Fan duty and speed (Jetson boards with a pwm-fan).
    pub fan: Option<Fan>,
    /// The nvpmodel power mode.
    pub power_mode: Option<PowerMode>,
    /// External memory controller clock and load (debugfs: root only).
    pub emc: Option<Emc>,
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

/// RAM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemAvailable` (or `MemFree + Buffers + Cached` on kernels without it).
    pub available_bytes: u64,
    /// `total_bytes - available_bytes`.
    pub used_bytes: u64,
}

/// Swap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Swap {
    /// `SwapTotal`; 0 when no swap is configured.
    pub total_bytes: u64,
    /// `SwapTotal - SwapFree`.
    pub used_bytes: u64,
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
}

/// One thermal zone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThermalZone {
    /// The zone's `type`, e.g. `cpu-thermal`.
    pub name: String,
    /// Degrees Celsius; `None` when the zone cannot be read (cv* zones return EAGAIN).
    pub temp_c: Option<f64>,
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
}

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
}

impl Sample {
    /// The hottest readable thermal zone.
    pub fn hottest(&self) -> Option<&ThermalZone> {
        self.thermal
            .iter()
            .filter(|z| z.temp_c.is_some())
            .max_by(|a, b| a.temp_c.partial_cmp(&b.temp_c).unwrap_or(std::cmp::Ordering::Equal))
    }

    /// The module's input power (VDD_IN, or the R32 `POM_5V_IN`) in mW.
    pub fn input_power_mw(&self) -> Option<u64> {
        self.power.iter().find(|r| r.name == "VDD_IN" || r.name == "POM_5V_IN").map(|r| r.power_mw)
    }
}

/// devfreq `of_node` names of Jetson integrated GPUs (Xavier, TX2/Nano-class, Orin, Thor, Nano/TX1).
const GPU_OF_NODE_NAMES: [&str; 5] = ["gv11b", "gp10b", "ga10b", "gb10b", "gpu"];

/// Procfs and sysfs files are a few KiB; a garbage or hostile file is cut here.
const READ_LIMIT: u64 = 256 * 1024;

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
        s.gpu = sources.gpu.as_ref().map(|g| g.read(&mut self.reader, w, &mut gone));
        s.thermal = sources.zones.iter().map(|z| z.read(&mut self.reader, w, &mut gone)).collect();
        s.power = sources.rails.iter().filter_map(|r| r.read(&mut self.reader, w, &mut gone)).collect();
        s.fan = sources.fan.as_ref().map(|f| f.read(&mut self.reader, w, &mut gone));
        s.power_mode = sources.power_mode.as_ref().and_then(|p| p.read(&mut self.reader, w));
        s.emc = sources.emc.as_ref().and_then(|e| e.read(&mut self.reader, w));
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

// ---------------------------------------------------------------------------------------------------------
// Reading small files

/// Reads small files into one reused buffer so a sample allocates little.
#[derive(Default)]
struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// The file's text (invalid UTF-8 is an `InvalidData` error: every file read here is ASCII).
    fn text(&mut self, path: &Path) -> io::Result<&str> {
        self.buf.clear();
        File::open(path)?.take(READ_LIMIT).read_to_end(&mut self.buf)?;
        std::str::from_utf8(&self.buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not text"))
    }

    /// A number from a one-value sysfs file. `Ok(None)` when the content is not a number (a warning is added).
    fn number<T: std::str::FromStr>(&mut self, path: &Path, w: &mut Vec<String>) -> io::Result<Option<T>> {
        let text = self.text(path)?;
        let value = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        match value.parse() {
            Ok(v) => Ok(Some(v)),
            Err(_) => {
                w.push(format!("{}: expected a number, found `{}`", path.display(), snippet(value)));
                Ok(None)
            }
        }
    }

    /// A number from a sysfs file that should be readable: read errors become a warning, and a vanished file
    /// sets `gone` so the layout is discovered again.
    fn sysfs_number<T: std::str::FromStr>(&mut self, path: &Path, w: &mut Vec<String>, gone: &mut bool) -> Option<T> {
        match self.number(path, w) {
            Ok(v) => v,
            Err(err) => {
                if err.kind() == io::ErrorKind::NotFound {
                    *gone = true;
                }
                w.push(format!("{}: cannot read: {err}", path.display()));
                None
            }
        }
    }
}

/// The start of a bad value, for a warning.
fn snippet(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out.escape_debug().to_string()
}

fn read_warn<'a>(reader: &'a mut Reader, path: &Path, w: &mut Vec<String>) -> Option<&'a str> {
    match reader.text(path) {
        Ok(t) => Some(t),
        Err(err) => {
            w.push(format!("{}: cannot read: {err}", path.display()));
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// procfs

/// Jiffies of one /proc/stat `cpu` line: `id` is `None` for the all-cores line.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuTimes {
    id: Option<u32>,
    busy: u64,
    total: u64,
}

/// Parses one `cpu`/`cpuN` line of /proc/stat. Busy is everything but idle and iowait; guest time is already
/// inside user time, so only the first eight fields (user..steal) count.
fn parse_cpu_line(line: &str) -> Result<CpuTimes, String> {
    let mut fields = line.split_ascii_whitespace();
    let label = fields.next().unwrap_or_default();
    let id = match label.strip_prefix("cpu") {
        None => return Err(format!("`{}` is not a cpu line", snippet(label))),
        Some("") => None,
        Some(n) => Some(n.parse::<u32>().map_err(|_| format!("bad cpu label `{}`", snippet(label)))?),
    };
    let mut total = 0u64;
    let mut idle = 0u64;
    let mut count = 0;
    for (i, f) in fields.take(8).enumerate() {
        let v: u64 = f.parse().map_err(|_| format!("`{label}` has a bad counter `{}`", snippet(f)))?;
        total = total.saturating_add(v);
        if i == 3 || i == 4 {
            idle = idle.saturating_add(v);
        }
        count += 1;
    }
    if count < 4 {
        return Err(format!("`{label}` is truncated ({count} counters, at least 4 expected)"));
    }
    Ok(CpuTimes { id, busy: total - idle, total })
}

/// Busy percentage between two readings of the same counters (or since boot without a previous one).
fn busy_pct(now: &CpuTimes, prev: Option<&CpuTimes>) -> f64 {
    let (busy, total) = match prev {
        Some(p) if now.total >= p.total && now.busy >= p.busy => (now.busy - p.busy, now.total - p.total),
        _ => (now.busy, now.total),
    };
    if total == 0 {
        0.0
    } else {
        round2(busy as f64 * 100.0 / total as f64)
    }
}

fn read_cpu(
    reader: &mut Reader,
    path: &Path,
    now: &mut Vec<CpuTimes>,
    prev: Option<&[CpuTimes]>,
    w: &mut Vec<String>,
) -> Option<Cpu> {
    now.clear();
    let text = read_warn(reader, path, w)?;
    for line in text.lines().filter(|l| l.starts_with("cpu")) {
        match parse_cpu_line(line) {
            Ok(t) => now.push(t),
            Err(e) => w.push(format!("{}: {e}", path.display())),
        }
    }
    let find = |id: Option<u32>| prev.and_then(|p| p.iter().find(|t| t.id == id));
    let Some(all) = now.iter().find(|t| t.id.is_none()) else {
        w.push(format!("{}: no readable `cpu` line", path.display()));
        return None;
    };
    Some(Cpu {
        total_pct: busy_pct(all, find(None)),
        per_core_pct: now.iter().filter(|t| t.id.is_some()).map(|t| busy_pct(t, find(t.id))).collect(),
    })
}

/// Memory and swap from /proc/meminfo (values in kB).
fn read_meminfo(reader: &mut Reader, path: &Path, w: &mut Vec<String>) -> (Option<Memory>, Option<Swap>) {
    let Some(text) = read_warn(reader, path, w) else {
        return (None, None);
    };
    let mut v: [Option<u64>; 7] = [None; 7];
    const KEYS: [&str; 7] = ["MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached", "SwapTotal", "SwapFree"];
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(i) = KEYS.iter().position(|k| *k == key) else {
            continue;
        };
        let num = rest.trim().trim_end_matches("kB").trim();
        match num.parse::<u64>() {
            Ok(n) => v[i] = Some(n.saturating_mul(1024)),
            Err(_) => w.push(format!("{}: `{key}` is not a number: `{}`", path.display(), snippet(num))),
        }
    }
    let [total, avail, free, buffers, cached, swap_total, swap_free] = v;
    let memory = match (total, avail.or_else(|| Some(free? + buffers? + cached?))) {
        (Some(total), Some(available)) => {
            Some(Memory { total_bytes: total, available_bytes: available, used_bytes: total.saturating_sub(available) })
        }
        _ => {
            w.push(format!("{}: `MemTotal` or `MemAvailable` missing", path.display()));
            None
        }
    };
    let swap = match (swap_total, swap_free) {
        (Some(t), Some(f)) => Some(Swap { total_bytes: t, used_bytes: t.saturating_sub(f) }),
        _ => {
            w.push(format!("{}: `SwapTotal` or `SwapFree` missing", path.display()));
            None
        }
    };
    (memory, swap)
}

fn read_loadavg(reader: &mut Reader, path: &Path, w: &mut Vec<String>) -> Option<[f64; 3]> {
    let text = read_warn(reader, path, w)?;
    let mut it = text.split_ascii_whitespace().map(str::parse::<f64>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some([a, b, c]),
        _ => {
            w.push(format!("{}: expected three load averages, found `{}`", path.display(), snippet(text.trim())));
            None
        }
    }
}

fn read_uptime(reader: &mut Reader, path: &Path, w: &mut Vec<String>) -> Option<f64> {
    let text = read_warn(reader, path, w)?;
    match text.split_ascii_whitespace().next().map(str::parse::<f64>) {
        Some(Ok(v)) if v.is_finite() && v >= 0.0 => Some(v),
        _ => {
            w.push(format!("{}: expected seconds since boot, found `{}`", path.display(), snippet(text.trim())));
            None
        }
    }
}

/// Interfaces from /proc/net/dev (loopback left out), with rates against `prev` over `elapsed`.
/// `counters` receives this sample's counters for the next call.
fn read_net(
    reader: &mut Reader,
    path: &Path,
    prev: Option<&[(String, u64, u64)]>,
    elapsed: Option<Duration>,
    counters: &mut Vec<(String, u64, u64)>,
    w: &mut Vec<String>,
) -> Vec<NetIf> {
    let Some(text) = read_warn(reader, path, w) else {
        return Vec::new();
    };
    let secs = elapsed.map(|d| d.as_secs_f64()).filter(|s| *s > 0.0);
    let mut out = Vec::new();
    // Two header lines, then `name: rx_bytes rx_packets ... (8 receive fields) tx_bytes ...`.
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            w.push(format!("{}: line without `:`: `{}`", path.display(), snippet(line.trim())));
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let mut fields = rest.split_ascii_whitespace();
        let rx = fields.next().and_then(|f| f.parse::<u64>().ok());
        let tx = fields.nth(7).and_then(|f| f.parse::<u64>().ok());
        let (Some(rx), Some(tx)) = (rx, tx) else {
            w.push(format!("{}: `{name}` has missing or bad byte counters", path.display()));
            continue;
        };
        let before = prev.and_then(|p| p.iter().find(|(n, _, _)| n == name));
        let rate = |now: u64, then: Option<u64>| match (then, secs) {
            // A counter that went down was reset (interface re-created): no rate this time.
            (Some(then), Some(secs)) if now >= then => Some(round2((now - then) as f64 / secs)),
            _ => None,
        };
        out.push(NetIf {
            name: name.to_string(),
            rx_bytes: rx,
            tx_bytes: tx,
            rx_bps: rate(rx, before.map(|b| b.1)),
            tx_bps: rate(tx, before.map(|b| b.2)),
        });
        counters.push((name.to_string(), rx, tx));
    }
    out
}

/// statvfs of the state dir, or of its nearest existing ancestor (before the agent has created it).
// fsblkcnt_t and c_ulong are 32 bits wide on some targets: the casts are not useless there.
#[allow(clippy::unnecessary_cast)]
fn read_disk(state_dir: &Path, w: &mut Vec<String>) -> Option<Disk> {
    let mut path = state_dir;
    while !path.exists() {
        path = path.parent()?;
    }
    match nix::sys::statvfs::statvfs(path) {
        Ok(st) => {
            let frag = st.fragment_size() as u64;
            Some(Disk {
                path: path.to_path_buf(),
                total_bytes: (st.blocks() as u64).saturating_mul(frag),
                available_bytes: (st.blocks_available() as u64).saturating_mul(frag),
                used_bytes: (st.blocks() as u64).saturating_sub(st.blocks_free() as u64).saturating_mul(frag),
            })
        }
        Err(err) => {
            w.push(format!("{}: statvfs failed: {err}", path.display()));
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// sysfs discovery

/// The sysfs and debugfs files found by discovery.
#[derive(Debug, Default)]
struct Sources {
    gpu: Option<GpuFiles>,
    zones: Vec<ZoneFiles>,
    rails: Vec<RailFiles>,
    fan: Option<FanFiles>,
    power_mode: Option<PowerModeFiles>,
    emc: Option<EmcFiles>,
    /// Problems found during discovery; repeated in every sample until the layout is discovered again.
    warnings: Vec<String>,
}

#[derive(Debug)]
struct GpuFiles {
    load: Option<PathBuf>,
    cur: PathBuf,
    min: PathBuf,
    max: PathBuf,
}

#[derive(Debug)]
struct ZoneFiles {
    name: String,
    temp: PathBuf,
}

#[derive(Debug)]
enum RailFiles {
    /// hwmon ina3221 (JP5 and later): bus voltage and current, power computed.
    Hwmon { name: String, voltage: PathBuf, current: PathBuf },
    /// iio ina3221x (R32): the driver's own power, plus voltage and current when present.
    Iio { name: String, power: PathBuf, voltage: Option<PathBuf>, current: Option<PathBuf> },
}

#[derive(Debug, Default)]
struct FanFiles {
    pwm: Option<PathBuf>,
    rpm: Option<PathBuf>,
}

#[derive(Debug)]
struct PowerModeFiles {
    status: PathBuf,
    /// (id, name) from nvpmodel.conf.
    names: Vec<(u32, String)>,
}

#[derive(Debug)]
struct EmcFiles {
    rate: PathBuf,
    mc_all: Option<PathBuf>,
}

/// Entries of a directory sorted by the number at the end of their name (hwmon2 before hwmon10), then name.
fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> =
        rd.filter_map(|e| e.ok()).map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())).collect();
    v.sort_by_key(|(n, _)| (trailing_number(n), n.clone()));
    v
}

fn trailing_number(name: &str) -> u64 {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[name.len() - digits..].parse().unwrap_or(0)
}

/// A sysfs attribute's text without the trailing newline or NUL (device-tree strings end in NUL).
fn attr(reader: &mut Reader, path: &Path) -> io::Result<String> {
    Ok(reader.text(path)?.trim_matches(|c: char| c.is_whitespace() || c == '\0').to_string())
}

/// The real path behind sysfs class symlinks, so each sample's open does not walk them again.
fn resolved(path: PathBuf) -> PathBuf {
    fs::canonicalize(&path).unwrap_or(path)
}

impl Sources {
    fn discover(root: &Path, reader: &mut Reader) -> Sources {
        let mut s = Sources::default();
        s.gpu = discover_gpu(root, reader);
        s.zones = discover_zones(root, reader, &mut s.warnings);
        discover_hwmon(root, reader, &mut s);
        if s.rails.is_empty() {
            s.rails = discover_iio_rails(root, reader, &mut s.warnings);
        }
        s.power_mode = discover_power_mode(root, reader, &mut s.warnings);
        let rate = under_root(root, "/sys/kernel/debug/bpmp/debug/clk/emc/rate");
        let mc_all = under_root(root, "/sys/kernel/debug/cactmon/mc_all");
        // debugfs is root-only: without access the files do not even appear to exist.
        if rate.is_file() {
            s.emc = Some(EmcFiles { rate, mc_all: mc_all.is_file().then_some(mc_all) });
        }
        tracing::debug!(
            gpu = s.gpu.is_some(),
            zones = s.zones.len(),
            rails = s.rails.len(),
            fan = s.fan.is_some(),
            power_mode = s.power_mode.is_some(),
            emc = s.emc.is_some(),
            "metrics sources discovered"
        );
        s
    }
}

/// The devfreq node whose device's device-tree node is a Jetson GPU.
fn discover_gpu(root: &Path, reader: &mut Reader) -> Option<GpuFiles> {
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

fn discover_zones(root: &Path, reader: &mut Reader, w: &mut Vec<String>) -> Vec<ZoneFiles> {
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

/// INA3221 rails, the fan PWM and the fan tachometer from /sys/class/hwmon.
fn discover_hwmon(root: &Path, reader: &mut Reader, s: &mut Sources) {
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
fn discover_ina3221_channels(dir: &Path, reader: &mut Reader, s: &mut Sources) {
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
fn discover_iio_rails(root: &Path, reader: &mut Reader, w: &mut Vec<String>) -> Vec<RailFiles> {
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

/// The nvpmodel status file and the mode names from nvpmodel.conf (read once: the file is static).
fn discover_power_mode(root: &Path, reader: &mut Reader, w: &mut Vec<String>) -> Option<PowerModeFiles> {
    let status = under_root(root, "/var/lib/nvpmodel/status");
    if !status.exists() {
        return None;
    }
    let conf = under_root(root, "/etc/nvpmodel.conf");
    let names = match reader.text(&conf) {
        Ok(text) => parse_nvpmodel_conf(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            w.push(format!("{}: cannot read: {err}; power mode names unknown", conf.display()));
            Vec::new()
        }
    };
    Some(PowerModeFiles { status, names })
}

/// `(id, name)` of every `< POWER_MODEL ID=n NAME=... >` line of nvpmodel.conf.
pub fn parse_nvpmodel_conf(text: &str) -> Vec<(u32, String)> {
    let mut modes = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(body) = line.strip_prefix('<').and_then(|l| l.strip_suffix('>')) else {
            continue;
        };
        let mut words = body.split_ascii_whitespace();
        if words.next() != Some("POWER_MODEL") {
            continue;
        }
        let (mut id, mut name) = (None, None);
        for word in words {
            if let Some(v) = word.strip_prefix("ID=") {
                id = v.parse::<u32>().ok();
            } else if let Some(v) = word.strip_prefix("NAME=") {
                name = Some(v.to_string());
            }
        }
        if let (Some(id), Some(name)) = (id, name) {
            modes.push((id, name));
        }
    }
    modes
}

/// The mode id of /var/lib/nvpmodel/status (`pmode:0002`, possibly followed by other `key:value` words).
pub fn parse_nvpmodel_status(text: &str) -> Option<u32> {
    text.split_ascii_whitespace().find_map(|w| w.strip_prefix("pmode:")).and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------------------
// sysfs per-sample reads

impl GpuFiles {
    fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> Gpu {
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

impl ZoneFiles {
    /// A zone whose sensor is off fails its read (EAGAIN for Orin's cv* zones, EINVAL or ENODATA elsewhere):
    /// any read error means "unavailable", not a problem to warn about. Garbage in a readable file is warned.
    fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> ThermalZone {
        let temp_c = match r.number::<i64>(&self.temp, w) {
            Ok(v) => v.map(|milli| milli as f64 / 1000.0),
            Err(err) => {
                if err.kind() == io::ErrorKind::NotFound {
                    *gone = true;
                }
                None
            }
        };
        ThermalZone { name: self.name.clone(), temp_c }
    }
}

impl RailFiles {
    fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> Option<PowerRail> {
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

impl FanFiles {
    fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> Fan {
        Fan {
            pwm: self.pwm.as_ref().and_then(|p| r.sysfs_number(p, w, gone)),
            rpm: self.rpm.as_ref().and_then(|p| r.sysfs_number(p, w, gone)),
        }
    }
}

impl PowerModeFiles {
    fn read(&self, r: &mut Reader, w: &mut Vec<String>) -> Option<PowerMode> {
        let text = match r.text(&self.status) {
            Ok(t) => t,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
            Err(err) => {
                w.push(format!("{}: cannot read: {err}", self.status.display()));
                return None;
            }
        };
        let Some(id) = parse_nvpmodel_status(text) else {
            w.push(format!("{}: expected `pmode:NNNN`, found `{}`", self.status.display(), snippet(text.trim())));
            return None;
        };
        let name = self.names.iter().find(|(i, _)| *i == id).map(|(_, n)| n.clone());
        Some(PowerMode { id, name })
    }
}

impl EmcFiles {
    /// debugfs reads fail without root: that is "unknown", not a warning. Garbage is warned.
    fn read(&self, r: &mut Reader, w: &mut Vec<String>) -> Option<Emc> {
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

// ---------------------------------------------------------------------------------------------------------
// Text form

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0 * 1024.0)
}

fn human_rate(bps: f64) -> String {
    if bps >= 1024.0 * 1024.0 {
        format!("{:.1} MiB/s", bps / (1024.0 * 1024.0))
    } else if bps >= 1024.0 {
        format!("{:.1} KiB/s", bps / 1024.0)
    } else {
        format!("{bps:.0} B/s")
    }
}

fn mhz(hz: u64) -> u64 {
    hz / 1_000_000
}

impl Sample {
    /// The human-readable form printed by `jetship metrics`: one line per subsystem, like tegrastats/jtop.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if let Some(c) = &self.cpu {
            let cores: Vec<String> = c.per_core_pct.iter().map(|p| format!("{p:.0}%")).collect();
            let _ = writeln!(out, "cpu      {:.1}% [{}]", c.total_pct, cores.join(","));
        }
        if let Some(m) = &self.memory {
            let pct = if m.total_bytes > 0 { m.used_bytes as f64 * 100.0 / m.total_bytes as f64 } else { 0.0 };
            let _ = write!(out, "ram      {:.2}/{:.2} GiB ({pct:.0}%)", gib(m.used_bytes), gib(m.total_bytes));
            match &self.swap {
                Some(s) if s.total_bytes > 0 => {
                    let _ = writeln!(out, "  swap {:.2}/{:.2} GiB", gib(s.used_bytes), gib(s.total_bytes));
                }
                Some(_) => out.push_str("  swap off\n"),
                None => out.push('\n'),
            }
        }
        if let Some(d) = &self.disk {
            let _ = writeln!(
                out,
                "disk     {}: {:.1} GiB free of {:.1} GiB",
                d.path.display(),
                gib(d.available_bytes),
                gib(d.total_bytes)
            );
        }
        if let Some([a, b, c]) = self.load {
            let _ = write!(out, "load     {a:.2} {b:.2} {c:.2}");
            if let Some(up) = self.uptime_s {
                let up = up as u64;
                let _ = write!(out, "  up {}d {}h {}m", up / 86400, up / 3600 % 24, up / 60 % 60);
            }
            out.push('\n');
        }
        if let Some(g) = &self.gpu {
            let load = g.load_pct.map(|l| format!("{l:.1}%")).unwrap_or_else(|| "?".into());
            let cur = g.cur_freq_hz.map(|f| mhz(f).to_string()).unwrap_or_else(|| "?".into());
            let _ = write!(out, "gpu      {load} @ {cur} MHz");
            if let (Some(lo), Some(hi)) = (g.min_freq_hz, g.max_freq_hz) {
                let _ = write!(out, " ({}-{} MHz)", mhz(lo), mhz(hi));
            }
            out.push('\n');
        }
        if let Some(e) = &self.emc {
            let load = e.load_pct.map(|l| format!("{l:.1}%")).unwrap_or_else(|| "?".into());
            let rate = e.rate_hz.map(|f| mhz(f).to_string()).unwrap_or_else(|| "?".into());
            let _ = writeln!(out, "emc      {load} @ {rate} MHz");
        }
        if !self.thermal.is_empty() {
            let temps: Vec<String> = self
                .thermal
                .iter()
                .map(|z| {
                    let name = z.name.strip_suffix("-thermal").or(z.name.strip_suffix("-therm")).unwrap_or(&z.name);
                    match z.temp_c {
                        Some(t) => format!("{name}@{t:.1}C"),
                        None => format!("{name}@off"),
                    }
                })
                .collect();
            let _ = writeln!(out, "temp     {}", temps.join(" "));
        }
        if !self.power.is_empty() {
            let rails: Vec<String> = self.power.iter().map(|r| format!("{} {}mW", r.name, r.power_mw)).collect();
            let _ = writeln!(out, "power    {}", rails.join(" "));
        }
        if let Some(f) = &self.fan {
            out.push_str("fan     ");
            if let Some(p) = f.pwm {
                let _ = write!(out, " pwm {p}/255 ({:.0}%)", p as f64 * 100.0 / 255.0);
            }
            if let Some(r) = f.rpm {
                let _ = write!(out, " {r} rpm");
            }
            out.push('\n');
        }
        if let Some(m) = &self.power_mode {
            let _ = writeln!(out, "mode     {} {}", m.id, m.name.as_deref().unwrap_or("(unnamed)"));
        }
        for n in &self.net {
            let rate = |r: Option<f64>| r.map(human_rate).unwrap_or_else(|| "-".into());
            let _ = writeln!(out, "net      {} rx {} tx {}", n.name, rate(n.rx_bps), rate(n.tx_bps));
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
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
