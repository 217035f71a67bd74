//! jetship: an agent and command-line tool for fleets of NVIDIA Jetson devices.
//!
//! The binary (`src/main.rs`) only parses the command line and maps errors to exit codes; everything else lives
//! in this library so `tests/` drives the real code. One module per concern; each says what it owns.

pub mod agent;
pub mod broker;
pub mod cli;
pub mod config;
pub mod deploy;
pub mod deployment;
pub mod desired;
pub mod devices;
pub mod exec;
pub mod executor;
pub mod exporter;
pub mod fleet;
pub mod fsutil;
pub mod image_store;
pub mod l4t;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod policy;
pub mod probe;
pub mod protocol;
pub mod pull;
pub mod reconcile;
pub mod reference;
pub mod registry;
pub mod report;
pub mod resolve;
pub mod runtime;
pub mod sim;
pub mod snapshot;
pub mod spool;
pub mod unpack;

/// The agent's version, as reported by `jetship --version` and in the MQTT `status` payload.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit code for a configuration error (sysexits.h EX_CONFIG); systemd's unit does not restart on it.
pub const EXIT_CONFIG: i32 = 78;

/// Installs the process-wide rustls crypto provider (ring). Call once before any TLS client is built;
/// calling again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
