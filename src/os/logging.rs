//! Tracing subscriber setup, in one place. Logs go to stderr (journald captures them under systemd).

use tracing_subscriber::EnvFilter;

use crate::base::LogFormat;

/// Installs the global subscriber. `RUST_LOG` wins over `level`. Safe to call more than once (later calls
/// are ignored), which keeps tests that run several commands in one process simple.
pub(crate) fn init(level: &str, format: LogFormat) {
    // The embedded broker (rumqttd) logs every connection at info: keep it to warnings unless asked.
    let level = if level.contains("rumqttd") { level.to_owned() } else { format!("{level},rumqttd=warn") };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
