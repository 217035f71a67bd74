//! The hardware engines (video decoders and encoders, JPEG, VIC, DLA, PVA, the audio processor, ...) from
//! their clocks in debugfs (`/sys/kernel/debug/clk/<clock>/`; root only), grouped as jtop groups them.

use super::*;

/// Clock-name prefixes of engines. `dla` and `pva` are numbered per instance (`dla0_core` is DLA0); `se` must
/// match whole (other clocks start with "se"); the rest group every clock starting with them (`nvjpg` and
/// `nvjpg1` are NVJPG). `msenc` is NVENC's older name (Nano, TX1).
const ENGINE_PREFIXES: [&str; 11] =
    ["ape", "cvnas", "dla", "msenc", "nvdec", "nvenc", "nvjpg", "ofa", "pva", "se", "vic"];

/// The clock's value when it has no upper limit.
const NO_LIMIT: u64 = u64::MAX;

#[derive(Debug)]
pub(super) struct EngineFiles {
    name: String,
    clocks: Vec<ClockFiles>,
}

#[derive(Debug)]
struct ClockFiles {
    name: String,
    enable_count: Option<PathBuf>,
    rate: Option<PathBuf>,
    max_rate: Option<PathBuf>,
    min_rate: Option<PathBuf>,
}

/// The engine a debugfs clock belongs to, or `None` for clocks that are not an engine's (`emc`, `uartb`,
/// `sdmmc4`, and names with a `.` such as `nvdec.buf`).
pub(super) fn engine_of(clock: &str) -> Option<String> {
    if clock.contains('.') {
        return None;
    }
    let prefix = ENGINE_PREFIXES.iter().find(|p| if **p == "se" { clock == "se" } else { clock.starts_with(**p) })?;
    if *prefix == "dla" || *prefix == "pva" {
        let head = clock.split('_').next().unwrap_or(clock);
        let n = &head[prefix.len()..];
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            return Some(head.to_ascii_uppercase());
        }
    }
    Some(prefix.to_ascii_uppercase())
}

/// Every engine with at least one clock under /sys/kernel/debug/clk, sorted by engine and clock name.
pub(super) fn discover_engines(root: &Path) -> Vec<EngineFiles> {
    let mut engines: Vec<EngineFiles> = Vec::new();
    for (name, dir) in sorted_entries(&under_root(root, "/sys/kernel/debug/clk")) {
        let Some(engine) = engine_of(&name) else { continue };
        if !dir.is_dir() {
            continue;
        }
        let file = |n: &str| {
            let p = dir.join(n);
            p.symlink_metadata().is_ok().then_some(p)
        };
        let clock = ClockFiles {
            enable_count: file("clk_enable_count"),
            rate: file("clk_rate"),
            max_rate: file("clk_max_rate"),
            min_rate: file("clk_min_rate"),
            name,
        };
        match engines.iter_mut().find(|e| e.name == engine) {
            Some(e) => e.clocks.push(clock),
            None => engines.push(EngineFiles { name: engine, clocks: vec![clock] }),
        }
    }
    engines.sort_by(|a, b| a.name.cmp(&b.name));
    for e in &mut engines {
        e.clocks.sort_by(|a, b| a.name.cmp(&b.name));
    }
    engines
}

impl EngineFiles {
    pub(super) fn read(&self, r: &mut Reader, w: &mut Vec<String>, gone: &mut bool) -> Engine {
        let clocks: Vec<EngineClock> = self
            .clocks
            .iter()
            .map(|c| {
                let mut num = |p: &Option<PathBuf>| p.as_ref().and_then(|p| r.sysfs_number::<u64>(p, w, gone));
                EngineClock {
                    name: c.name.clone(),
                    on: num(&c.enable_count).map(|n| n >= 1),
                    rate_hz: num(&c.rate),
                    max_hz: num(&c.max_rate).filter(|m| *m != NO_LIMIT),
                    min_hz: num(&c.min_rate),
                }
            })
            .collect();
        Engine { name: self.name.clone(), on: clocks.iter().any(|c| c.on == Some(true)), clocks }
    }
}
