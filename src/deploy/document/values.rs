//! The value types of deployment documents and how each is written: durations (`"1m30s"`), sizes (`"512m"`),
//! the `gpu` flag or CDI name, `tcp` targets and `env` tables or lists. Pure parsing, no IO.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as seconds (`90`, `1.5`) or a string of number+unit parts (`"1m30s"`, `"500ms"`, `"2h"`).
/// Written back as the canonical string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationSpec(pub Duration);

impl DurationSpec {
    /// Parses `"1h2m3s"`, `"500ms"`, `"10s"`, or a bare number of seconds (`"90"`, `"1.5"`).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let s = text.trim();
        let bad = || format!("`{text}` is not a duration; write e.g. \"10s\", \"1m30s\", \"500ms\" or seconds");
        if s.is_empty() {
            return Err(bad());
        }
        if let Ok(secs) = s.parse::<f64>() {
            return Self::from_secs_f64(secs).ok_or_else(bad);
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
            if num_len == 0 {
                return Err(bad());
            }
            let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
            rest = &rest[num_len..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86_400.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total += Self::from_secs_f64(value * scale).ok_or_else(bad)?.0;
        }
        Ok(Self(total))
    }

    fn from_secs_f64(secs: f64) -> Option<Self> {
        (secs.is_finite() && (0.0..=1e9).contains(&secs)).then(|| Self(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let (h, m, s, rest) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (rest, "ms")] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| de::Error::custom("expected a duration such as \"10s\" or seconds"))? {
            Raw::Int(n) => Ok(Self(Duration::from_secs(n))),
            Raw::Float(x) => Self::from_secs_f64(x)
                .ok_or_else(|| de::Error::custom(format!("{x} is not a duration in seconds (0 or more)"))),
            Raw::Text(t) => Self::parse(&t).map_err(de::Error::custom),
        }
    }
}

/// A size in bytes, written as bytes (`536870912`) or number+unit (`"512m"`, `"8g"`, `"1.5GiB"`); units are
/// binary (k = 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"512m"`, `"8g"`, `"64k"`, `"1.5GiB"`, `"100b"` or a bare number of bytes.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{text}` is not a size; write e.g. \"512m\", \"8g\" or a number of bytes");
        let s = text.trim().to_ascii_lowercase();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, unit) = (&s[..split], s[split..].trim());
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit = unit.strip_suffix('b').unwrap_or(unit);
        let unit = unit.strip_suffix('i').unwrap_or(unit);
        let scale: u64 = match unit {
            "" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            "t" => 1 << 40,
            _ => return Err(bad()),
        };
        let bytes = value * scale as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(Self(bytes.round() as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| de::Error::custom("expected a size such as \"512m\" or bytes"))? {
            Raw::Int(n) => Ok(Self(n)),
            Raw::Text(t) => Self::parse(&t).map_err(de::Error::custom),
        }
    }
}

/// `gpu`: `false` (none), `true` (every GPU, i.e. `all`) or a CDI device name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gpu(pub Option<String>);

impl Serialize for Gpu {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0.as_deref() {
            None => s.serialize_bool(false),
            Some("all") => s.serialize_bool(true),
            Some(name) => s.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for Gpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Name(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| de::Error::custom("expected true, false or a CDI device name such as \"nvidia.com/gpu=0\""))?
        {
            Raw::Flag(false) => Ok(Self(None)),
            Raw::Flag(true) => Ok(Self(Some("all".into()))),
            Raw::Name(n) => Ok(Self(Some(n))),
        }
    }
}

/// `tcp`: `"host:port"`, or a bare port meaning `127.0.0.1:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TcpTarget(pub String);

impl<'de> Deserialize<'de> for TcpTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Port(u16),
            Addr(String),
        }
        match Raw::deserialize(d).map_err(|_| de::Error::custom("expected \"host:port\" or a port number"))? {
            Raw::Port(p) => Ok(Self(format!("127.0.0.1:{p}"))),
            Raw::Addr(a) => Ok(Self(a)),
        }
    }
}

/// `env`: a table `{ KEY = "value" }` or a list `["KEY=value"]`; kept as a sorted table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Env(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Env {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Value {
            Text(String),
            Int(i64),
            Float(f64),
            Bool(bool),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Table(BTreeMap<String, Value>),
            List(Vec<String>),
        }
        let raw = Raw::deserialize(d)
            .map_err(|_| de::Error::custom("expected a table of KEY = \"value\" or a list of \"KEY=value\" strings"))?;
        let mut out = BTreeMap::new();
        match raw {
            Raw::Table(t) => {
                for (k, v) in t {
                    let v = match v {
                        Value::Text(s) => s,
                        Value::Int(n) => n.to_string(),
                        Value::Float(x) => x.to_string(),
                        Value::Bool(b) => b.to_string(),
                    };
                    out.insert(k, v);
                }
            }
            Raw::List(l) => {
                for entry in l {
                    let (k, v) = entry
                        .split_once('=')
                        .ok_or_else(|| de::Error::custom(format!("`{entry}` must be KEY=value")))?;
                    out.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        Ok(Self(out))
    }
}
