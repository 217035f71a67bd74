//! Load averages (/proc/loadavg) and uptime (/proc/uptime).

use super::*;

pub(super) fn read_loadavg(reader: &mut Reader, path: &Path, w: &mut Vec<String>) -> Option<[f64; 3]> {
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

pub(super) fn read_uptime(reader: &mut Reader, path: &Path, w: &mut Vec<String>) -> Option<f64> {
    let text = read_warn(reader, path, w)?;
    match text.split_ascii_whitespace().next().map(str::parse::<f64>) {
        Some(Ok(v)) if v.is_finite() && v >= 0.0 => Some(v),
        _ => {
            w.push(format!("{}: expected seconds since boot, found `{}`", path.display(), snippet(text.trim())));
            None
        }
    }
}
