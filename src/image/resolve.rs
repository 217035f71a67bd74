//! JetPack-matched tag resolution: given the host's L4T release and a repository's tag list, pick the tag that
//! `{auto}` stands for, and explain why every other candidate lost.
//!
//! A pure function over (host release, pattern, tags): no network, no file system. The compatibility rule and
//! the JetPack table come from `crate::host::l4t` and are not repeated here. Fetching tags and pinning the chosen tag
//! to a digest is `crate::image::pull`'s job.
//!
//! Ranking of the compatible candidates, best first (docs/images.md): the newest software wins.
//! 1. the higher package version, the part before the release token (`0.8.6-r36.4` before `0.6.3-r36.4.0`,
//!    `1.10-r32.7.1` before `1.9-r32.7.1`); a tag that names one before a tag that names none;
//! 2. not newer than the host before newer than the host;
//! 3. an L4T token (`r36.4.0`) before a JetPack-only token (`jetpack6`, `jp6`);
//! 4. the release closest to the host: not newer, the newest first; newer, the closest first;
//! 5. fewer extra tokens (`ggml`, `builder`, `main`, git hashes): plain `r35.4.1` before `ggml-r35.4.1`. CUDA
//!    (`cu128`) and Ubuntu (`24.04`) tokens and the words `l4t`, `jetson`, `arm64`, `aarch64` are neither
//!    penalised nor required (a pattern that spells them out requires them);
//! 6. for candidates still tied: the image's creation time, newest first, which the caller asks the registry for
//!    ([`Decision::tied`], at most [`MAX_TIE_QUERIES`] tags) and hands to [`resolve_with_created`];
//! 7. the tag text in byte order, smaller first (only so the choice is deterministic).

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::host::l4t::L4tVersion;
use crate::image::reference::AUTO;

/// The release an image tag says it was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[cfg(test)]
pub(crate) fn read_token(tag: &str) -> Option<Token> {
    let parts: Vec<&str> = tag.split(['-', '_']).collect();
    find_token(&parts).map(|(_, token)| token)
}

/// The release token among a tag's parts and its index (see [`read_token`]).
fn find_token(parts: &[&str]) -> Option<(usize, Token)> {
    let l4t = parts.iter().enumerate().filter(|(_, p)| p.starts_with(['r', 'R']));
    if let Some((i, version)) = l4t.clone().find_map(|(i, p)| Some((i, L4tVersion::parse_token(p)?))) {
        return Some((i, Token::L4t { version }));
    }
    parts.iter().enumerate().find_map(|(i, p)| jetpack_token(p).map(|t| (i, t)))
}

/// A `jetpackN[.M]` / `jpN[.M]` part.
fn jetpack_token(p: &str) -> Option<Token> {
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
}

/// Why a candidate tag was not chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Rejection {
    /// The registry listed a name that is not a tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`): never asked for.
    NotATag,
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
            Rejection::NotATag => write!(f, "not a valid tag (1-128 of [A-Za-z0-9_.-], not starting with . or -)"),
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub tag: String,
    pub token: Option<Token>,
    /// `None` for the chosen tag.
    pub rejection: Option<Rejection>,
    /// How the tag reads besides its release token; `None` for tags without one.
    #[serde(default)]
    pub reading: Option<Reading>,
    /// The image's creation time (RFC 3339) where the registry was asked for it (tied candidates only).
    #[serde(default)]
    pub created: Option<String>,
}

/// The parts of a tag's `{auto}` text other than its release token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// The package version before the release token: `0.8.6` in `0.8.6-r36.4-cu128-24.04`.
    pub version: Option<String>,
    /// Parts that mark a special build: `ggml`, `builder`, `main`, a git hash; fewer is better.
    pub extras: Vec<String>,
    /// CUDA and Ubuntu tokens (`cu128`, `24.04`): neither penalised nor required.
    pub variants: Vec<String>,
}

