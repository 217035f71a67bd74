//! The operating-system edge: crash-safe file writes and bounded reads under a host root (`fsutil`), opening a
//! path beneath a directory without a symlink leading out (`beneath`), the one wrapper for external programs
//! (`exec`), the tracing subscriber (`logging`) and the resident agent's own memory (`memory`). Knows no file
//! format and no other module of the crate but `base`.

pub mod beneath;
pub mod exec;
pub mod fsutil;
pub mod logging;
pub mod memory;
