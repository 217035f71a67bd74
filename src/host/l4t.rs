//! L4T (Linux for Tegra) and JetPack versions: parsing, the L4T -> JetPack table, the software stack each
//! release ships, and the image compatibility rule that jetson-containers uses.
//!
//! Pure functions over strings: no file system access here (the host probe reads the files and hands the text in),
//! so every rule is unit-tested exhaustively. Facts come from `shared/jetson-facts.md`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

/// Error parsing an L4T version or one of the files that carry it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The text is not an L4T version such as `36.4.3` or `r35.4.1`.
    #[error("`{0}` is not an L4T version (expected e.g. 36.4.3 or r35.4.1)")]
    BadVersion(String),
    /// An `L4T_VERSION` value that is not a release; the hint says what it looks like instead.
    #[error("`{value}` is not an L4T version (expected e.g. 36.4.3 or r35.4.1){hint}")]
    BadOverride { value: String, hint: String },
    /// The first line of `/etc/nv_tegra_release` lacks the `# R<major> (release), REVISION: <minor>.<patch>` form.
    #[error("nv_tegra_release first line `{0}` lacks `# R<major> (release), REVISION: <minor>.<patch>`; the file may be truncated: reinstall nvidia-l4t-core or set L4T_VERSION")]
    BadTegraRelease(String),
}

/// An L4T release, e.g. 36.4.3 (R36, revision 4.3). Missing parts read as 0 (`38.2` is 38.2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct L4tVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl L4tVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }

    /// Parses the version token found in image tags and files: `36.4.3`, `36.4`, `r36.4.0`, `R32.7.1`.
    /// Returns `None` for anything else, including versions with more than three parts.
    pub(crate) fn parse_token(token: &str) -> Option<Self> {
        let s = token.strip_prefix(['r', 'R']).unwrap_or(token);
        let mut parts = s.split('.');
        let major = parse_part(parts.next()?)?;
        let minor = match parts.next() {
            Some(p) => parse_part(p)?,
            None => return None, // a bare "r36" is too vague to be a release
        };
        let patch = match parts.next() {
            Some(p) => parse_part(p)?,
            None => 0,
        };
        if parts.next().is_some() || !(20..100).contains(&major) {
            return None;
        }
        Some(Self::new(major, minor, patch))
    }

    /// The JetPack release NVIDIA shipped with this L4T, if it is in the table.
    pub fn jetpack(&self) -> Option<&'static str> {
        JETPACK_TABLE.iter().find(|(v, _)| v == self).map(|(_, jp)| *jp)
    }

    /// The JetPack major version: from the table, or from the L4T major when the exact release is unknown
    /// (R32 -> 4, R34/R35 -> 5, R36 -> 6, R38 -> 7).
    pub fn jetpack_major(&self) -> Option<u32> {
        if let Some(jp) = self.jetpack() {
            return jp.split(['.', ' ']).next().and_then(|m| m.parse().ok());
        }
        match self.major {
            32 => Some(4),
            34 | 35 => Some(5),
            36 => Some(6),
            38 | 39 => Some(7),
            _ => None,
        }
    }

    /// The Ubuntu, CUDA, cuDNN and TensorRT versions this L4T release ships, where known.
    pub fn stack(&self) -> SoftwareStack {
        let (ubuntu, cuda, cudnn, tensorrt) = match (self.major, self.minor) {
            (32, _) => (Some("18.04"), Some("10.2"), None, None),
            (35, _) => (Some("20.04"), Some("11.4"), None, Some("8.5")),
            (36, 2) | (36, 3) => (Some("22.04"), Some("12.2"), None, None),
            (36, m) if m >= 4 => (Some("22.04"), Some("12.6"), Some("9.3"), Some("10.3")),
            (38, _) => (Some("24.04"), Some("13.0"), None, None),
            _ => (None, None, None, None),
        };
        SoftwareStack {
            ubuntu: ubuntu.map(str::to_owned),
            cuda: cuda.map(str::to_owned),
            cudnn: cudnn.map(str::to_owned),
            tensorrt: tensorrt.map(str::to_owned),
        }
    }

    /// Whether a container image built for `image` runs on a host with this L4T, by the jetson-containers rule:
    /// R38/R39 hosts take any image; R36 hosts take R36 images on the same side of 36.4; R35 and R34 hosts take
    /// any image of their major; R32.7+ hosts take any R32 image from 32.7 on; otherwise the versions must be equal.
    pub(crate) fn accepts_image(&self, image: &L4tVersion) -> bool {
        let host = *self;
        let boundary = L4tVersion::new(36, 4, 0);
        match host.major {
            38 | 39 => true,
            36 => image.major == 36 && ((host >= boundary) == (*image >= boundary)),
            35 | 34 => image.major == host.major,
            32 if host >= L4tVersion::new(32, 7, 0) => image.major == 32 && *image >= L4tVersion::new(32, 7, 0),
            _ => host == *image,
        }
    }
}