/// The outcome of resolving an `{auto}` tag pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The tag pattern, e.g. `humble-ros-base-{auto}`.
    pub pattern: String,
    /// The host release the decision was made for.
    pub host: L4tVersion,
    /// The chosen tag, if any candidate is compatible.
    pub chosen: Option<String>,
    /// Why the chosen tag won, in words (package version, release, extra tokens, creation time).
    #[serde(default)]
    pub chosen_because: Option<String>,
    /// Every tag that matched the pattern, chosen first, then in rank order, then the incompatible ones.
    pub candidates: Vec<Candidate>,
    /// How many tags of the repository did not match the literal text around `{auto}`.
    pub unmatched: usize,
    /// The best compatible candidates when two or more tie on every tag rule, in byte order: their images'
    /// creation times decide (ask the registry about [`Decision::tie_queries`], then [`resolve_with_created`]).
    #[serde(default)]
    pub tied: Vec<String>,
}

impl Decision {
    /// The rejected candidates with their reasons.
    pub fn rejected(&self) -> impl Iterator<Item = (&str, &Rejection)> {
        self.candidates.iter().filter_map(|c| c.rejection.as_ref().map(|r| (c.tag.as_str(), r)))
    }

    /// The tied candidates whose creation time is worth asking the registry for: the first
    /// [`MAX_TIE_QUERIES`] of [`Decision::tied`].
    pub fn tie_queries(&self) -> &[String] {
        &self.tied[..self.tied.len().min(MAX_TIE_QUERIES)]
    }
}

/// At most this many tied candidates get their creation time asked of the registry (each costs a manifest and a
/// config request); the rest of a larger tie rank after them in tag order.
pub const MAX_TIE_QUERIES: usize = 8;

/// An image's creation time as the registry gave it, or why it is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The `created` field of the image config.
    At(DateTime<Utc>),
    /// The registry did not say (an error, or no `created` field): the reason.
    Unknown(String),
}

/// Whether `tag` matches `pattern` (one `{auto}` standing for a non-empty run of characters).
pub(crate) fn matches_pattern(pattern: &str, tag: &str) -> bool {
    let Some((prefix, suffix)) = pattern.split_once(AUTO) else {
        return pattern == tag;
    };
    tag.len() > prefix.len() + suffix.len() && tag.starts_with(prefix) && tag.ends_with(suffix)
}

/// The byte range of the `{auto}` text in a tag that matches the pattern.
fn wildcard_range(pattern: &str, tag: &str) -> std::ops::Range<usize> {
    match pattern.split_once(AUTO) {
        Some((prefix, suffix)) => prefix.len()..tag.len() - suffix.len(),
        None => 0..0,
    }
}

/// Describes which images a host release accepts, in the words of the rule in `L4tVersion::accepts_image`.
pub(crate) fn accepted_range(host: L4tVersion) -> String {
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

/// A package version as tags write it before the release token: `2.2`, `0.8.6`, `1.20.2`, `0.6.6.post1`,
/// `2.0rc1`, `v2`. Parts compare as numbers (`1.10` is higher than `1.9`), missing parts count as 0 (`2.2` is
/// `2.2.0`), then dev < a < b < rc < release < post. Build numbers (`b5283`) and git hashes (`607dc5a`) are
/// not versions: they cannot be ordered against one.
#[derive(Debug, Clone)]
struct PackageVersion {
    numbers: Vec<u64>,
    /// (kind, number): dev 0, a 1, b 2, rc 3, release 4, post 5.
    suffix: (u8, u64),
}

impl PackageVersion {
    fn parse(part: &str) -> Option<Self> {
        let body = part.strip_prefix(['v', 'V']).unwrap_or(part);
        if !body.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let number = |n: &str| -> Option<u64> {
            (!n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit())).then(|| n.parse().ok())?
        };
        let cut = body.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(body.len());
        let (nums, rest) = body.split_at(cut);
        let nums = if rest.is_empty() { nums } else { nums.strip_suffix('.').unwrap_or(nums) };
        let numbers = nums.split('.').map(number).collect::<Option<Vec<u64>>>()?;
        if numbers.len() > 5 {
            return None;
        }
        let suffix = if rest.is_empty() {
            (4, 0)
        } else {
            let word_end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
            let (word, digits) = rest.split_at(word_end);
            let kind = match word.to_ascii_lowercase().as_str() {
                "dev" => 0,
                "a" | "alpha" => 1,
                "b" | "beta" => 2,
                "rc" => 3,
                "post" => 5,
                _ => return None,
            };
            (kind, if digits.is_empty() { 0 } else { number(digits)? })
        };
        Some(Self { numbers, suffix })
    }
}

