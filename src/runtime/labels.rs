//! The label keys of [`crate::base::labels`] and the one function that stamps them on a container.

use std::collections::BTreeMap;

pub use crate::base::labels::*;

use super::ContainerConfig;

/// The labels container `id` is created with from `config`: the caller's `labels` (the planner gives the
/// deployment and its version) plus what every jetship container carries: its deployment (the container id
/// when the caller names none), the pinned image, the settings' hash and, from a backend, the agent that owns
/// it (`agent`, which wins over the caller's). The planner and both backends call this, so a container carries
/// the same labels whichever made it, and stamping twice changes nothing.
pub(crate) fn stamp(
    mut labels: BTreeMap<String, String>,
    id: &str,
    config: &ContainerConfig,
    agent: Option<&str>,
) -> BTreeMap<String, String> {
    labels.entry(DEPLOYMENT.to_owned()).or_insert_with(|| id.to_owned());
    labels.insert(IMAGE.to_owned(), config.image.clone());
    labels.insert(SPEC_HASH.to_owned(), config.spec_hash());
    if let Some(agent) = agent {
        labels.insert(AGENT.to_owned(), agent.to_owned());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_adds_image_hash_and_agent_and_keeps_the_callers_deployment() {
        let config = ContainerConfig { image: "busybox@sha256:00".into(), ..Default::default() };
        let given = BTreeMap::from([(DEPLOYMENT.to_owned(), "app".to_owned()), (AGENT.to_owned(), "x".to_owned())]);
        let l = stamp(given, "app-1234", &config, Some("dev-1"));
        assert_eq!(l[DEPLOYMENT], "app");
        assert_eq!(l[IMAGE], "busybox@sha256:00");
        assert_eq!(l[SPEC_HASH], config.spec_hash());
        assert_eq!(l[AGENT], "dev-1", "the backend's agent id wins");
        assert_eq!(stamp(l.clone(), "app-1234", &config, Some("dev-1")), l, "stamping twice changes nothing");
        let bare = stamp(BTreeMap::new(), "run-1", &config, None);
        assert_eq!(bare[DEPLOYMENT], "run-1", "a container without a deployment is its own");
        assert!(!bare.contains_key(AGENT));
    }
}
