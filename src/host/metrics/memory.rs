//! Memory and swap from /proc/meminfo, with both meanings of "used" and the GPU's NvMap share.

use super::*;

/// The /proc/meminfo keys read, in the order of the values array.
const KEYS: [&str; 9] =
    ["MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached", "SwapTotal", "SwapFree", "SwapCached", "NvMapMemUsed"];

/// Memory and swap from /proc/meminfo (values in kB).
pub(super) fn read_meminfo(reader: &mut Reader, path: &Path, w: &mut Vec<String>) -> (Option<Memory>, Option<Swap>) {
    let Some(text) = read_warn(reader, path, w) else {
        return (None, None);
    };
    let mut v: [Option<u64>; KEYS.len()] = [None; KEYS.len()];
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
    let [total, avail, free, buffers, cached, swap_total, swap_free, swap_cached, nvmap] = v;
    let memory = match (total, avail.or_else(|| Some(free? + buffers? + cached?))) {
        (Some(total), Some(available)) => Some(Memory {
            total_bytes: total,
            available_bytes: available,
            used_bytes: total.saturating_sub(available),
            used_tegrastats_bytes: (|| Some(total.saturating_sub(free? + buffers? + cached?)))(),
            free_bytes: free,
            buffers_bytes: buffers,
            cached_bytes: cached,
            gpu_shared_bytes: nvmap,
        }),
        _ => {
            w.push(format!("{}: `MemTotal` or `MemAvailable` missing", path.display()));
            None
        }
    };
    let swap = match (swap_total, swap_free) {
        (Some(t), Some(f)) => Some(Swap { total_bytes: t, used_bytes: t.saturating_sub(f), cached_bytes: swap_cached }),
        _ => {
            w.push(format!("{}: `SwapTotal` or `SwapFree` missing", path.display()));
            None
        }
    };
    (memory, swap)
}
