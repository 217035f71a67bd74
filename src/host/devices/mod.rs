//! Host devices a container may be given: the GPU injection descriptions the NVIDIA container toolkit leaves on
//! a Jetson (CDI specs in `cdi`, Jetson CSV mount lists in `csv`), V4L2 cameras (`cameras`) and the Jetson
//! conveniences (`jetson`: the host files, sockets and device trees jetson-containers passes).
//!
//! `gpu` decides how a container gets the GPU (CDI, CSV, nvidia-container-runtime) and turns the parsed files
//! into edits of a runtime spec; `cameras::resolve` does the same for camera selectors.
//!
//! This module reads, parses and plans; it never starts containers and never writes to the host. Paths handed
//! in are under the configured host root so tests run against fixture trees; paths it reports are host paths
//! (`/dev/video0`, `/etc/cdi/nvidia.yaml`), never prefixed by the root, except the sources of bind mounts and
//! hook programs in runtime-spec edits, which are what the runtime opens and so are joined under the root.
//! Running the container with those edits is the runtime module's job, not this one's.

pub mod cameras;
pub mod cdi;
pub mod csv;
pub mod gpu;
pub mod inject;
pub mod jetson;

use std::io;
use std::path::Path;

/// [`crate::os::fsutil::read_small`] for host files that must be regular files. sysfs and procfs attributes are
/// regular files; a FIFO or device planted where one is expected (in a fixture or a mounted host root) would
/// block or have side effects when read, so it is refused instead.
pub(crate) fn read_regular(path: &Path, limit: u64) -> io::Result<String> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    crate::os::fsutil::read_small(path, limit)
}
