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
