//! JetPack-matched tag resolution: given the host's L4T release and a repository's tag list, pick the tag that
//! `{auto}` stands for, and explain why every other candidate lost.
//!
//! A pure function over (host release, pattern, tags): no network, no file system. The compatibility rule and
//! the JetPack table come from `crate::host::l4t` and are not repeated here. Fetching tags and pinning the chosen tag
//! to a digest is `crate::image::pull`'s job.
//!
//! Ranking, best first (docs/images.md):
//! 1. not newer than the host before newer than the host;
//! 2. an L4T token (`r36.4.0`) before a JetPack-only token (`jetpack6`, `jp6`);
//! 3. for releases not newer than the host the newest first; for newer ones the closest to the host first;
//! 4. fewer variant tokens (`cu128`, `24.04`) first: they mark builds for a non-default stack;
//! 5. the higher package version first (`2.2-r35.4.1` before `2.1-r35.4.1`);
//! 6. the tag text in byte order, smaller first (only so the choice is deterministic).

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;

use crate::host::l4t::L4tVersion;
use crate::image::reference::AUTO;

/// The release an image tag says it was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Token {
    /// An L4T token: `r36.4.0`, `2.2-r35.4.1`, `l4t-r36.2.0`.
    L4t { version: L4tVersion },
    /// A JetPack token: `jetpack6`, `jp6`, `jp6.1`.
    Jetpack { major: u32, minor: Option<u32> },
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::L4t { version } => write!(f, "L4T {version}"),
            Token::Jetpack { major, minor: Some(m) } => write!(f, "JetPack {major}.{m}"),
            Token::Jetpack { major, minor: None } => write!(f, "JetPack {major}"),
        }
    }
}

/// Reads the release token of a tag: the first `-`/`_`-separated part that starts with `r`/`R` and parses as an
/// L4T version (the jetson-containers rule), else the first `jetpackN[.M]` / `jpN[.M]` part.
pub fn read_token(tag: &str) -> Option<Token> {
    let parts = || tag.split(['-', '_']);
    if let Some(version) = parts().filter(|p| p.starts_with(['r', 'R'])).find_map(L4tVersion::parse_token) {
        return Some(Token::L4t { version });
    }
    parts().find_map(|p| {
        let lower = p.to_ascii_lowercase();
        let num = lower.strip_prefix("jetpack").or_else(|| lower.strip_prefix("jp"))?;
        let (major, minor) = match num.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (num, None),
        };
        let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || minor.is_some_and(|m| !digits(m)) {
            return None;
        }
        Some(Token::Jetpack { major: major.parse().ok()?, minor: minor.and_then(|m| m.parse().ok()) })
    })
}

/// Why a candidate tag was not chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Rejection {
    /// The tag matches the pattern but carries no L4T or JetPack token.
    NoReleaseToken,
    /// The image's release does not run on the host's.
    Incompatible { token: Token, rule: String },
    /// Compatible, but another candidate ranks higher.
    Outranked { by: String, because: String },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NoReleaseToken => write!(f, "no L4T (r36.4.0) or JetPack (jetpack6, jp6) token in the tag"),
            Rejection::Incompatible { token, rule } => {
                write!(f, "built for {token}: incompatible, {rule}")
            }
            Rejection::Outranked { by, because } => {
                write!(f, "compatible, but `{by}` ranks higher: {because}")
            }
        }
    }
}

/// One tag that matched the pattern, with its token and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub tag: String,
    pub token: Option<Token>,
    /// `None` for the chosen tag.
    pub rejection: Option<Rejection>,
}

/// The outcome of resolving an `{auto}` tag pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The tag pattern, e.g. `humble-ros-base-{auto}`.
    pub pattern: String,
    /// The host release the decision was made for.
    pub host: L4tVersion,
    /// The chosen tag, if any candidate is compatible.
    pub chosen: Option<String>,
    /// Every tag that matched the pattern, chosen first, then in rank order, then the incompatible ones.
    pub candidates: Vec<Candidate>,
    /// How many tags of the repository did not match the literal text around `{auto}`.
    pub unmatched: usize,
}

impl Decision {
    /// The rejected candidates with their reasons.
    pub fn rejected(&self) -> impl Iterator<Item = (&str, &Rejection)> {
        self.candidates.iter().filter_map(|c| c.rejection.as_ref().map(|r| (c.tag.as_str(), r)))
    }
}

