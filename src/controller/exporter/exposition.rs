//! The two exposition formats a Prometheus server scrapes: the classic text format 0.0.4 (the default here)
//! and OpenMetrics 1.0.0 (when the scraper's `Accept` prefers it), written from one list of families.
//!
//! Pure: it only formats what it is given. It owns the format rules (HELP/TYPE/UNIT lines, `_total` and
//! `_info` suffixes, label-value escaping, number spelling, `# EOF`) and must not know what the metrics mean.
//!
//! Why not a crate: `prometheus` (tikv) writes only the text format and `prometheus-client` only OpenMetrics,
//! and both want metric objects registered up front, while every series here is a projection of the fleet
//! state made at scrape time (devices come and go). The encoder is the few rules below, and the tests check its
//! output with `promtool check metrics` (text) and a real Prometheus scraping it (OpenMetrics).

use std::fmt::Write as _;

/// The content type of the text format.
pub(crate) const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which exposition format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// The format a scraper asked for in its `Accept` header: OpenMetrics when it ranks
    /// `application/openmetrics-text` at least as high as `text/plain` (or lists no text type), else text.
    /// No header, or one that names neither, gets text.
    pub(crate) fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::Text };
        let (mut om, mut text): (Option<f64>, Option<f64>) = (None, None);
        for part in accept.split(',') {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or("").to_ascii_lowercase();
            let q = params
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                .filter(|q| q.is_finite())
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut om,
                "text/plain" | "text/*" | "*/*" => &mut text,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |old: f64| old.max(q)));
        }
        match (om, text) {
            (Some(o), t) if o > 0.0 && o >= t.unwrap_or(0.0) => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Gauge,
    /// Its name ends in `_total`; OpenMetrics names the family without it.
    Counter,
    /// Constant 1 carrying labels; its name ends in `_info`. A gauge in the text format.
    Info,
}

/// One family: its full sample name (with `_total` / `_info`), type, unit (a suffix of the name) and help.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<&'static str>,
    pub help: &'static str,
}

/// Writes families and their samples, in order. Every sample belongs to the family started last, so a family's
/// samples are contiguous as both formats require.
pub(crate) struct Encoder {
    format: Format,
    out: String,
    current: &'static str,
}

impl Encoder {
    /// An encoder writing `format`, with room for `capacity` bytes.
    pub(crate) fn new(format: Format, capacity: usize) -> Encoder {
        Encoder { format, out: String::with_capacity(capacity), current: "" }
    }

    /// Starts a family: its HELP and TYPE lines (and UNIT, in OpenMetrics).
    pub(crate) fn family(&mut self, f: &Family) {
        debug_assert!(match f.kind {
            Kind::Counter => f.name.ends_with("_total"),
            Kind::Info => f.name.ends_with("_info"),
            Kind::Gauge => !f.name.ends_with("_total"),
        });
        self.current = f.name;
        let (family, kind) = match (self.format, f.kind) {
            (Format::Text, Kind::Gauge | Kind::Info) => (f.name, "gauge"),
            (Format::Text, Kind::Counter) => (f.name, "counter"),
            (Format::OpenMetrics, Kind::Gauge) => (f.name, "gauge"),
            (Format::OpenMetrics, Kind::Counter) => (f.name.trim_end_matches("_total"), "counter"),
            (Format::OpenMetrics, Kind::Info) => (f.name.trim_end_matches("_info"), "info"),
        };
        let _ = write!(self.out, "# HELP {family} ");
        escape(&mut self.out, f.help, self.format == Format::OpenMetrics);
        let _ = writeln!(self.out, "\n# TYPE {family} {kind}");
        if let (Format::OpenMetrics, Some(unit)) = (self.format, f.unit) {
            let _ = writeln!(self.out, "# UNIT {family} {unit}");
        }
    }

