//! jetship: an agent and command-line tool for fleets of NVIDIA Jetson devices.
//!
//! The binary (`src/main.rs`) only parses the command line and maps errors to exit codes; everything else lives
//! in this library so `tests/` drives the real code. One module per concern; each says what it owns.

pub mod agent;
pub mod base;
pub mod cli;
pub mod config;
pub mod controller;
pub mod deploy;
pub mod host;
pub mod image;
pub mod link;
pub mod os;
pub mod runtime;

/// The agent's version, as reported by `jetship --version` and in the MQTT `status` payload.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit code for a configuration error (sysexits.h EX_CONFIG); systemd's unit does not restart on it.
pub(crate) const EXIT_CONFIG: i32 = 78;

/// Installs the process-wide rustls crypto provider (ring). Call once before any TLS client is built;
/// calling again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