impl Ord for PackageVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.numbers.len().max(other.numbers.len());
        let at = |v: &Self, i: usize| v.numbers.get(i).copied().unwrap_or(0);
        (0..len)
            .map(|i| at(self, i).cmp(&at(other, i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
            .then(self.suffix.cmp(&other.suffix))
    }
}

impl PartialOrd for PackageVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PackageVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PackageVersion {}

/// Words that name the platform every candidate is built for, not a flavour of the build.
const PLATFORM_WORDS: &[&str] = &["l4t", "jetson", "arm64", "aarch64"];

/// `cu128`-style CUDA tokens and `24.04`-style Ubuntu tokens.
fn is_variant_token(p: &str) -> bool {
    let cuda =
        p.strip_prefix("cu").is_some_and(|d| (2..=4).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    let ubuntu =
        matches!(p.split_once('.'), Some((y, m)) if y.len() == 2 && m == "04" && y.bytes().all(|b| b.is_ascii_digit()));
    cuda || ubuntu
}

/// A tag read for ranking: its release token, package version and other parts of the `{auto}` text. `None`
/// for a tag without a release token.
fn read_tag(pattern: &str, tag: &str) -> Option<(Token, Option<PackageVersion>, Reading)> {
    let wild = wildcard_range(pattern, tag);
    let mut parts = Vec::new();
    let mut start = 0;
    for p in tag.split(['-', '_']) {
        parts.push((start, p));
        start += p.len() + 1;
    }
    let texts: Vec<&str> = parts.iter().map(|(_, p)| *p).collect();
    let (release_at, token) = find_token(&texts)?;
    let (mut version, mut reading) = (None, Reading::default());
    for (i, &(start, p)) in parts.iter().enumerate() {
        // Parts in the pattern's literal text are the same for every candidate.
        let in_wildcard = start < wild.end && start + p.len() > wild.start;
        if i == release_at || p.is_empty() || !in_wildcard || PLATFORM_WORDS.contains(&p.to_ascii_lowercase().as_str())
        {
            continue;
        }
        if is_variant_token(p) {
            reading.variants.push(p.to_owned());
            continue;
        }
        let parsed = (i < release_at && version.is_none()).then(|| PackageVersion::parse(p)).flatten();
        match parsed {
            Some(v) => {
                version = Some(v);
                reading.version = Some(p.to_owned());
            }
            None => reading.extras.push(p.to_owned()),
        }
    }
    Some((token, version, reading))
}

/// Rank key of a compatible candidate by the tag rules 1-5 (module docs); smaller sorts first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    version: Reverse<Option<PackageVersion>>,
    newer_than_host: bool,
    jetpack_only: bool,
    /// Distance-like key: for releases not newer than the host, the negated release; else the release.
    release: [i64; 3],
    extras: usize,
}

fn rank(host: L4tVersion, token: &Token, version: Option<PackageVersion>, reading: &Reading) -> Rank {
    let (release, newer) = match *token {
        Token::L4t { version } => ([version.major as i64, version.minor as i64, version.patch as i64], version > host),
        Token::Jetpack { major, minor } => {
            let img = (major, minor.unwrap_or(0));
            let newer = host_jetpack(host).is_some_and(|h| img > h);
            ([major as i64, minor.unwrap_or(0) as i64, 0], newer)
        }
    };
    Rank {
        version: Reverse(version),
        newer_than_host: newer,
        jetpack_only: matches!(token, Token::Jetpack { .. }),
        release: if newer { release } else { release.map(|x| -x) },
        extras: reading.extras.len(),
    }
}

/// A compatible candidate on its way through the ranking.
struct Ranked<'a> {
    tag: &'a str,
    token: Token,
    reading: Reading,
    rank: Rank,
    created: Option<&'a Created>,
}