/// Whether `tag` matches `pattern` (one `{auto}` standing for a non-empty run of characters).
pub fn matches_pattern(pattern: &str, tag: &str) -> bool {
    let Some((prefix, suffix)) = pattern.split_once(AUTO) else {
        return pattern == tag;
    };
    tag.len() > prefix.len() + suffix.len() && tag.starts_with(prefix) && tag.ends_with(suffix)
}

fn wildcard<'a>(pattern: &str, tag: &'a str) -> &'a str {
    match pattern.split_once(AUTO) {
        Some((prefix, suffix)) => &tag[prefix.len()..tag.len() - suffix.len()],
        None => "",
    }
}

/// Describes which images a host release accepts, in the words of the rule in `L4tVersion::accepts_image`.
pub fn accepted_range(host: L4tVersion) -> String {
    match host.major {
        38 | 39 => format!("host L4T {host} takes any image"),
        36 if host >= L4tVersion::new(36, 4, 0) => {
            format!("host L4T {host} takes R36 images from 36.4.0 on")
        }
        36 => format!("host L4T {host} takes R36 images before 36.4.0"),
        34 | 35 => format!("host L4T {host} takes R{} images only", host.major),
        32 if host >= L4tVersion::new(32, 7, 0) => {
            format!("host L4T {host} takes R32 images from 32.7.0 on")
        }
        _ => format!("host L4T {host} takes exactly L4T {host}"),
    }
}

/// Whether the host runs an image built for `token`. JetPack-only tokens match on the JetPack major; a
/// `jp6.N` token also has to sit on the host's side of the 36.4 boundary (JetPack 6.0 is R36.3, 6.1+ is R36.4).
fn compatible(host: L4tVersion, token: &Token) -> bool {
    match *token {
        Token::L4t { version } => host.accepts_image(&version),
        Token::Jetpack { major, minor } => {
            if host.jetpack_major() != Some(major) {
                return false;
            }
            match (major, minor) {
                (6, Some(m)) if host.major == 36 => (m >= 1) == (host >= L4tVersion::new(36, 4, 0)),
                _ => true,
            }
        }
    }
}

/// The host's JetPack release as (major, minor), minor 0 when only the major is known.
fn host_jetpack(host: L4tVersion) -> Option<(u32, u32)> {
    let major = host.jetpack_major()?;
    let minor = host.jetpack().and_then(|j| j.split([' ', '.']).nth(1)).and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Rank key of a compatible candidate; smaller sorts first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    newer_than_host: bool,
    jetpack_only: bool,
    /// Distance-like key: for releases not newer than the host, the negated release; else the release.
    release: [i64; 3],
    variant_tokens: usize,
    package_version: std::cmp::Reverse<Vec<u32>>,
    tag: String,
}

fn rank(host: L4tVersion, pattern: &str, tag: &str, token: &Token) -> Rank {
    let (release, newer) = match *token {
        Token::L4t { version } => ([version.major as i64, version.minor as i64, version.patch as i64], version > host),
        Token::Jetpack { major, minor } => {
            let img = (major, minor.unwrap_or(0));
            let newer = host_jetpack(host).is_some_and(|h| img > h);
            ([major as i64, minor.unwrap_or(0) as i64, 0], newer)
        }
    };
    let release = if newer { release } else { release.map(|x| -x) };
    let wild = wildcard(pattern, tag);
    let variant_tokens = wild.split(['-', '_']).filter(|p| is_variant_token(p)).count();
    let package_version = wild
        .split(['-', '_'])
        .find_map(|p| {
            let nums: Option<Vec<u32>> = p.split('.').map(|n| n.parse().ok()).collect();
            nums.filter(|_| !is_variant_token(p))
        })
        .unwrap_or_default();
    Rank {
        newer_than_host: newer,
        jetpack_only: matches!(token, Token::Jetpack { .. }),
        release,
        variant_tokens,
        package_version: std::cmp::Reverse(package_version),
        tag: tag.to_owned(),
    }
}