    /// One sample of the current family. Labels with an empty value are left out (Prometheus treats an empty
    /// label as an absent one).
    pub(crate) fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(self.current);
        let mut first = true;
        for (name, v) in labels.iter().filter(|(_, v)| !v.is_empty()) {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            self.out.push_str(name);
            self.out.push_str("=\"");
            escape(&mut self.out, v, true);
            self.out.push('"');
        }
        if !first {
            self.out.push('}');
        }
        self.out.push(' ');
        number(&mut self.out, value);
        self.out.push('\n');
    }

    /// The exposition, with `# EOF` in OpenMetrics.
    pub(crate) fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// Escapes `\` and newlines (and `"` when `quote`): label values in both formats, HELP text in OpenMetrics.
fn escape(out: &mut String, s: &str, quote: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Spells a value as both formats accept it: shortest round-trip decimal, `NaN`, `+Inf`, `-Inf`.
fn number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Family = Family { name: "x_temp_celsius", kind: Kind::Gauge, unit: Some("celsius"), help: "a \\ b\nc" };
    const C: Family = Family { name: "x_dropped_total", kind: Kind::Counter, unit: None, help: "dropped" };
    const I: Family = Family { name: "x_device_info", kind: Kind::Info, unit: None, help: "facts \"quoted\"" };

    fn write(format: Format) -> String {
        let mut e = Encoder::new(format, 0);
        e.family(&G);
        e.sample(&[("device", "a"), ("zone", "cpu-thermal")], 44.125);
        e.sample(&[("device", "b\"\\\nx"), ("group", "")], f64::NAN);
        e.family(&C);
        e.sample(&[("device", "a")], 3.0);
        e.family(&I);
        e.sample(&[("device", "a"), ("model", "Orin")], 1.0);
        e.family(&Family { name: "x_up", kind: Kind::Gauge, unit: None, help: "up" });
        e.sample(&[], f64::INFINITY);
        e.sample(&[], f64::NEG_INFINITY);
        e.finish()
    }

    #[test]
    fn text_format_has_help_type_escaped_labels_and_no_eof() {
        let t = write(Format::Text);
        assert_eq!(
            t,
            "# HELP x_temp_celsius a \\\\ b\\nc\n# TYPE x_temp_celsius gauge\n\
             x_temp_celsius{device=\"a\",zone=\"cpu-thermal\"} 44.125\n\
             x_temp_celsius{device=\"b\\\"\\\\\\nx\"} NaN\n\
             # HELP x_dropped_total dropped\n# TYPE x_dropped_total counter\nx_dropped_total{device=\"a\"} 3\n\
             # HELP x_device_info facts \"quoted\"\n# TYPE x_device_info gauge\nx_device_info{device=\"a\",model=\"Orin\"} 1\n\
             # HELP x_up up\n# TYPE x_up gauge\nx_up +Inf\nx_up -Inf\n"
        );
    }

    #[test]
    fn openmetrics_names_families_without_suffixes_and_ends_with_eof() {
        let t = write(Format::OpenMetrics);
        assert!(t.contains("# TYPE x_temp_celsius gauge\n# UNIT x_temp_celsius celsius\n"), "{t}");
        assert!(t.contains("# TYPE x_dropped counter\nx_dropped_total{device=\"a\"} 3\n"), "{t}");
        assert!(t.contains("# HELP x_device facts \\\"quoted\\\"\n# TYPE x_device info\nx_device_info{"), "{t}");
        assert!(t.ends_with("x_up -Inf\n# EOF\n"), "{t}");
    }

    #[test]
    fn accept_header_picks_openmetrics_only_when_preferred() {
        use Format::*;
        // What Prometheus 2.x sends.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), OpenMetrics);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text")), OpenMetrics);
        assert_eq!(Format::negotiate(None), Text);
        assert_eq!(Format::negotiate(Some("*/*")), Text);
        assert_eq!(Format::negotiate(Some("text/plain;version=0.0.4")), Text);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;q=0.2, text/plain")), Text);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;q=0, */*")), Text);
        assert_eq!(Format::negotiate(Some("application/json")), Text);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;q=nonsense")), OpenMetrics);
    }
}