impl Ranked<'_> {
    /// Known creation times first, newest first.
    fn created_key(&self) -> (bool, Reverse<Option<DateTime<Utc>>>) {
        let at = match self.created {
            Some(Created::At(t)) => Some(*t),
            _ => None,
        };
        (at.is_none(), Reverse(at))
    }
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn extras_text(r: &Reading) -> String {
    if r.extras.is_empty() {
        "none".into()
    } else {
        r.extras.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
    }
}

/// Why `loser` ranks below `winner`: the first rule that tells them apart.
fn why_outranked(host: L4tVersion, winner: &Ranked<'_>, loser: &Ranked<'_>, asked: bool) -> String {
    let (w, l) = (&winner.rank, &loser.rank);
    if w.version != l.version {
        return match (&winner.reading.version, &loser.reading.version) {
            (Some(a), Some(b)) => format!("package version {a} is higher than {b}"),
            (Some(a), None) => format!("it names package version {a}, this tag names none"),
            _ => "its package version is higher".into(),
        };
    }
    if w.newer_than_host != l.newer_than_host {
        return format!("{} is newer than the host, {} is not", loser.token, winner.token);
    }
    if w.jetpack_only != l.jetpack_only {
        return "an L4T token is more precise than a JetPack-only token".into();
    }
    if w.release != l.release {
        return format!("{} is closer to the host (L4T {host}) than {}", winner.token, loser.token);
    }
    if w.extras != l.extras {
        return format!(
            "same package version and release, and fewer extra tokens ({} against {})",
            extras_text(&winner.reading),
            extras_text(&loser.reading)
        );
    }
    let tie = "ties on every tag rule";
    match (winner.created, loser.created) {
        (Some(Created::At(a)), Some(Created::At(b))) if a != b => {
            format!("{tie}; its image was created later ({} against {})", rfc3339(a), rfc3339(b))
        }
        (Some(Created::At(a)), Some(Created::Unknown(why))) => {
            format!("{tie}; its image was created {}, this one's creation time is unknown: {why}", rfc3339(a))
        }
        (Some(Created::At(a)), None) => format!(
            "{tie}; its image was created {}; this tag was not asked about (only the first {MAX_TIE_QUERIES} tied \
             tags in tag order are)",
            rfc3339(a)
        ),
        _ if !asked => {
            format!("{tie}; the registry was not asked for creation times, so the tag that sorts first wins")
        }
        _ => format!("{tie} and no creation time tells them apart; the tag that sorts first wins"),
    }
}

/// The chosen tag's reading in words.
fn why_chosen(host: L4tVersion, win: &Ranked<'_>, compatible: usize, tied: usize) -> String {
    let mut words = Vec::new();
    if compatible == 1 {
        words.push("the only compatible tag".to_owned());
    }
    words.push(match &win.reading.version {
        Some(v) => format!("package version {v}"),
        None => "no package version".into(),
    });
    words.push(if win.rank.newer_than_host {
        format!("{} (newer than the host L4T {host}: no older compatible build)", win.token)
    } else {
        win.token.to_string()
    });
    words.push(format!("extra tokens: {}", extras_text(&win.reading)));
    if !win.reading.variants.is_empty() {
        words.push(format!("CUDA/Ubuntu tokens: {}", win.reading.variants.join(", ")));
    }
    if tied > 1 {
        words.push(match win.created {
            Some(Created::At(t)) => {
                format!("created {}, the latest of {tied} tags that tie on every tag rule", rfc3339(t))
            }
            _ => format!("first in tag order of {tied} tags that tie on every tag rule (no creation time known)"),
        });
    }
    words.join("; ")
}

/// Resolves an `{auto}` tag `pattern` against `tags` for a host running L4T `host` by the tag rules alone.
///
/// Tags not matching the literal text around `{auto}` are only counted. The rest are read for a release token,
/// checked against the host with the jetson-containers rule, and ranked (see the module docs). When the best
/// candidates tie ([`Decision::tied`]), the caller asks the registry for their creation times and calls
/// [`resolve_with_created`]; without them the tag that sorts first wins.
pub fn resolve(host: L4tVersion, pattern: &str, tags: &[String]) -> Decision {
    resolve_with_created(host, pattern, tags, &BTreeMap::new())
}

