//! Network interface byte rates from /proc/net/dev.

use super::*;

/// Interfaces from /proc/net/dev (loopback left out), with rates against `prev` over `elapsed`.
/// `counters` receives this sample's counters for the next call.
pub(super) fn read_net(
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
