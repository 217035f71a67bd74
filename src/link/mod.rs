//! The link to the fleet: MQTT topics and payloads (`protocol`), the durable outbox for telemetry and events
//! (`spool`), the one task that owns the MQTT connection (`mqtt`), which broker of a failover list to use next
//! (`failover`), its subscription plan (`subscriptions`) and the embedded broker (`broker`).
//! Interprets no desired state and touches no agent state.

pub mod broker;
pub mod failover;
pub mod mqtt;
pub mod protocol;
pub mod spool;
pub mod subscriptions;