fn parse_part(p: &str) -> Option<u32> {
    if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

impl fmt::Display for L4tVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for L4tVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse_token(s.trim()).ok_or_else(|| Error::BadVersion(s.trim().to_owned()))
    }
}

impl Serialize for L4tVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for L4tVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Reads an `L4T_VERSION` override like [`L4tVersion::from_str`]; the error also says what a rejected value looks
/// like: a bare major (`36` spans releases that take different images) or a JetPack release (`6.2`).
pub(crate) fn parse_override(value: &str) -> Result<L4tVersion, Error> {
    let value = value.trim();
    if let Some(v) = L4tVersion::parse_token(value) {
        return Ok(v);
    }
    let latest_of = |major: u32| JETPACK_TABLE.iter().rev().find(|(v, _)| v.major == major).map(|(v, _)| *v);
    let bare = value.strip_prefix(['r', 'R']).unwrap_or(value);
    let number = (!bare.is_empty() && bare.len() <= 2 && bare.bytes().all(|b| b.is_ascii_digit()))
        .then(|| bare.parse::<u32>().ok())
        .flatten();
    let jetpack = JETPACK_TABLE.iter().find(|(_, jp)| jp.split(' ').next() == Some(value)).map(|(v, _)| *v);
    let jetpack_major =
        |jp: u32| JETPACK_TABLE.iter().rev().find(|(_, j)| j.split('.').next() == Some(&jp.to_string()));
    let hint = match (jetpack, number) {
        (Some(l4t), _) => format!(": {value} looks like a JetPack release; JetPack {value} is L4T {l4t}"),
        (None, Some(n)) => match (latest_of(n), jetpack_major(n)) {
            (Some(latest), _) => format!(
                ": `{value}` names only the major, and R{n} releases differ in the images they take; write the \
                 whole release, e.g. {latest}"
            ),
            (None, Some((l4t, _))) => {
                format!(": {value} looks like a JetPack major; JetPack {n} is L4T R{}, e.g. {l4t}", l4t.major)
            }
            (None, None) => String::new(),
        },
        (None, None) => String::new(),
    };
    Err(Error::BadOverride { value: value.chars().take(40).collect(), hint })
}

