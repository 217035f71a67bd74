//! Container images: references and template variables (`reference`), the JetPack-matched tag choice
//! (`resolve`), the registry client (`registry`), pull orchestration (`pull`), the content store (`store`),
//! layer unpacking (`unpack`) and snapshots (`snapshot`); `offline`: when a pinned image needs no registry at all.
//! Runs no container.

pub mod offline;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod resolve;
pub mod snapshot;
pub mod store;
pub mod unpack;