/// `cu128`-style CUDA tokens and `24.04`-style Ubuntu tokens.
fn is_variant_token(p: &str) -> bool {
    let cuda =
        p.strip_prefix("cu").is_some_and(|d| (2..=4).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    let ubuntu =
        matches!(p.split_once('.'), Some((y, m)) if y.len() == 2 && m == "04" && y.bytes().all(|b| b.is_ascii_digit()));
    cuda || ubuntu
}

fn why_outranked(winner: &Rank, loser: &Rank, winner_token: &Token, loser_token: &Token) -> String {
    if winner.newer_than_host != loser.newer_than_host {
        return format!("{loser_token} is newer than the host, {winner_token} is not");
    }
    if winner.jetpack_only != loser.jetpack_only {
        return "an L4T token is more precise than a JetPack-only token".into();
    }
    if winner.release != loser.release {
        return if winner.newer_than_host {
            format!("{winner_token} is closer to the host than {loser_token}")
        } else {
            format!("{winner_token} is newer than {loser_token}")
        };
    }
    if winner.variant_tokens != loser.variant_tokens {
        return "same release, and it has fewer variant tokens (cuNNN, NN.04)".into();
    }
    if winner.package_version != loser.package_version {
        return "same release, and its package version is higher".into();
    }
    "same release and rank; the tag that sorts first wins".into()
}

/// Resolves an `{auto}` tag `pattern` against `tags` for a host running L4T `host`.
///
/// Tags not matching the literal text around `{auto}` are only counted. The rest are read for a release token,
/// checked against the host with the jetson-containers rule, and ranked (see the module docs).
pub fn resolve(host: L4tVersion, pattern: &str, tags: &[String]) -> Decision {
    let mut unmatched = 0;
    let mut compatible_c: Vec<(String, Token, Rank)> = Vec::new();
    let mut rejected = Vec::new();
    for tag in tags {
        if !matches_pattern(pattern, tag) {
            unmatched += 1;
            continue;
        }
        match read_token(tag) {
            None => {
                rejected.push(Candidate { tag: tag.clone(), token: None, rejection: Some(Rejection::NoReleaseToken) })
            }
            Some(token) if !compatible(host, &token) => rejected.push(Candidate {
                tag: tag.clone(),
                token: Some(token),
                rejection: Some(Rejection::Incompatible {
                    token,
                    rule: match token {
                        Token::L4t { .. } => accepted_range(host),
                        Token::Jetpack { .. } => match host.jetpack_major() {
                            Some(m) if host.major == 36 => {
                                format!("host is JetPack {m} on L4T {host} (JetPack 6.0 is R36.3, 6.1 and later R36.4)")
                            }
                            Some(m) => format!("host is JetPack {m}"),
                            None => format!("host L4T {host} has no known JetPack release"),
                        },
                    },
                }),
            }),
            Some(token) => {
                let r = rank(host, pattern, tag, &token);
                compatible_c.push((tag.clone(), token, r));
            }
        }
    }
    compatible_c.sort_by(|a, b| a.2.cmp(&b.2));
    let mut candidates = Vec::with_capacity(compatible_c.len() + rejected.len());
    let chosen = compatible_c.first().map(|c| c.0.clone());
    if let Some((win_tag, win_token, win_rank)) = compatible_c.first() {
        for (i, (tag, token, r)) in compatible_c.iter().enumerate() {
            let rejection = (i > 0).then(|| Rejection::Outranked {
                by: win_tag.clone(),
                because: why_outranked(win_rank, r, win_token, token),
            });
            candidates.push(Candidate { tag: tag.clone(), token: Some(*token), rejection });
        }
    }
    candidates.extend(rejected);
    Decision { pattern: pattern.to_owned(), host, chosen, candidates, unmatched }
}

/// Orders by the natural reading of the rank; exposed for docs and tests of the tie-break order.
pub fn compare_tags(host: L4tVersion, pattern: &str, a: &str, b: &str) -> Option<Ordering> {
    let (ta, tb) = (read_token(a)?, read_token(b)?);
    Some(rank(host, pattern, a, &ta).cmp(&rank(host, pattern, b, &tb)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> L4tVersion {
        s.parse().unwrap()
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    // Host fixtures from shared/jetson-facts.md.
    const JP62: &str = "36.4.3"; // Orin Nano Super, JetPack 6.2
    const JP60: &str = "36.3.0"; // AGX Orin, JetPack 6.0
    const JP512: &str = "35.4.1"; // Orin NX, JetPack 5.1.2
    const JP461: &str = "32.7.1"; // Nano, JetPack 4.6.1

    /// dustynv/l4t-pytorch style: bare L4T tags and package-versioned ones.
    fn dustynv_pytorch() -> Vec<String> {
        tags(&[
            "r32.7.1",
            "r35.2.1",
            "r35.3.1",
            "r35.4.1",
            "2.1-r35.4.1",
            "2.2-r35.4.1",
            "r36.2.0",
            "2.2-r36.2.0",
            "r36.3.0",
            "r36.4.0",
            "2.7-r36.4.0-cu128-24.04",
            "r36.4.7",
            "latest",
        ])
    }

    /// dustynv/ros style: distro and flavour before the L4T token.
    fn dustynv_ros() -> Vec<String> {
        tags(&[
            "humble-ros-base-l4t-r32.7.1",
            "humble-ros-base-l4t-r35.4.1",
            "humble-ros-base-l4t-r36.2.0",
            "humble-ros-base-r36.4.0",
            "humble-desktop-l4t-r36.2.0",
            "iron-ros-base-l4t-r35.4.1",
            "humble-ros-base-r36.4.0-cu128-24.04",
        ])
    }

    /// NGC l4t-pytorch style: L4T token first, framework suffixes after.
    fn ngc_pytorch() -> Vec<String> {
        tags(&["r32.7.1-pth1.10-py3", "r35.1.0-pth1.13-py3", "r35.2.1-pth2.0-py3", "r36.2.0-pth2.2-py3"])
    }

    /// ultralytics style: JetPack major in the tag.
    fn ultralytics() -> Vec<String> {
        tags(&[
            "latest",
            "latest-jetson-jetpack4",
            "latest-jetson-jetpack5",
            "latest-jetson-jetpack6",
            "8.3.0-jetson-jetpack6",
            "latest-arm64",
        ])
    }

    fn chosen(host: &str, pattern: &str, list: &[String]) -> Option<String> {
        resolve(v(host), pattern, list).chosen
    }

    #[test]
    fn reads_l4t_and_jetpack_tokens() {
        let l4t = |s: &str| Some(Token::L4t { version: v(s) });
        assert_eq!(read_token("r36.4.0"), l4t("36.4.0"));
        assert_eq!(read_token("2.2-r35.4.1"), l4t("35.4.1"));
        assert_eq!(read_token("0.6.8-r36.4"), l4t("36.4.0"));
        assert_eq!(read_token("humble-ros-base-l4t-r36.2.0"), l4t("36.2.0"));
        assert_eq!(read_token("r35.2.1-pth2.0-py3"), l4t("35.2.1"));
        assert_eq!(read_token("R32.7.1_foo"), l4t("32.7.1"));
        assert_eq!(read_token("latest-jetson-jetpack6"), Some(Token::Jetpack { major: 6, minor: None }));
        assert_eq!(read_token("x-jp6.1"), Some(Token::Jetpack { major: 6, minor: Some(1) }));
        assert_eq!(read_token("jp5"), Some(Token::Jetpack { major: 5, minor: None }));
        assert_eq!(read_token("jetpack6-r36.4.0"), l4t("36.4.0"), "an L4T token is preferred");
        for none in ["latest", "humble-ros-base", "ros-r2", "r36", "jpx", "jetpack", "2.2", "jp123"] {
            assert_eq!(read_token(none), None, "{none}");
        }
    }

    #[test]
    fn pattern_matches_literal_text_around_auto() {
        assert!(matches_pattern("{auto}", "r36.4.0"));
        assert!(matches_pattern("humble-ros-base-{auto}", "humble-ros-base-l4t-r36.2.0"));
        assert!(!matches_pattern("humble-ros-base-{auto}", "humble-desktop-l4t-r36.2.0"));
        assert!(!matches_pattern("humble-ros-base-{auto}", "humble-ros-base-"), "auto is never empty");
        assert!(matches_pattern("{auto}-pth2.0-py3", "r35.2.1-pth2.0-py3"));
        assert!(!matches_pattern("{auto}-py3", "py3"));
        assert!(matches_pattern("fixed", "fixed"));
    }

    #[test]
    fn dustynv_pytorch_resolves_per_host() {
        let t = dustynv_pytorch();
        assert_eq!(chosen(JP62, "{auto}", &t).as_deref(), Some("r36.4.0"), "36.4.7 is newer than 36.4.3");
        assert_eq!(chosen(JP60, "{auto}", &t).as_deref(), Some("r36.3.0"));
        assert_eq!(chosen(JP512, "{auto}", &t).as_deref(), Some("2.2-r35.4.1"), "higher package version wins a tie");
        assert_eq!(chosen(JP461, "{auto}", &t).as_deref(), Some("r32.7.1"));
    }

    #[test]
    fn boundary_at_36_4_splits_jetpack_6() {
        let t = tags(&["r36.2.0", "r36.3.0", "r36.4.0", "r36.4.3"]);
        assert_eq!(chosen("36.4.0", "{auto}", &t).as_deref(), Some("r36.4.0"));
        assert_eq!(chosen("36.3.0", "{auto}", &t).as_deref(), Some("r36.3.0"));
        assert_eq!(chosen("36.2.0", "{auto}", &t).as_deref(), Some("r36.2.0"));
        assert_eq!(chosen("36.4.3", "{auto}", &t).as_deref(), Some("r36.4.3"));
        // A 36.4 host never takes a pre-36.4 image and vice versa, even when nothing else exists.
        assert_eq!(chosen("36.4.3", "{auto}", &tags(&["r36.3.0", "r36.2.0"])), None);
        assert_eq!(chosen("36.3.0", "{auto}", &tags(&["r36.4.0"])), None);
        let d = resolve(v("36.3.0"), "{auto}", &tags(&["r36.4.0"]));
        let (tag, why) = d.rejected().next().unwrap();
        assert_eq!(tag, "r36.4.0");
        assert_eq!(
            why.to_string(),
            "built for L4T 36.4.0: incompatible, host L4T 36.3.0 takes R36 images before 36.4.0"
        );
        let d = resolve(v("36.4.3"), "{auto}", &tags(&["r36.3.0"]));
        assert!(d.rejected().next().unwrap().1.to_string().contains("takes R36 images from 36.4.0 on"));
    }

    #[test]
    fn newer_than_host_is_a_last_resort_closest_first() {
        let t = tags(&["r36.4.7", "r36.4.4"]);
        assert_eq!(chosen("36.4.3", "{auto}", &t).as_deref(), Some("r36.4.4"));
        let d = resolve(v("36.4.3"), "{auto}", &tags(&["r36.4.7", "r36.4.0"]));
        assert_eq!(d.chosen.as_deref(), Some("r36.4.0"));
        let why = d.rejected().next().unwrap().1.to_string();
        assert_eq!(why, "compatible, but `r36.4.0` ranks higher: L4T 36.4.7 is newer than the host, L4T 36.4.0 is not");
    }

    #[test]
    fn dustynv_ros_uses_literal_text_and_skips_other_flavours() {
        let t = dustynv_ros();
        let p = "humble-ros-base-{auto}";
        assert_eq!(chosen(JP62, p, &t).as_deref(), Some("humble-ros-base-r36.4.0"), "no variant tokens");
        assert_eq!(chosen(JP60, p, &t).as_deref(), Some("humble-ros-base-l4t-r36.2.0"));
        assert_eq!(chosen(JP512, p, &t).as_deref(), Some("humble-ros-base-l4t-r35.4.1"));
        assert_eq!(chosen(JP461, p, &t).as_deref(), Some("humble-ros-base-l4t-r32.7.1"));
        let d = resolve(v(JP62), p, &t);
        assert_eq!(d.unmatched, 2, "humble-desktop and iron are not candidates");
        let cu = d.candidates.iter().find(|c| c.tag.ends_with("cu128-24.04")).unwrap();
        assert!(cu.rejection.as_ref().unwrap().to_string().contains("fewer variant tokens"), "{cu:?}");
    }

    #[test]
    fn ngc_tags_resolve_with_suffix_pattern() {
        let t = ngc_pytorch();
        let p = "{auto}-py3";
        assert_eq!(chosen(JP512, p, &t).as_deref(), Some("r35.2.1-pth2.0-py3"));
        assert_eq!(chosen(JP461, p, &t).as_deref(), Some("r32.7.1-pth1.10-py3"));
        assert_eq!(chosen(JP60, p, &t).as_deref(), Some("r36.2.0-pth2.2-py3"));
        assert_eq!(chosen(JP62, p, &t), None, "no 36.4 build: explain, do not guess");
        let d = resolve(v(JP62), p, &t);
        assert_eq!(d.rejected().count(), 4);
        assert!(d.rejected().all(|(_, r)| matches!(r, Rejection::Incompatible { .. })));
    }

    #[test]
    fn ultralytics_jetpack_tokens_match_jetpack_major() {
        let t = ultralytics();
        let p = "latest-jetson-{auto}";
        assert_eq!(chosen(JP62, p, &t).as_deref(), Some("latest-jetson-jetpack6"));
        assert_eq!(chosen(JP60, p, &t).as_deref(), Some("latest-jetson-jetpack6"));
        assert_eq!(chosen(JP512, p, &t).as_deref(), Some("latest-jetson-jetpack5"));
        assert_eq!(chosen(JP461, p, &t).as_deref(), Some("latest-jetson-jetpack4"));
        let d = resolve(v(JP512), p, &t);
        let why: Vec<_> = d.rejected().map(|(t, r)| format!("{t}: {r}")).collect();
        assert!(
            why.iter().any(|w| w == "latest-jetson-jetpack6: built for JetPack 6: incompatible, host is JetPack 5"),
            "{why:?}"
        );
        // A whole-tag pattern: the JetPack token sits in the wildcard text.
        assert_eq!(chosen(JP62, "{auto}", &t).as_deref(), Some("8.3.0-jetson-jetpack6"), "higher package version");
    }

    #[test]
    fn jetpack_minor_tokens_respect_the_36_4_boundary() {
        let t = tags(&["jp6.0", "jp6.1", "jp6.2"]);
        assert_eq!(chosen(JP62, "{auto}", &t).as_deref(), Some("jp6.2"));
        assert_eq!(chosen("36.4.0", "{auto}", &t).as_deref(), Some("jp6.1"), "6.2 is newer than 6.1");
        assert_eq!(chosen(JP60, "{auto}", &t).as_deref(), Some("jp6.0"));
        let d = resolve(v(JP60), "{auto}", &t);
        assert!(d.rejected().all(|(_, r)| r.to_string().contains("6.1 and later R36.4")), "{:?}", d.candidates);
    }

    #[test]
    fn l4t_token_beats_jetpack_only_token() {
        let t = tags(&["jetpack6", "r36.4.0"]);
        let d = resolve(v(JP62), "{auto}", &t);
        assert_eq!(d.chosen.as_deref(), Some("r36.4.0"));
        assert!(d.rejected().next().unwrap().1.to_string().contains("more precise"));
    }

    #[test]
    fn tags_without_token_are_explained() {
        let d = resolve(v(JP62), "{auto}", &dustynv_pytorch());
        let latest = d.candidates.iter().find(|c| c.tag == "latest").unwrap();
        assert_eq!(latest.rejection, Some(Rejection::NoReleaseToken));
        assert_eq!(d.candidates[0].tag, "r36.4.0");
        assert!(d.candidates[0].rejection.is_none());
        assert_eq!(d.candidates.len(), dustynv_pytorch().len());
        assert!(d.rejected().all(|(t, _)| t != "r36.4.0"));
    }

    #[test]
    fn r38_host_takes_anything_and_old_hosts_need_equal_versions() {
        let t = dustynv_pytorch();
        assert_eq!(chosen("38.2", "{auto}", &t).as_deref(), Some("r36.4.7"), "newest not newer than 38.2");
        assert_eq!(chosen("32.6.1", "{auto}", &t), None);
        assert_eq!(chosen("32.6.1", "{auto}", &tags(&["r32.6.1", "r32.7.1"])).as_deref(), Some("r32.6.1"));
    }

    #[test]
    fn tie_break_order_is_total_and_documented() {
        let h = v(JP62);
        let lt = |a: &str, b: &str| assert_eq!(compare_tags(h, "{auto}", a, b), Some(Ordering::Less), "{a} < {b}");
        lt("r36.4.3", "r36.4.0"); // newest not newer than host
        lt("r36.4.0", "r36.4.7"); // not newer before newer
        lt("r36.4.4", "r36.4.7"); // closest newer first
        lt("r36.4.0", "jetpack6"); // L4T token before JetPack-only
        lt("r36.4.0", "r36.4.0-cu128"); // fewer variant tokens
        lt("2.2-r36.4.0", "2.1-r36.4.0"); // higher package version
        lt("a-r36.4.0", "b-r36.4.0"); // byte order last
        let empty = resolve(h, "{auto}", &[]);
        assert_eq!((empty.chosen, empty.candidates.len(), empty.unmatched), (None, 0, 0));
    }
}