/// L4T release -> JetPack release, from NVIDIA's release notes (see shared/jetson-facts.md).
/// 36.4.2 is listed as "6.1" since sources disagree between "6.1 rev1" and "6.1.1".
const JETPACK_TABLE: &[(L4tVersion, &str)] = &[
    (L4tVersion::new(32, 7, 1), "4.6.1"),
    (L4tVersion::new(32, 7, 2), "4.6.2"),
    (L4tVersion::new(32, 7, 3), "4.6.3"),
    (L4tVersion::new(32, 7, 4), "4.6.4"),
    (L4tVersion::new(32, 7, 5), "4.6.5"),
    (L4tVersion::new(32, 7, 6), "4.6.6"),
    (L4tVersion::new(35, 1, 0), "5.0.2"),
    (L4tVersion::new(35, 2, 1), "5.1"),
    (L4tVersion::new(35, 3, 1), "5.1.1"),
    (L4tVersion::new(35, 4, 1), "5.1.2"),
    (L4tVersion::new(35, 5, 0), "5.1.3"),
    (L4tVersion::new(35, 6, 0), "5.1.4"),
    (L4tVersion::new(35, 6, 1), "5.1.5"),
    (L4tVersion::new(35, 6, 2), "5.1.5"),
    (L4tVersion::new(36, 2, 0), "6.0 DP"),
    (L4tVersion::new(36, 3, 0), "6.0"),
    (L4tVersion::new(36, 4, 0), "6.1"),
    (L4tVersion::new(36, 4, 2), "6.1"),
    (L4tVersion::new(36, 4, 3), "6.2"),
    (L4tVersion::new(36, 4, 4), "6.2.1"),
    (L4tVersion::new(36, 4, 7), "6.2.1"),
    (L4tVersion::new(38, 2, 0), "7.0"),
    (L4tVersion::new(38, 4, 0), "7.1"),
];

/// The user-space stack an L4T release ships; `None` where the facts do not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftwareStack {
    pub ubuntu: Option<String>,
    pub cuda: Option<String>,
    pub cudnn: Option<String>,
    pub tensorrt: Option<String>,
}

/// Reads the L4T version from the text of `/etc/nv_tegra_release`. Only the first line counts: R32/R35 files are
/// one line, R36 files add `# KERNEL_VARIANT: oot` and similar lines after it.
pub(crate) fn parse_nv_tegra_release(text: &str) -> Result<L4tVersion, Error> {
    let first = text.lines().next().unwrap_or("").trim();
    let bad = || Error::BadTegraRelease(first.chars().take(120).collect());
    let rest = first.strip_prefix('#').ok_or_else(bad)?.trim_start();
    let rest = rest.strip_prefix('R').ok_or_else(bad)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major: u32 = digits.parse().map_err(|_| bad())?;
    let revision =
        first.split(',').find_map(|field| field.trim().strip_prefix("REVISION:")).map(str::trim).ok_or_else(bad)?;
    let mut parts = revision.split('.');
    let minor = parts.next().and_then(parse_part).ok_or_else(bad)?;
    let patch = match parts.next() {
        Some(p) => parse_part(p).ok_or_else(bad)?,
        None => 0,
    };
    Ok(L4tVersion::new(major, minor, patch))
}

/// The installed packages of dpkg's status file (`/var/lib/dpkg/status`) as `(package, version)`: stanzas whose
/// `Status` ends in ` installed` (removed packages keep a stanza with `deinstall ok config-files`).
pub(crate) fn dpkg_installed(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split("\n\n").filter_map(|stanza| {
        let (mut name, mut version, mut installed) = (None, None, true);
        for line in stanza.lines() {
            if let Some(n) = line.strip_prefix("Package:") {
                name = Some(n.trim());
            } else if let Some(status) = line.strip_prefix("Status:") {
                installed = status.trim().ends_with(" installed");
            } else if let Some(v) = line.strip_prefix("Version:") {
                version = Some(v.trim());
            }
        }
        Some((name?, version?)).filter(|_| installed)
    })
}

