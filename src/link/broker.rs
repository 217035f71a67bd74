//! The embedded MQTT broker (rumqttd): lets a single device, or a small lab, run with no other server. Plain
//! MQTT 3.1.1 on one TCP listener, no TLS and no authentication, so it listens on loopback unless told
//! otherwise. Fleets move to Mosquitto/EMQX/HiveMQ (docs/protocol.md, "Choosing a broker").
//!
//! It owns only the broker's threads; it must not touch the agent's state, config or spool.

use std::collections::HashMap;
use std::net::SocketAddr;

use tracing::{error, info};

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("embedded broker cannot listen on {addr}: {source} (another broker running there? set mqtt.url to use it, or mqtt.embedded_listen / --listen to move)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the embedded broker thread: {0}")]
    Thread(#[source] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Largest payload the broker accepts (the protocol's own limit on incoming documents is 1 MiB).
const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

fn config(listen: SocketAddr) -> rumqttd::Config {
    let server = rumqttd::ServerSettings {
        name: "v4-1".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            // The router keeps a commit log per filter in memory: small segments keep a device's broker small.
            max_segment_size: 1024 * 1024,
            max_segment_count: 4,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Default::default()
    }
}

/// Checks that `listen` is free, then starts the broker on its own threads and returns. The broker lives as
/// long as the process.
pub fn spawn(listen: SocketAddr) -> Result<()> {
    check_free(listen)?;
    std::thread::Builder::new().name("broker".into()).spawn(move || run_blocking(listen)).map_err(Error::Thread)?;
    info!(%listen, "embedded mqtt broker started");
    Ok(())
}

/// Runs the broker on the calling thread until the process exits (`jetship broker`).
pub fn run(listen: SocketAddr) -> Result<()> {
    check_free(listen)?;
    info!(%listen, "mqtt broker listening");
    run_blocking(listen);
    Ok(())
}

fn check_free(listen: SocketAddr) -> Result<()> {
    // rumqttd logs a bind failure from its own thread and carries on; check first so the error reaches the user.
    std::net::TcpListener::bind(listen).map(drop).map_err(|source| Error::Listen { addr: listen, source })
}

fn run_blocking(listen: SocketAddr) {
    let mut broker = rumqttd::Broker::new(config(listen));
    if let Err(err) = broker.start() {
        error!(%listen, ?err, "embedded mqtt broker stopped");
    }
}
