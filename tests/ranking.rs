//! The `{auto}` ranking table (tests/ranking/cases.toml): real dustynv tag lists and synthetic ones, each case with
//! the host, the expected choice, why, and the words its explanation must use. Runs the decision the way
//! `pull::resolve` does: the tag rules first, then, for a tie, the creation times of the tags it would ask the
//! registry about (tests/pull.rs does that part against a real registry).

use std::collections::BTreeMap;

use jetship::host::l4t::L4tVersion;
use jetship::image::resolve::{self, Created, Decision};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    lists: BTreeMap<String, List>,
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct List {
    #[allow(dead_code)]
    repository: String,
    tags: Vec<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    list: Option<String>,
    tags: Option<Vec<Vec<String>>>,
    host: String,
    #[serde(default = "whole_tag")]
    pattern: String,
    chosen: Option<String>,
    why: String,
    because: Option<String>,
    #[serde(default)]
    rejected: BTreeMap<String, String>,
}

fn whole_tag() -> String {
    "{auto}".into()
}

fn table() -> Table {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ranking/cases.toml");
    let text = std::fs::read_to_string(path).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The decision for a case, with the registry's part played by the creation times in the list.
fn decide(case: &Case, entries: &[Vec<String>]) -> Decision {
    let host: L4tVersion = case.host.parse().unwrap();
    let tags: Vec<String> = entries.iter().map(|e| e[0].clone()).collect();
    let decision = resolve::resolve(host, &case.pattern, &tags);
    if decision.tie_queries().is_empty() {
        return decision;
    }
    let known: BTreeMap<&str, &str> =
        entries.iter().filter_map(|e| Some((e[0].as_str(), e.get(1)?.as_str()))).collect();
    let created: BTreeMap<String, Created> = decision
        .tie_queries()
        .iter()
        .map(|tag| {
            let c = match known.get(tag.as_str()) {
                Some(t) => Created::At(t.parse().unwrap_or_else(|e| panic!("{tag}: time {t}: {e}"))),
                None => Created::Unknown("its image config has no `created` time".into()),
            };
            (tag.clone(), c)
        })
        .collect();
    resolve::resolve_with_created(host, &case.pattern, &tags, &created)
}

#[test]
fn ranking_table_cases_choose_and_explain_as_stated() {
    let t = table();
    let mut failures = Vec::new();
    for (i, case) in t.case.iter().enumerate() {
        let entries = match (&case.list, &case.tags) {
            (Some(name), None) => &t.lists.get(name).unwrap_or_else(|| panic!("case {i}: no list {name}")).tags,
            (None, Some(tags)) => tags,
            _ => panic!("case {i}: give `list` or `tags`"),
        };
        let name =
            format!("case {i} ({} on L4T {}, `{}`)", case.list.as_deref().unwrap_or("inline"), case.host, case.pattern);
        assert!(!case.why.trim().is_empty(), "{name}: say why");
        let d = decide(case, entries);
        if d.chosen != case.chosen {
            failures.push(format!("{name}: chose {:?}, expected {:?}; {:?}", d.chosen, case.chosen, d.chosen_because));
        }
        if let Some(words) = &case.because {
            let said = d.chosen_because.clone().unwrap_or_default();
            if !said.contains(words.as_str()) {
                failures.push(format!("{name}: chosen because `{said}` lacks `{words}`"));
            }
        }
        for (tag, words) in &case.rejected {
            match d.rejected().find(|(t, _)| t == tag) {
                Some((_, why)) if why.to_string().contains(words.as_str()) => {}
                Some((_, why)) => failures.push(format!("{name}: {tag} rejected as `{why}`, expected `{words}`")),
                None => failures.push(format!("{name}: {tag} is not among the rejected")),
            }
        }
        // Every tag is accounted for: a candidate with a reason, or counted as not matching the pattern.
        if d.candidates.len() + d.unmatched != entries.len()
            || d.rejected().count() + usize::from(d.chosen.is_some()) != d.candidates.len()
        {
            failures.push(format!(
                "{name}: {} candidates + {} unmatched for {} tags",
                d.candidates.len(),
                d.unmatched,
                entries.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases fail:\n{}", failures.len(), t.case.len(), failures.join("\n"));
}

#[test]
fn ranking_table_has_forty_cases_from_real_and_synthetic_lists() {
    let t = table();
    let real = t.case.iter().filter(|c| c.list.is_some()).count();
    let synthetic = t.case.iter().filter(|c| c.tags.is_some()).count();
    assert!(real + synthetic >= 40 && real >= 30 && synthetic >= 10, "{real} real, {synthetic} synthetic");
    let no_fit = t.case.iter().filter(|c| c.chosen.is_none()).count();
    let ties = t.case.iter().filter(|c| c.rejected.values().any(|w| w.contains("created later"))).count();
    assert!(no_fit >= 3 && ties >= 5, "cases where nothing fits: {no_fit}, ties broken by creation time: {ties}");
    for (name, list) in &t.lists {
        assert!(list.tags.iter().all(|e| (1..=2).contains(&e.len())), "{name}: entries are [tag] or [tag, time]");
        let used = t.case.iter().any(|c| c.list.as_deref() == Some(name.as_str()));
        assert!(used, "list {name} is in no case");
    }
}
