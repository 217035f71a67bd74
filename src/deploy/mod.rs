//! Deployments on the device: the document format (`document`), the local policy (`policy`), the store and
//! overlay of desired documents (`desired`), the pure planner (`plan`), the report (`report`) and the executor
//! that runs plans against a container backend (`executor`).

pub mod desired;
pub mod document;
pub mod executor;
pub mod plan;
pub mod policy;
mod policy_devices;
pub mod report;
