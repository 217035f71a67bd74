//! The controller side of the fleet, run from an operator's machine: device lists, status and ping (`fleet`),
//! publishing deployment documents and following their reports (`deploy`), and the simulated fleet used by
//! benchmarks (`sim`), the Prometheus exporter of the fleet's state (`exporter`), and power control (`power`:
//! `power-mode`, `clocks`). Never touches an agent's state.

pub mod deploy;
pub mod exporter;
pub mod fleet;
pub mod power;
pub(crate) mod sim;
