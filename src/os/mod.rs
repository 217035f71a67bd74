//! The operating-system edge: crash-safe file writes and bounded reads under a host root (`fsutil`), the one
//! wrapper for external programs (`exec`), the tracing subscriber (`logging`), the journal of repairs to the
//! agent's own state (`journal`) and the test-only crash points (`crashpoint`). Knows no file format and no
//! other module of the crate but `base`.

pub mod crashpoint;
pub mod exec;
pub mod fsutil;
pub mod journal;
pub mod logging;