/// [`resolve`], with the creation times of (some of) the tied candidates, by tag.
pub fn resolve_with_created(
    host: L4tVersion,
    pattern: &str,
    tags: &[String],
    created: &BTreeMap<String, Created>,
) -> Decision {
    let mut unmatched = 0;
    let mut compatible_c: Vec<Ranked<'_>> = Vec::new();
    let mut rejected = Vec::new();
    for tag in tags {
        if !matches_pattern(pattern, tag) {
            unmatched += 1;
            continue;
        }
        // Tags come from the registry, and the chosen or tied ones go into request paths.
        let valid = tag.len() <= 128
            && tag.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            let shown: String = tag.chars().take(140).collect();
            rejected.push(Candidate {
                tag: shown,
                token: None,
                rejection: Some(Rejection::NotATag),
                reading: None,
                created: None,
            });
            continue;
        }
        let Some((token, version, reading)) = read_tag(pattern, tag) else {
            rejected.push(Candidate {
                tag: tag.clone(),
                token: None,
                rejection: Some(Rejection::NoReleaseToken),
                reading: None,
                created: None,
            });
            continue;
        };
        if !compatible(host, &token) {
            let rule = match token {
                Token::L4t { .. } => accepted_range(host),
                Token::Jetpack { .. } => match host.jetpack_major() {
                    Some(m) if host.major == 36 => {
                        format!("host is JetPack {m} on L4T {host} (JetPack 6.0 is R36.3, 6.1 and later R36.4)")
                    }
                    Some(m) => format!("host is JetPack {m}"),
                    None => format!("host L4T {host} has no known JetPack release"),
                },
            };
            rejected.push(Candidate {
                tag: tag.clone(),
                token: Some(token),
                rejection: Some(Rejection::Incompatible { token, rule }),
                reading: Some(reading),
                created: None,
            });
            continue;
        }
        let rank = rank(host, &token, version, &reading);
        compatible_c.push(Ranked { tag, token, reading, rank, created: created.get(tag.as_str()) });
    }
    compatible_c.sort_by(|a, b| {
        a.rank.cmp(&b.rank).then_with(|| a.created_key().cmp(&b.created_key())).then_with(|| a.tag.cmp(b.tag))
    });
    let mut tied: Vec<String> = match compatible_c.first() {
        Some(best) => compatible_c.iter().filter(|c| c.rank == best.rank).map(|c| c.tag.to_owned()).collect(),
        None => Vec::new(),
    };
    tied.sort();
    if tied.len() < 2 {
        tied.clear();
    }
    let mut candidates = Vec::with_capacity(compatible_c.len() + rejected.len());
    let (mut chosen, mut chosen_because) = (None, None);
    if let Some(win) = compatible_c.first() {
        chosen = Some(win.tag.to_owned());
        chosen_because = Some(why_chosen(host, win, compatible_c.len(), tied.len()));
        for (i, c) in compatible_c.iter().enumerate() {
            let rejection = (i > 0).then(|| Rejection::Outranked {
                by: win.tag.to_owned(),
                because: why_outranked(host, win, c, !created.is_empty()),
            });
            candidates.push(Candidate {
                tag: c.tag.to_owned(),
                token: Some(c.token),
                rejection,
                reading: Some(c.reading.clone()),
                created: match c.created {
                    Some(Created::At(t)) => Some(rfc3339(t)),
                    _ => None,
                },
            });
        }
    }
    candidates.extend(rejected);
    Decision { pattern: pattern.to_owned(), host, chosen, chosen_because, candidates, unmatched, tied }
}

