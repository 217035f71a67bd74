//! CPU load from /proc/stat: per-core and total busy percentages from two samples' jiffies.

use super::*;

// ---------------------------------------------------------------------------------------------------------
// procfs

/// Jiffies of one /proc/stat `cpu` line: `id` is `None` for the all-cores line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct CpuTimes {
    pub(super) id: Option<u32>,
    pub(super) busy: u64,
    pub(super) total: u64,
}

/// Parses one `cpu`/`cpuN` line of /proc/stat. Busy is everything but idle and iowait; guest time is already
/// inside user time, so only the first eight fields (user..steal) count.
pub(super) fn parse_cpu_line(line: &str) -> Result<CpuTimes, String> {
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
pub(super) fn busy_pct(now: &CpuTimes, prev: Option<&CpuTimes>) -> f64 {
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

pub(super) fn read_cpu(
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
