//! The host: which Jetson and L4T/JetPack this is (`l4t`, `probe`), the devices a container can be given
//! (`devices`: CDI and CSV GPU injection, cameras) and telemetry samples (`metrics`, one file per source).
//! Reads the host root; never runs a container or talks to the network.

pub mod devices;
pub mod l4t;
pub mod metrics;
pub mod probe;
