//! Free and used space of the state dir's file system (statvfs).

use super::*;

/// statvfs of the state dir, or of its nearest existing ancestor (before the agent has created it).
// fsblkcnt_t and c_ulong are 32 bits wide on some targets: the casts are not useless there.
#[allow(clippy::unnecessary_cast)]
pub(super) fn read_disk(state_dir: &Path, w: &mut Vec<String>) -> Option<Disk> {
    let mut path = state_dir;
    while !path.exists() {
        path = path.parent()?;
    }
    match nix::sys::statvfs::statvfs(path) {
        Ok(st) => {
            let frag = st.fragment_size() as u64;
            Some(Disk {
                path: path.to_path_buf(),
                total_bytes: (st.blocks() as u64).saturating_mul(frag),
                available_bytes: (st.blocks_available() as u64).saturating_mul(frag),
                used_bytes: (st.blocks() as u64).saturating_sub(st.blocks_free() as u64).saturating_mul(frag),
            })
        }
        Err(err) => {
            w.push(format!("{}: statvfs failed: {err}", path.display()));
            None
        }
    }
}
