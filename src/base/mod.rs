//! Leaf value types that configuration, the protocol and several subsystems share: ids, platforms, broker
//! URLs, capability names, the modes a config or a deployment chooses from, published ports, the label keys that mark jetship's
//! containers, and the [`Repair`] record of what the agent fixed in its own state.
//!
//! Imports nothing else of the crate, so `config` and `link::protocol` never pull in an IO module; every other
//! module may use it. Must not do IO.

pub(crate) mod broker_url;
pub(crate) mod capability;
pub mod ids;
pub mod jetson;
pub mod labels;
pub mod modes;
pub mod platform;
pub mod ports;
pub mod repair;

pub use broker_url::{BadBrokerUrl, BrokerUrl};
pub use capability::capability_key;
pub use ids::valid_id;
pub use modes::{GpuMode, IpcMode, LogFormat, NetworkMode};
pub use platform::{BadPlatform, Platform};
pub use ports::PortMapping;
pub use repair::Repair;

/// The pids limit a container gets when nothing sets one (Docker sets none, so a fork bomb takes the host): the
/// runtime's default and the local policy's `pids_limit` default.
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;
