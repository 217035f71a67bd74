//! Image platforms (`os/arch[/variant]`).

use serde::Serialize;

/// A string that is not an `os/arch[/variant]` platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform: `{platform}` is not a platform (expected os/arch[/variant], e.g. linux/arm64)")]
pub struct BadPlatform {
    pub platform: String,
}

/// An `os/arch[/variant]` platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `linux/arm64`, `linux/arm64/v8`, `linux/amd64`; `aarch64` and `x86_64` are accepted as aliases.
    pub fn parse(s: &str) -> Result<Self, BadPlatform> {
        let bad = || BadPlatform { platform: s.to_owned() };
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(ok) || parts[0] != "linux" {
            return Err(bad());
        }
        Ok(Self {
            os: parts[0].to_owned(),
            architecture: normalise_arch(parts[1]).to_owned(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// The platform of this machine, as Docker picks it: on a Jetson `linux/arm64/v8`.
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "aarch64" => ("arm64", Some("v8")),
            "x86_64" => ("amd64", None),
            "arm" => ("arm", Some("v7")),
            other => (other, None),
        };
        Self { os: "linux".into(), architecture: arch.into(), variant: variant.map(str::to_owned) }
    }

    /// How well an index entry fits: `None` if not at all, higher is better (exact variant over none).
    pub(crate) fn fit(&self, os: &str, arch: &str, variant: Option<&str>) -> Option<u8> {
        if os != self.os || normalise_arch(arch) != self.architecture {
            return None;
        }
        match (self.variant.as_deref(), variant) {
            (Some(w), Some(v)) if w == v => Some(2),
            (_, None) => Some(1),
            (None, Some(_)) => Some(1),
            // arm64 images without a v8 mark are the same thing
            (Some(_), Some(_)) => None,
        }
    }
}

fn normalise_arch(a: &str) -> &str {
    match a {
        "aarch64" => "arm64",
        "x86_64" | "x86-64" => "amd64",
        other => other,
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}
