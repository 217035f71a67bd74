//! A sample as text for people (`jetship metrics`), like tegrastats' line.

use super::*;

// ---------------------------------------------------------------------------------------------------------
// Text form

pub(super) fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0 * 1024.0)
}

pub(super) fn human_rate(bps: f64) -> String {
    if bps >= 1024.0 * 1024.0 {
        format!("{:.1} MiB/s", bps / (1024.0 * 1024.0))
    } else if bps >= 1024.0 {
        format!("{:.1} KiB/s", bps / 1024.0)
    } else {
        format!("{bps:.0} B/s")
    }
}

pub(super) fn mhz(hz: u64) -> u64 {
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
        if !self.cpu_cores.is_empty() {
            let _ = writeln!(out, "cores    {}", core_groups(&self.cpu_cores).join(", "));
        }
        if let Some(m) = &self.memory {
            let pct = if m.total_bytes > 0 { m.used_bytes as f64 * 100.0 / m.total_bytes as f64 } else { 0.0 };
            let _ = write!(
                out,
                "ram      used {:.2}/{:.2} GiB ({pct:.0}%, total - available)",
                gib(m.used_bytes),
                gib(m.total_bytes)
            );
            if let Some(t) = m.used_tegrastats_bytes {
                let _ = write!(out, "  tegrastats used {:.2} GiB", gib(t));
            }
            if let Some(g) = m.gpu_shared_bytes {
                let _ = write!(out, "  gpu nvmap {:.2} GiB", gib(g));
            }
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
            for word in [g.name.clone(), g.governor.clone()].into_iter().flatten() {
                let _ = write!(out, " {word}");
            }
            let flag = |b: Option<bool>| b.map(|b| if b { "on" } else { "off" });
            if let Some(v) = flag(g.railgate) {
                let _ = write!(out, " railgate {v}");
            }
            if let Some(v) = flag(g.scaling_3d) {
                let _ = write!(out, " 3d-scaling {v}");
            }
            if !g.gpc_freq_hz.is_empty() {
                let gpc: Vec<String> = g.gpc_freq_hz.iter().map(|f| mhz(*f).to_string()).collect();
                let _ = write!(out, " gpc {} MHz", gpc.join("/"));
            }
            out.push('\n');
        }
        if let Some(e) = &self.emc {
            let load = e.load_pct.map(|l| format!("{l:.1}%")).unwrap_or_else(|| "?".into());
            let rate = e.rate_hz.map(|f| mhz(f).to_string()).unwrap_or_else(|| "?".into());
            let _ = write!(out, "emc      {load} @ {rate} MHz");
            if let Some(hi) = e.max_rate_hz {
                let _ = write!(out, " (max {} MHz)", mhz(hi));
            }
            out.push('\n');
        }
        if !self.engines.is_empty() {
            let on: Vec<String> = self
                .engines
                .iter()
                .filter(|e| e.on)
                .map(|e| {
                    let rate = e.clocks.iter().filter(|c| c.on == Some(true)).find_map(|c| c.rate_hz);
                    rate.map(|r| format!("{} {}MHz", e.name, mhz(r))).unwrap_or_else(|| e.name.clone())
                })
                .collect();
            let off: Vec<&str> = self.engines.iter().filter(|e| !e.on).map(|e| e.name.as_str()).collect();
            let _ = writeln!(
                out,
                "engines  {}{}{}",
                if on.is_empty() { "none on".to_owned() } else { on.join(", ") },
                if off.is_empty() { "" } else { "; off: " },
                off.join(" ")
            );
        }
        if !self.thermal.is_empty() {
            let temps: Vec<String> = self
                .thermal
                .iter()
                .map(|z| {
                    let name = z.name.strip_suffix("-thermal").or(z.name.strip_suffix("-therm")).unwrap_or(&z.name);
                    match z.temp_c {
                        Some(t) if !z.measures_temperature => format!("{name}@{t:.1}C(fixed)"),
                        Some(t) => format!("{name}@{t:.1}C"),
                        None => format!("{name}@off"),
                    }
                })
                .collect();
            let _ = writeln!(out, "temp     {}", temps.join(" "));
        }
        if !self.hwmon_temps.is_empty() {
            let temps: Vec<String> = self
                .hwmon_temps
                .iter()
                .map(|t| {
                    let v = t.temp_c.map(|c| format!("{c:.1}C")).unwrap_or_else(|| "?".into());
                    let alarm = if t.alarm == Some(true) { " ALARM" } else { "" };
                    format!("{} {} {v}{alarm}", t.device, t.label)
                })
                .collect();
            let _ = writeln!(out, "sensors  {}", temps.join(", "));
        }
        if !self.power.is_empty() {
            let rails: Vec<String> = self
                .power
                .iter()
                .map(|r| {
                    let alarm = match (r.crit_alarm, r.warn_alarm) {
                        (Some(true), _) => " CRIT",
                        (_, Some(true)) => " WARN",
                        _ => "",
                    };
                    format!("{} {}mW/{}mW{alarm}", r.name, r.power_mw, r.avg_mw)
                })
                .collect();
            let _ = write!(out, "power    {}", rails.join(" "));
            if let Some(t) = &self.power_total {
                let _ = write!(out, "  total {}mW/{}mW ({})", t.power_mw, t.avg_mw, t.source);
            }
            out.push('\n');
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
            let _ = write!(out, "mode     {} {}", m.id, m.name.as_deref().unwrap_or("(unnamed)"));
            if let Some(on) = self.jetson_clocks {
                let _ = write!(out, "  jetson_clocks {}", if on { "on" } else { "off" });
            }
            out.push('\n');
        } else if let Some(on) = self.jetson_clocks {
            let _ = writeln!(out, "clocks   jetson_clocks {}", if on { "on" } else { "off" });
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

/// Cores with the same state, as ranges: `0-3 1190MHz schedutil (115-1728 MHz)`, `8-11 offline`.
fn core_groups(cores: &[CpuCore]) -> Vec<String> {
    let describe = |c: &CpuCore| {
        if !c.online {
            return "offline".to_owned();
        }
        let mut d = c.cur_freq_hz.map(|f| format!("{}MHz", mhz(f))).unwrap_or_else(|| "?MHz".into());
        if let Some(g) = &c.governor {
            d.push(' ');
            d.push_str(g);
        }
        if let (Some(lo), Some(hi)) = (c.min_freq_hz, c.max_freq_hz) {
            d.push_str(&format!(" ({}-{} MHz)", mhz(lo), mhz(hi)));
        }
        d
    };
    let mut groups: Vec<(u32, u32, String)> = Vec::new();
    for c in cores {
        let d = describe(c);
        match groups.last_mut() {
            Some((_, last, prev)) if *prev == d && *last + 1 == c.id => *last = c.id,
            _ => groups.push((c.id, c.id, d)),
        }
    }
    groups.into_iter().map(|(a, b, d)| if a == b { format!("{a} {d}") } else { format!("{a}-{b} {d}") }).collect()
}
