//! Image references: parsing `[registry/]repository[:tag][@digest]`, Docker Hub name normalisation, and the
//! template variables (`{l4t}`, `{jetpack_major}`, ...) filled from the host probe.
//!
//! Pure string work: no network, no file system. `{auto}` is recognised here but left in place; choosing the tag
//! it stands for is `crate::image::resolve`'s job.

use std::fmt;

use crate::host::probe::HostFacts;

/// The registry a reference without a registry part names.
pub(crate) const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub(crate) const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// The placeholder in a tag that `crate::image::resolve` replaces with the best tag for the host.
pub(crate) const AUTO: &str = "{auto}";

/// Errors parsing a reference or filling in its template variables. Each names the reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("image reference `{reference}` is invalid: {reason}")]
    Invalid { reference: String, reason: String },
    #[error("image reference `{reference}` uses `{{{variable}}}` but this host has no {what}: run it on a Jetson, set L4T_VERSION, or write the tag out")]
    MissingFact { reference: String, variable: String, what: String },
    #[error("image reference `{reference}` uses unknown template variable `{{{variable}}}` (known: {{l4t}} {{l4t_major}} {{l4t_minor}} {{jetpack}} {{jetpack_major}} {{cuda}} {{auto}})")]
    UnknownVariable { reference: String, variable: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A parsed, normalised image reference.
///
/// `docker.io` names are normalised as Docker does: `ubuntu` is `docker.io/library/ubuntu`, and
/// `index.docker.io` is `docker.io`. A reference without tag or digest means tag `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port, e.g. `docker.io`, `nvcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/ubuntu`, `dustynv/l4t-pytorch`.
    pub repository: String,
    /// Tag, if any (`None` only when a digest is given without a tag).
    pub tag: Option<String>,
    /// Digest such as `sha256:<64 hex>`, if pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises a reference. Template variables other than `{auto}` must have been expanded
    /// (see [`expand`]); `{auto}` is allowed in the tag only.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| Error::Invalid { reference: input.to_owned(), reason: reason.to_owned() };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it contains whitespace"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            validate_digest(d).map_err(|r| bad(&r))?;
        }
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].find(':') {
            Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            validate_tag(t).map_err(|r| bad(&r))?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_owned(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|r| bad(&r))?;
        let tag = match (tag, digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Self { registry, repository, tag, digest: digest.map(str::to_owned) })
    }

    /// The tag or digest to ask the registry's manifest endpoint for: the digest when pinned.
    pub(crate) fn manifest_ref(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// Whether the tag still carries `{auto}` and must be resolved against the repository's tag list.
    pub(crate) fn has_auto(&self) -> bool {
        self.tag.as_deref().is_some_and(|t| t.contains(AUTO))
    }

    /// The same reference with the tag replaced.
    pub(crate) fn with_tag(&self, tag: &str) -> Self {
        Self { tag: Some(tag.to_owned()), ..self.clone() }
    }

    /// The same reference pinned to `digest`.
    pub(crate) fn with_digest(&self, digest: &str) -> Self {
        Self { digest: Some(digest.to_owned()), ..self.clone() }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Checks `sha256:<64 lowercase hex>` (the only algorithm the store accepts).
pub(crate) fn validate_digest(d: &str) -> std::result::Result<(), String> {
    match d.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        Some(("sha256", _)) => Err(format!("digest `{d}` must be sha256: followed by 64 lowercase hex digits")),
        _ => Err(format!("digest `{d}` is not a sha256 digest (sha256:<64 hex>)")),
    }
}

fn validate_tag(t: &str) -> std::result::Result<(), String> {
    // `{auto}` is allowed as a placeholder; the rest follows the distribution spec: [\w][\w.-]{0,127}.
    let plain = t.replacen(AUTO, "x", 1);
    let ok = !plain.is_empty()
        && plain.len() <= 128
        && plain.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && plain.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else if t.contains('{') {
        Err(format!("tag `{t}` has a template variable left unexpanded or more than one {AUTO}"))
    } else {
        Err(format!("tag `{t}` must be 1-128 of [A-Za-z0-9_.-], not starting with . or -"))
    }
}

fn validate_repository(r: &str) -> std::result::Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    if r.len() > 255 || !r.split('/').all(component_ok) {
        return Err(format!(
            "repository `{r}` must be lowercase path components of [a-z0-9._-], each starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// The host facts template variables are filled from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateVars {
    /// L4T release; gives `{l4t}` (`36.4.3`), `{l4t_major}` (`36`), `{l4t_minor}` (`4`).
    pub l4t: Option<crate::host::l4t::L4tVersion>,
    /// JetPack release; `{jetpack}` is its first word (`6.2`; `6.0 DP` gives `6.0`).
    pub jetpack: Option<String>,
    /// `{jetpack_major}` (`6`).
    pub jetpack_major: Option<u32>,
    /// `{cuda}` (`12.6`).
    pub cuda: Option<String>,
}

impl TemplateVars {
    /// The variables of a probed host.
    pub(crate) fn from_facts(facts: &HostFacts) -> Self {
        Self {
            l4t: facts.l4t.as_ref().map(|i| i.version),
            jetpack: facts.jetpack.clone().filter(|j| j != "unknown"),
            jetpack_major: facts.jetpack_major,
            cuda: facts.stack.cuda.clone(),
        }
    }

    /// The variables for a given L4T release, from the JetPack table and stack facts.
    pub fn from_l4t(v: crate::host::l4t::L4tVersion) -> Self {
        Self {
            l4t: Some(v),
            jetpack: v.jetpack().map(str::to_owned),
            jetpack_major: v.jetpack_major(),
            cuda: v.stack().cuda,
        }
    }
}

/// Expands `{l4t}`, `{l4t_major}`, `{l4t_minor}`, `{jetpack}`, `{jetpack_major}` and `{cuda}` in `input`;
/// `{auto}` is left for `crate::image::resolve`. An unknown variable, or one the host has no value for, is an error
/// naming the reference.
pub fn expand(input: &str, vars: &TemplateVars) -> Result<String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| Error::Invalid { reference: input.to_owned(), reason: "a `{` has no closing `}`".into() })?;
        let name = &after[..close];
        let missing = |what: &str| Error::MissingFact {
            reference: input.to_owned(),
            variable: name.to_owned(),
            what: what.to_owned(),
        };
        let value = match name {
            "auto" => AUTO.to_owned(),
            "l4t" => vars.l4t.ok_or_else(|| missing("L4T release"))?.to_string(),
            "l4t_major" => vars.l4t.ok_or_else(|| missing("L4T release"))?.major.to_string(),
            "l4t_minor" => vars.l4t.ok_or_else(|| missing("L4T release"))?.minor.to_string(),
            "jetpack" => vars
                .jetpack
                .as_deref()
                .and_then(|j| j.split_whitespace().next())
                .ok_or_else(|| missing("known JetPack release"))?
                .to_owned(),
            "jetpack_major" => vars.jetpack_major.ok_or_else(|| missing("JetPack release"))?.to_string(),
            "cuda" => vars.cuda.clone().ok_or_else(|| missing("known CUDA version"))?,
            _ => return Err(Error::UnknownVariable { reference: input.to_owned(), variable: name.to_owned() }),
        };
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::l4t::L4tVersion;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_names_are_normalised() {
        assert_eq!(p("ubuntu").to_string(), "docker.io/library/ubuntu:latest");
        assert_eq!(p("ubuntu:22.04").to_string(), "docker.io/library/ubuntu:22.04");
        assert_eq!(p("dustynv/l4t-pytorch:r36.4.0").to_string(), "docker.io/dustynv/l4t-pytorch:r36.4.0");
        assert_eq!(p("index.docker.io/library/ubuntu").to_string(), "docker.io/library/ubuntu:latest");
        assert_eq!(p("docker.io/ubuntu").repository, "library/ubuntu");
        assert_eq!(p("registry-1.docker.io/dustynv/ros:x").registry, "docker.io");
    }

    #[test]
    fn registry_part_needs_a_dot_a_port_or_localhost() {
        let r = p("nvcr.io/nvidia/l4t-pytorch:r35.2.1-pth2.0-py3");
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("nvcr.io", "nvidia/l4t-pytorch"));
        assert_eq!(r.tag.as_deref(), Some("r35.2.1-pth2.0-py3"));
        let r = p("127.0.0.1:5000/test/img");
        assert_eq!((r.registry.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", Some("latest")));
        assert_eq!(p("localhost/x:1").registry, "localhost");
        assert_eq!(p("ghcr.io/a/b/c:v1").repository, "a/b/c");
        assert_eq!(p("myorg/img").registry, "docker.io", "no dot: a Docker Hub namespace");
    }

    #[test]
    fn digests_pin_and_default_tag_is_latest_only_without_digest() {
        let r = p(&format!("ubuntu@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), D);
        let r = p(&format!("127.0.0.1:5000/a:v1@{D}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.manifest_ref(), D, "the digest wins over the tag");
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/a:v1@{D}"));
    }

    #[test]
    fn bad_references_are_errors_naming_the_input() {
        for bad in [
            "",
            "Ubuntu",
            "a b",
            "ubuntu:",
            "ubuntu:-x",
            "ubuntu@sha256:xyz",
            "ubuntu@md5:0123",
            "a//b",
            "ubuntu:{l4t}",
            "ubuntu:{auto}{auto}",
        ] {
            let err = Reference::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{}`", bad.trim())), "{bad:?}: {err}");
        }
    }

    #[test]
    fn auto_is_allowed_in_the_tag() {
        let r = p("dustynv/ros:humble-ros-base-{auto}");
        assert!(r.has_auto());
        assert_eq!(r.tag.as_deref(), Some("humble-ros-base-{auto}"));
        assert!(!p("ubuntu").has_auto());
    }

    #[test]
    fn templates_fill_from_host_facts() {
        let vars = TemplateVars::from_l4t(L4tVersion::new(36, 4, 3));
        assert_eq!(
            expand("ultralytics/ultralytics:latest-jetson-jetpack{jetpack_major}", &vars).unwrap(),
            "ultralytics/ultralytics:latest-jetson-jetpack6"
        );
        assert_eq!(expand("x:r{l4t}", &vars).unwrap(), "x:r36.4.3");
        assert_eq!(expand("x:{l4t_major}.{l4t_minor}-cu{cuda}", &vars).unwrap(), "x:36.4-cu12.6");
        assert_eq!(expand("x:jp{jetpack}", &vars).unwrap(), "x:jp6.2");
        assert_eq!(expand("dustynv/l4t-pytorch:{auto}", &vars).unwrap(), "dustynv/l4t-pytorch:{auto}");
        let dp = TemplateVars::from_l4t(L4tVersion::new(36, 2, 0));
        assert_eq!(expand("x:jp{jetpack}", &dp).unwrap(), "x:jp6.0", "`6.0 DP` gives its first word");
        let jp4 = TemplateVars::from_l4t(L4tVersion::new(32, 7, 1));
        assert_eq!(expand("x:{jetpack_major}-{cuda}", &jp4).unwrap(), "x:4-10.2");
    }

    #[test]
    fn templates_fail_clearly_off_jetson_or_when_unknown() {
        let none = TemplateVars::default();
        let err = expand("x:jetpack{jetpack_major}", &none).unwrap_err();
        assert!(matches!(err, Error::MissingFact { .. }), "{err}");
        assert!(err.to_string().contains("L4T_VERSION"), "{err}");
        let err = expand("x:{l4tt}", &TemplateVars::from_l4t(L4tVersion::new(36, 4, 3))).unwrap_err();
        assert!(err.to_string().contains("unknown template variable `{l4tt}`"), "{err}");
        assert!(matches!(expand("x:{l4t", &none), Err(Error::Invalid { .. })));
        let unknown_jp = TemplateVars::from_l4t(L4tVersion::new(36, 9, 9));
        assert!(expand("x:{jetpack}", &unknown_jp).is_err(), "unknown JetPack release");
        assert_eq!(expand("x:{jetpack_major}", &unknown_jp).unwrap(), "x:6");
    }
}