/// Reads the `nvidia-l4t-core` version from the text of dpkg's status file (`/var/lib/dpkg/status`), keeping the
/// part before `-` (`36.4.3-20250107174145` -> 36.4.3). `None` when the package is absent or not installed.
pub(crate) fn parse_dpkg_status(text: &str) -> Option<L4tVersion> {
    let (_, v) = dpkg_installed(text).find(|(name, _)| *name == "nvidia-l4t-core")?;
    L4tVersion::parse_token(v.split('-').next()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> L4tVersion {
        s.parse().unwrap()
    }

    #[test]
    fn parses_tokens_with_and_without_prefix() {
        assert_eq!(v("36.4.3"), L4tVersion::new(36, 4, 3));
        assert_eq!(v("r35.4.1"), L4tVersion::new(35, 4, 1));
        assert_eq!(v("R32.7.1"), L4tVersion::new(32, 7, 1));
        assert_eq!(v("38.2"), L4tVersion::new(38, 2, 0));
        assert_eq!(L4tVersion::parse_token("r36"), None);
        assert_eq!(L4tVersion::parse_token("1.2.3.4"), None);
        assert_eq!(L4tVersion::parse_token("roscore"), None);
        assert_eq!(L4tVersion::parse_token("2.2"), None, "a package version is not an L4T release");
        assert!("36.x".parse::<L4tVersion>().is_err());
    }

    #[test]
    fn jetpack_table_matches_release_notes() {
        let cases = [
            ("32.7.1", Some("4.6.1")),
            ("32.7.6", Some("4.6.6")),
            ("35.1.0", Some("5.0.2")),
            ("35.2.1", Some("5.1")),
            ("35.4.1", Some("5.1.2")),
            ("35.6.2", Some("5.1.5")),
            ("36.2.0", Some("6.0 DP")),
            ("36.3.0", Some("6.0")),
            ("36.4.0", Some("6.1")),
            ("36.4.2", Some("6.1")),
            ("36.4.3", Some("6.2")),
            ("36.4.7", Some("6.2.1")),
            ("38.2", Some("7.0")),
            ("38.4", Some("7.1")),
            ("36.9.9", None),
            ("32.4.4", None),
        ];
        for (l4t, jp) in cases {
            assert_eq!(v(l4t).jetpack(), jp, "L4T {l4t}");
        }
        assert_eq!(v("36.2.0").jetpack_major(), Some(6));
        assert_eq!(v("36.9.9").jetpack_major(), Some(6), "unknown R36 release still is JetPack 6");
        assert_eq!(v("32.7.1").jetpack_major(), Some(4));
        assert_eq!(v("31.1.0").jetpack_major(), None);
    }

    #[test]
    fn stack_follows_l4t_branch() {
        let s = v("36.4.3").stack();
        assert_eq!(s.cuda.as_deref(), Some("12.6"));
        assert_eq!(s.cudnn.as_deref(), Some("9.3"));
        assert_eq!(s.tensorrt.as_deref(), Some("10.3"));
        assert_eq!(s.ubuntu.as_deref(), Some("22.04"));
        assert_eq!(v("36.3.0").stack().cuda.as_deref(), Some("12.2"));
        assert_eq!(v("35.4.1").stack().tensorrt.as_deref(), Some("8.5"));
        assert_eq!(v("32.7.1").stack().cuda.as_deref(), Some("10.2"));
        assert_eq!(v("38.2").stack().ubuntu.as_deref(), Some("24.04"));
        assert_eq!(v("30.1.0").stack(), SoftwareStack::default());
    }

    #[test]
    fn compatibility_rule_of_jetson_containers() {
        let yes = [
            ("38.2", "36.4.0"),
            ("38.2", "35.4.1"),
            ("36.4.3", "36.4.0"),
            ("36.4.3", "36.4.7"),
            ("36.3.0", "36.2.0"),
            ("36.2.0", "36.3.0"),
            ("35.4.1", "35.1.0"),
            ("35.4.1", "35.6.0"),
            ("34.1.1", "34.1.0"),
            ("32.7.1", "32.7.6"),
            ("32.7.4", "32.7.1"),
            ("32.6.1", "32.6.1"),
        ];
        let no = [
            ("36.4.3", "36.3.0"),
            ("36.3.0", "36.4.0"),
            ("36.4.3", "35.4.1"),
            ("35.4.1", "36.4.0"),
            ("35.4.1", "32.7.1"),
            ("32.7.1", "32.6.1"),
            ("32.7.1", "35.1.0"),
            ("32.6.1", "32.7.1"),
            ("31.1.0", "31.1.1"),
        ];
        for (host, image) in yes {
            assert!(v(host).accepts_image(&v(image)), "host {host} should accept image {image}");
        }
        for (host, image) in no {
            assert!(!v(host).accepts_image(&v(image)), "host {host} should reject image {image}");
        }
    }

    #[test]
    fn l4t_version_override_errors_say_what_the_value_looks_like() {
        assert_eq!(parse_override(" 36.4.3 "), Ok(L4tVersion::new(36, 4, 3)));
        assert_eq!(parse_override("r35.4.1"), Ok(L4tVersion::new(35, 4, 1)));
        let err = |v: &str| parse_override(v).unwrap_err().to_string();
        assert_eq!(
            err("36"),
            "`36` is not an L4T version (expected e.g. 36.4.3 or r35.4.1): `36` names only the major, and R36 \
             releases differ in the images they take; write the whole release, e.g. 36.4.7"
        );
        assert!(err("r35").contains("e.g. 35.6.2"), "{}", err("r35"));
        assert!(
            err("6.2").ends_with(": 6.2 looks like a JetPack release; JetPack 6.2 is L4T 36.4.3"),
            "{}",
            err("6.2")
        );
        assert!(err("5.1.2").ends_with("JetPack 5.1.2 is L4T 35.4.1"), "{}", err("5.1.2"));
        assert!(
            err("6").ends_with(": 6 looks like a JetPack major; JetPack 6 is L4T R36, e.g. 36.4.7"),
            "{}",
            err("6")
        );
        assert_eq!(err("latest"), "`latest` is not an L4T version (expected e.g. 36.4.3 or r35.4.1)");
        assert_eq!(err("99"), "`99` is not an L4T version (expected e.g. 36.4.3 or r35.4.1)");
        assert!(err(&"9".repeat(500)).len() < 120, "the value is cut short in the message");
    }

    #[test]
    fn reads_one_line_and_multi_line_tegra_release() {
        let r36 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n";
        assert_eq!(parse_nv_tegra_release(r36), Ok(L4tVersion::new(36, 4, 3)));
        let r32 = "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022";
        assert_eq!(parse_nv_tegra_release(r32), Ok(L4tVersion::new(32, 7, 1)));
        let r35 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023";
        assert_eq!(parse_nv_tegra_release(r35), Ok(L4tVersion::new(35, 4, 1)));
    }

    #[test]
    fn truncated_tegra_release_is_an_error_not_a_guess() {
        for text in
            ["", "# R36 (rel", "# R36 (release), REVISION: ", "garbage\x00\x01", "# Rxx (release), REVISION: 4.3"]
        {
            let err = parse_nv_tegra_release(text).unwrap_err();
            assert!(err.to_string().contains("L4T_VERSION"), "{err}");
        }
    }

    #[test]
    fn dpkg_status_gives_installed_core_version() {
        let status = "Package: nvidia-l4t-kernel\nStatus: install ok installed\nVersion: 5.15.148-tegra-36.4.3-20250107174145\n\nPackage: nvidia-l4t-core\nStatus: install ok installed\nArchitecture: arm64\nVersion: 36.4.3-20250107174145\n\nPackage: zlib1g\nVersion: 1:1.2.11\n";
        assert_eq!(parse_dpkg_status(status), Some(L4tVersion::new(36, 4, 3)));
        let removed = "Package: nvidia-l4t-core\nStatus: deinstall ok config-files\nVersion: 35.4.1-20230801124926\n";
        assert_eq!(parse_dpkg_status(removed), None);
        assert_eq!(parse_dpkg_status("Package: bash\nVersion: 5.1\n"), None);
    }
}
