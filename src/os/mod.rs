//! The operating-system edge: crash-safe file writes and bounded reads under a host root (`fsutil`), opening a
//! path beneath a directory without a symlink leading out (`beneath`), the one wrapper for external programs
//! (`exec`), the tracing subscriber (`logging`), the resident agent's own memory (`memory`), the journal of
//! repairs to the agent's own state (`journal`) and the test-only crash points (`crashpoint`). Knows no file
//! format and no other module of the crate but `base`.

pub mod beneath;
pub(crate) mod crashpoint;
pub mod exec;
pub(crate) mod fsutil;
pub(crate) mod journal;
pub mod logging;
pub mod memory;
