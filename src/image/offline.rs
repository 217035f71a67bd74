//! Starting without a registry: a digest-pinned reference names its content exactly, so when the store holds
//! that image whole there is nothing to ask a registry, neither the digest (it is given) nor a blob. The agent's
//! resolver and `jetship run` call [`pinned`] and [`stored`] before any registry request; a device that is
//! offline, or whose registry is down, starts what it already has.
//!
//! Decides nothing about tags: a reference with a tag and no digest, or an `{auto}` tag, still goes to the
//! registry (a tag may have moved). Reads the store, never writes it (beyond the store's own repairs).

use super::reference::{self, Reference, TemplateVars};
use super::store::ImageStore;
use crate::base::Platform;

/// The reference `input` pins, templates expanded: `Some` when it carries a digest (and no `{auto}` tag), so
/// resolving it needs no registry. `None` for tags, which only a registry can turn into a digest, and for
/// references that do not parse (the registry path reports those).
pub fn pinned(input: &str, vars: &TemplateVars) -> Option<Reference> {
    let expanded = reference::expand(input, vars).ok()?;
    let parsed = Reference::parse(&expanded).ok()?;
    (parsed.digest.is_some() && !parsed.has_auto()).then_some(parsed)
}

/// Whether the store holds `pinned` whole for `platform`: its record (or one rebuilt from the stored manifest),
/// manifest and config readable, built for that OS and architecture, and every layer blob present at its size
/// (small ones hashed; a damaged blob is removed, so the answer is `false` and a pull fetches it again).
pub fn stored(store: &ImageStore, pinned: &Reference, platform: &Platform) -> bool {
    let Ok(image) = store.image(&pinned.to_string()) else { return false };
    let built_for = Platform::parse(&image.record.platform)
        .is_ok_and(|p| p.os == platform.os && p.architecture == platform.architecture);
    built_for && image.record.layers.iter().all(|l| store.has_verified_blob(&l.digest, l.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_digests_are_pinned_and_templates_expand_first() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let vars = TemplateVars { jetpack_major: Some(6), ..Default::default() };
        let p = pinned(&format!("reg.local/app:jp{{jetpack_major}}@{digest}"), &vars).unwrap();
        assert_eq!(p.to_string(), format!("reg.local/app:jp6@{digest}"));
        assert!(pinned(&format!("busybox@{digest}"), &vars).is_some());
        assert!(pinned("reg.local/app:1", &vars).is_none(), "a tag may have moved: ask the registry");
        assert!(pinned("reg.local/app:{auto}", &vars).is_none());
        assert!(pinned("reg.local/app@sha256:short", &vars).is_none(), "not a digest");
        assert!(pinned(&format!("reg.local/app:{{l4t}}@{digest}"), &vars).is_none(), "no L4T to expand");
    }

    #[test]
    fn an_empty_store_has_nothing_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let p = pinned(&format!("reg.local/app@sha256:{}", "b".repeat(64)), &TemplateVars::default()).unwrap();
        assert!(!stored(&store, &p, &Platform::host()));
    }
}
