//! Label keys marking what jetship owns, shared by the planner, the executor and every backend (Docker
//! labels, conmon metadata). `runtime::labels::stamp` is the one function that sets them on a container.

/// The deployment a container belongs to.
pub const DEPLOYMENT: &str = "io.jetship.deployment";
/// Hash of the container settings it was created from: a change means "replace the container".
pub const SPEC_HASH: &str = "io.jetship.spec-hash";
/// The agent (device id) that created it.
pub const AGENT: &str = "io.jetship.agent";
/// The pinned image reference (`name@sha256:...`).
pub const IMAGE: &str = "io.jetship.image";
/// The deployment version (`Deployment::doc_hash`) a container was created for: equal hash means "this
/// container is the desired version", so an agent restarted offline adopts its containers without resolving
/// images again.
pub const DOC_HASH: &str = "io.jetship.doc-hash";
/// `run` on a container `jetship run` made: the agent's executor leaves it alone (it is no deployment's, even
/// when its deployment label names one), `jetship ps` shows it as `run`'s.
pub(crate) const OWNER: &str = "io.jetship.owner";
/// The [`OWNER`] of `jetship run`'s containers.
pub(crate) const OWNER_RUN: &str = "run";
