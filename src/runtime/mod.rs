//! Container runtime backends. `spec` turns an image config plus a deployment into an OCI runtime spec; the
//! backends that run it (native runc/crun under conmon, Docker Engine) implement one narrow trait.
//!
//! Must not decide policy: requests arrive here already checked against the agent's local policy.

pub mod conmon;
pub mod spec;