/// Orders two tags by the tag rules (no creation time), then byte order; `None` when one has no release token.
#[cfg(test)]
pub(crate) fn compare_tags(host: L4tVersion, pattern: &str, a: &str, b: &str) -> Option<Ordering> {
    let key = |t: &str| read_tag(pattern, t).map(|(token, version, reading)| rank(host, &token, version, &reading));
    Some(key(a)?.cmp(&key(b)?).then_with(|| a.cmp(b)))
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
        assert_eq!(chosen(JP62, "{auto}", &t).as_deref(), Some("2.7-r36.4.0-cu128-24.04"), "the only package version");
        assert_eq!(chosen(JP60, "{auto}", &t).as_deref(), Some("2.2-r36.2.0"), "a package version beats none");
        assert_eq!(chosen(JP512, "{auto}", &t).as_deref(), Some("2.2-r35.4.1"), "higher package version");
        assert_eq!(chosen(JP461, "{auto}", &t).as_deref(), Some("r32.7.1"));
        let d = resolve(v(JP60), "{auto}", &t);
        let why = d.candidates.iter().find(|c| c.tag == "r36.3.0").unwrap().rejection.as_ref().unwrap().to_string();
        assert_eq!(
            why,
            "compatible, but `2.2-r36.2.0` ranks higher: it names package version 2.2, this tag names none"
        );
        // Without package versions, the release closest to the host wins, and a newer one is a last resort.
        let bare: Vec<String> = t.iter().filter(|t| t.starts_with('r')).cloned().collect();
        assert_eq!(chosen(JP62, "{auto}", &bare).as_deref(), Some("r36.4.0"), "36.4.7 is newer than 36.4.3");
        assert_eq!(chosen(JP60, "{auto}", &bare).as_deref(), Some("r36.3.0"));
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
        assert_eq!(chosen(JP62, p, &t).as_deref(), Some("humble-ros-base-r36.4.0"), "tag order breaks the tie");
        assert_eq!(chosen(JP60, p, &t).as_deref(), Some("humble-ros-base-l4t-r36.2.0"));
        assert_eq!(chosen(JP512, p, &t).as_deref(), Some("humble-ros-base-l4t-r35.4.1"));
        assert_eq!(chosen(JP461, p, &t).as_deref(), Some("humble-ros-base-l4t-r32.7.1"));
        let d = resolve(v(JP62), p, &t);
        assert_eq!(d.unmatched, 2, "humble-desktop and iron are not candidates");
        let cu = d.candidates.iter().find(|c| c.tag.ends_with("cu128-24.04")).unwrap();
        assert_eq!(cu.reading.as_ref().unwrap().variants, ["cu128", "24.04"], "CUDA/Ubuntu tokens are not extras");
        assert_eq!(d.tied, ["humble-ros-base-r36.4.0", "humble-ros-base-r36.4.0-cu128-24.04"]);
        assert!(cu.rejection.as_ref().unwrap().to_string().contains("registry was not asked"), "{cu:?}");
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
        assert_eq!(d.candidates[0].tag, "2.7-r36.4.0-cu128-24.04");
        assert!(d.candidates[0].rejection.is_none());
        assert_eq!(d.candidates.len(), dustynv_pytorch().len());
        assert!(d.rejected().all(|(t, _)| t != "2.7-r36.4.0-cu128-24.04"));
    }

    #[test]
    fn r38_host_takes_anything_and_old_hosts_need_equal_versions() {
        let t = dustynv_pytorch();
        assert_eq!(chosen("38.2", "{auto}", &t).as_deref(), Some("2.7-r36.4.0-cu128-24.04"), "highest package version");
        let bare = tags(&["r32.7.1", "r35.4.1", "r36.4.7", "r36.4.0"]);
        assert_eq!(chosen("38.2", "{auto}", &bare).as_deref(), Some("r36.4.7"), "newest not newer than 38.2");
        assert_eq!(chosen("32.6.1", "{auto}", &t), None);
        assert_eq!(chosen("32.6.1", "{auto}", &tags(&["r32.6.1", "r32.7.1"])).as_deref(), Some("r32.6.1"));
    }

    #[test]
    fn tie_break_order_is_total_and_documented() {
        let h = v(JP62);
        let lt = |a: &str, b: &str| assert_eq!(compare_tags(h, "{auto}", a, b), Some(Ordering::Less), "{a} < {b}");
        lt("2.2-r36.4.0", "2.1-r36.4.0"); // higher package version
        lt("1.10-r36.4.0", "1.9-r36.4.0"); // versions compare as numbers
        lt("0.1-r36.4.7", "r36.4.3"); // a package version beats none, even newer than the host
        lt("r36.4.3", "r36.4.0"); // newest not newer than host
        lt("r36.4.0", "r36.4.7"); // not newer before newer
        lt("r36.4.4", "r36.4.7"); // closest newer first
        lt("r36.4.0", "jetpack6"); // L4T token before JetPack-only
        lt("r36.4.0", "ggml-r36.4.0"); // fewer extra tokens
        lt("r36.4.0", "r36.4.0-cu128"); // a tie on the tag rules: byte order last
        lt("a-r36.4.0", "b-r36.4.0");
        assert_eq!(compare_tags(h, "{auto}", "latest", "r36.4.0"), None);
        let empty = resolve(h, "{auto}", &[]);
        assert_eq!((empty.chosen, empty.candidates.len(), empty.unmatched, empty.tied.len()), (None, 0, 0, 0));
    }

    #[test]
    fn package_versions_read_like_release_numbers() {
        let pv = |s: &str| PackageVersion::parse(s).unwrap_or_else(|| panic!("{s} is a version"));
        assert!(pv("1.10") > pv("1.9"));
        assert!(pv("0.20.0") > pv("0.19.5"));
        assert_eq!(pv("2.2"), pv("2.2.0"));
        assert!(pv("1.22") > pv("1.20.2"));
        assert!(pv("0.6.6.post1") > pv("0.6.6"));
        assert!(pv("2.0rc1") < pv("2.0"));
        assert!(pv("2.0rc1") > pv("2.0b3"));
        assert!(pv("v2") > pv("v1"));
        assert!(pv("24.8") > pv("24.5.1"));
        for not in ["b5283", "607dc5a", "3feed05", "main", "dev", "1..2", "", "v", "1.2.3.4.5.6", "2.0x1", "1234567890"]
        {
            assert!(PackageVersion::parse(not).is_none(), "{not} is not a version");
        }
    }

    #[test]
    fn reading_sorts_parts_into_version_extras_and_variants() {
        let read = |p: &str, t: &str| read_tag(p, t).unwrap().2;
        let r = read("{auto}", "0.3.9-builder-r36.4.0-cu128-24.04");
        assert_eq!(r.version.as_deref(), Some("0.3.9"));
        assert_eq!(r.extras, ["builder"]);
        assert_eq!(r.variants, ["cu128", "24.04"]);
        let r = read("{auto}", "b5283-r36.4-cu128-24.04");
        assert_eq!((r.version, r.extras), (None, vec!["b5283".to_owned()]), "a build number is not a version");
        let r = read("{auto}", "r36.4.0-20250305");
        assert_eq!((r.version, r.extras), (None, vec!["20250305".to_owned()]), "only parts before the release");
        let r = read("humble-ros-base-{auto}", "humble-ros-base-l4t-r36.2.0");
        assert_eq!(r, Reading::default(), "the pattern's text and `l4t` do not count");
        let r = read("{auto}-py3", "r35.2.1-pth2.0-py3");
        assert_eq!(r.extras, ["pth2.0"]);
        let r = read("{auto}", "8.3.0-jetson-jetpack6");
        assert_eq!((r.version.as_deref(), r.extras.len()), (Some("8.3.0"), 0));
    }

    #[test]
    fn creation_times_break_a_tie_and_are_explained() {
        let t = tags(&["0.8.6-r36.4.0-cu128-24.04", "0.8.6-r36.4-cu128-24.04", "0.6.3-r36.4.0", "r36.4.0"]);
        let d = resolve(v(JP62), "{auto}", &t);
        assert_eq!(d.tied, ["0.8.6-r36.4-cu128-24.04", "0.8.6-r36.4.0-cu128-24.04"]);
        assert_eq!(d.tie_queries(), d.tied.as_slice());
        assert_eq!(d.chosen.as_deref(), Some("0.8.6-r36.4-cu128-24.04"), "tag order without the registry");
        let at = |s: &str| Created::At(s.parse().unwrap());
        let created: BTreeMap<String, Created> = [
            ("0.8.6-r36.4.0-cu128-24.04".to_owned(), at("2025-05-07T08:00:00Z")),
            ("0.8.6-r36.4-cu128-24.04".to_owned(), at("2025-05-06T06:15:02Z")),
        ]
        .into();
        let d = resolve_with_created(v(JP62), "{auto}", &t, &created);
        assert_eq!(d.chosen.as_deref(), Some("0.8.6-r36.4.0-cu128-24.04"));
        assert_eq!(d.candidates[0].created.as_deref(), Some("2025-05-07T08:00:00Z"));
        let because = d.chosen_because.as_deref().unwrap();
        assert!(because.contains("package version 0.8.6") && because.contains("the latest of 2 tags"), "{because}");
        let why =
            |tag: &str| d.candidates.iter().find(|c| c.tag == tag).unwrap().rejection.as_ref().unwrap().to_string();
        assert_eq!(
            why("0.8.6-r36.4-cu128-24.04"),
            "compatible, but `0.8.6-r36.4.0-cu128-24.04` ranks higher: ties on every tag rule; its image was created \
             later (2025-05-07T08:00:00Z against 2025-05-06T06:15:02Z)"
        );
        assert!(why("0.6.3-r36.4.0").ends_with("package version 0.8.6 is higher than 0.6.3"));
        // An unknown creation time ranks after a known one, and says why.
        let created: BTreeMap<String, Created> = [
            ("0.8.6-r36.4-cu128-24.04".to_owned(), Created::Unknown("manifest unknown".into())),
            ("0.8.6-r36.4.0-cu128-24.04".to_owned(), at("2025-05-01T08:21:38Z")),
        ]
        .into();
        let d = resolve_with_created(v(JP62), "{auto}", &t, &created);
        assert_eq!(d.chosen.as_deref(), Some("0.8.6-r36.4.0-cu128-24.04"));
        let r = d.rejected().find(|(t, _)| *t == "0.8.6-r36.4-cu128-24.04").unwrap().1.to_string();
        assert!(r.ends_with("this one's creation time is unknown: manifest unknown"), "{r}");
    }

    #[test]
    fn names_that_are_not_tags_are_never_candidates() {
        let t = tags(&["r36.4.0/../../x", "r36.4.0?n=1", ".r36.4.0", "r36.4.0 ", "r36.4.0"]);
        let d = resolve(v(JP62), "{auto}", &t);
        assert_eq!(d.chosen.as_deref(), Some("r36.4.0"));
        assert_eq!(d.rejected().filter(|(_, r)| **r == Rejection::NotATag).count(), 4);
        let long = format!("{}-r36.4.0", "a".repeat(200));
        let d = resolve(v(JP62), "{auto}", &[long]);
        assert_eq!((d.chosen, d.candidates[0].tag.len()), (None, 140), "shown cut short");
    }

    #[test]
    fn a_large_tie_asks_about_the_first_tags_only() {
        let t: Vec<String> = (0..12).map(|i| format!("x{i:02}-r36.4.0")).collect();
        let d = resolve(v(JP62), "{auto}", &t);
        assert_eq!(d.tied.len(), 12);
        assert_eq!(d.tie_queries().len(), MAX_TIE_QUERIES);
        assert_eq!(d.tie_queries()[0], "x00-r36.4.0");
        let created: BTreeMap<String, Created> = d
            .tie_queries()
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), Created::At(format!("2025-01-0{}T00:00:00Z", i + 1).parse().unwrap())))
            .collect();
        let d = resolve_with_created(v(JP62), "{auto}", &t, &created);
        assert_eq!(d.chosen.as_deref(), Some("x07-r36.4.0"), "the latest of those asked");
        let r = d.rejected().find(|(t, _)| *t == "x11-r36.4.0").unwrap().1.to_string();
        assert!(r.contains("not asked about (only the first 8 tied tags"), "{r}");
    }
}
