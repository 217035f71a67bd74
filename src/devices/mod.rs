//! Host devices a container may be given: the GPU injection descriptions the NVIDIA container toolkit leaves on
//! a Jetson (CDI specs in `cdi`, Jetson CSV mount lists in `csv`) and V4L2 cameras (`cameras`).
//!
//! This module reads and parses; it decides nothing about containers and never writes. Paths handed in are under
//! the configured host root so tests run against fixture trees; paths handed out are host paths (`/dev/video0`,
//! `/etc/cdi/nvidia.yaml`), never prefixed by the root. Applying CDI edits or CSV mounts to a container is the
//! runtime module's job, not this one's.

pub mod cameras;
pub mod cdi;
pub mod csv;
