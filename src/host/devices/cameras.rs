//! V4L2 cameras: the `/sys/class/video4linux/videoN` entries with their `/dev/videoN` nodes, whether each node
//! captures video or only carries UVC metadata, and the stable `/dev/v4l/by-id` and `/dev/v4l/by-path` names.
//!
//! Reads only. A node is opened (read-only, non-blocking) for `VIDIOC_QUERYCAP` only when it is a char device
//! whose numbers match what sysfs says for that entry, so a stray file or a fixture placeholder is never opened;
//! otherwise sysfs `index` decides (0 = capture). Nothing here streams video or changes device settings.
//!
//! Each camera is told to be a CSI sensor behind the Tegra video input (`tegra-capture-vi` on JetPack 5/6, a
//! `*.vi` platform device before; driver `tegra-video`; raw Bayer formats such as `RG10`; NVIDIA names its nodes
//! `vi-output, <sensor> <bus>`), a USB (UVC) webcam (below a `usbN` root hub; driver `uvcvideo`) or neither
//! ([`CameraInterface`]). The selector `csi` takes the CSI cameras and nvargus-daemon's socket, which libargus
//! reaches them through. `VIDIOC_ENUM_FMT` is the other ioctl a node may get, under the same condition.
//!
//! [`resolve`] turns a deployment's `cameras = [...]` selectors into the device nodes to create in the
//! container (each capture node with its metadata sibling, numbers from the live node); a selector that matches
//! nothing is [`CameraError::Missing`], which the agent maps to the `waiting-for-device` state instead of
//! starting (and crash-looping) the container.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::inject::{BindMount, DeviceEdits, DeviceNode};
use super::read_regular;
use crate::os::fsutil::under_root;

/// The char-device major of video4linux nodes.
const V4L_MAJOR: u64 = 81;

/// How a camera is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraInterface {
    /// A MIPI CSI sensor behind the Tegra VI: used through nvargus-daemon (libargus), raw Bayer on its node.
    Csi,
    /// A USB Video Class webcam.
    Usb,
    /// Neither could be told (a virtual or PCIe capture device, or sysfs lacks the device link).
    #[default]
    Other,
}

impl CameraInterface {
    /// `csi`, `usb` or `other`.
    pub fn name(self) -> &'static str {
        match self {
            CameraInterface::Csi => "csi",
            CameraInterface::Usb => "usb",
            CameraInterface::Other => "other",
        }
    }
}

/// A V4L2 video node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    /// `/dev/videoN` (host path, not prefixed by the host root).
    pub node: PathBuf,
    /// The camera's name from sysfs (or the driver's card name), e.g. `HD Pro Webcam C920`.
    pub name: Option<String>,
    /// sysfs `index`: the node's number within its device (0 = the first node, the capture node of a UVC
    /// camera).
    pub index: Option<u32>,
    /// True for a capture node, false for a UVC metadata node.
    pub capture: bool,
    /// How `capture` was decided: `querycap` (the driver said), `sysfs-index` (index 0 = capture) or
    /// `assumed` (no index in sysfs: older kernels have no metadata nodes, so the node captures).
    pub detected_by: String,
    /// CSI sensor, USB webcam or other: from the driver's name when the node answered `VIDIOC_QUERYCAP`, else
    /// from the sysfs device the node belongs to and the node's name.
    #[serde(default)]
    pub interface: CameraInterface,
    /// Stable names in `/dev/v4l/by-id` that point to this node (host paths).
    pub by_id: Vec<PathBuf>,
    /// Stable names in `/dev/v4l/by-path` that point to this node (host paths).
    pub by_path: Vec<PathBuf>,
}

/// Every video4linux node under `root`, ordered by number. Entries without a `/dev` node are skipped with a
/// warning, as are problems opening a real device (then sysfs decides).
pub fn discover(root: &Path, warnings: &mut Vec<String>) -> Vec<Camera> {
    let class = under_root(root, "/sys/class/video4linux");
    let Ok(entries) = std::fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut numbered: Vec<(u32, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("video")?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    numbered.sort();
    let by_id = stable_links(root, "/dev/v4l/by-id");
    let by_path = stable_links(root, "/dev/v4l/by-path");
    let mut cameras = Vec::new();
    for (_, name) in numbered {
        let sys = class.join(&name);
        let node = Path::new("/dev").join(&name);
        let node_file = under_root(root, &node.to_string_lossy());
        // The node itself, never what a symlink in its place points to.
        let Ok(meta) = std::fs::symlink_metadata(&node_file) else {
            warnings.push(format!(
                "/sys/class/video4linux/{name} has no {} node; camera skipped (is udev running?)",
                node.display()
            ));
            continue;
        };
        let sys_name = read_attr(&sys.join("name"));
        let index = read_attr(&sys.join("index")).and_then(|s| s.parse::<u32>().ok());
        let sys_dev = read_attr(&sys.join("dev"));
        let interface = sysfs_interface(sysfs_parent(root, &node).as_deref(), sys_name.as_deref());
        let mut cam = Camera {
            node: node.clone(),
            name: sys_name.clone(),
            index,
            capture: index.is_none_or(|i| i == 0),
            detected_by: if index.is_some() { "sysfs-index" } else { "assumed" }.into(),
            interface,
            by_id: links_to(&by_id, &node),
            by_path: links_to(&by_path, &node),
        };
        if meta.file_type().is_char_device() {
            let rdev = (nix::sys::stat::major(meta.rdev()), nix::sys::stat::minor(meta.rdev()));
            let expected = sys_dev.as_deref().and_then(parse_dev);
            let matches = match expected {
                Some(want) => want == rdev,
                None => rdev.0 == V4L_MAJOR,
            };
            if !matches {
                let want = sys_dev.as_deref().unwrap_or("major 81");
                warnings.push(format!(
                    "{} is char device {}:{} but sysfs says {want}; not opened, capture decided from sysfs",
                    node.display(),
                    rdev.0,
                    rdev.1
                ));
            } else {
                match query_caps(&node_file) {
                    Ok(caps) => {
                        cam.capture = caps.capture;
                        cam.detected_by = "querycap".into();
                        let bayer = caps.bayer.then_some(CameraInterface::Csi);
                        cam.interface = driver_interface(&caps.driver).or(bayer).unwrap_or(cam.interface);
                        if cam.name.is_none() && !caps.card.is_empty() {
                            cam.name = Some(caps.card);
                        }
                    }
                    Err(e) => warnings
                        .push(format!("{}: VIDIOC_QUERYCAP failed ({e}); capture decided from sysfs", node.display())),
                }
            }
        }
        cameras.push(cam);
    }
    cameras
}

/// Reads a one-line sysfs attribute; `None` when missing, empty or not text.
fn read_attr(path: &Path) -> Option<String> {
    let s = read_regular(path, 4096).ok()?;
    let s = s.trim_end_matches(['\n', '\0']).trim();
    if s.is_empty() || s.contains('\u{fffd}') || s.chars().any(char::is_control) {
        return None;
    }
    Some(s.to_owned())
}

/// Parses sysfs `dev` (`81:0`).
fn parse_dev(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// What VIDIOC_QUERYCAP told.
struct Caps {
    capture: bool,
    card: String,
    driver: String,
    /// The node offers a raw Bayer format (`RG10`, ...): a raw sensor, which on a Jetson is a CSI camera.
    bayer: bool,
}

/// Whether a V4L2 fourcc is a raw Bayer format (8, 10, 12 and 16 bit, plain and packed): what raw CSI sensors
/// deliver (jetson-containers tells CSI cameras by `RG10`); webcams deliver YUYV or MJPG.
fn is_bayer(fourcc: [u8; 4]) -> bool {
    const BAYER: &[&[u8; 4]] = &[
        b"BA81", b"GBRG", b"GRBG", b"RGGB", b"BG10", b"GB10", b"BA10", b"RG10", b"BG12", b"GB12", b"BA12", b"RG12",
        b"pBAA", b"pGAA", b"pgAA", b"pRAA", b"pBCC", b"pGCC", b"pgCC", b"pRCC", b"BYR2", b"GB16", b"GR16", b"RG16",
    ];
    BAYER.contains(&&fourcc)
}

/// The interface a V4L2 driver name stands for: NVIDIA's VI driver or the UVC driver.
fn driver_interface(driver: &str) -> Option<CameraInterface> {
    match driver {
        "tegra-video" | "tegra-vi" | "tegra_vi" => Some(CameraInterface::Csi),
        "uvcvideo" => Some(CameraInterface::Usb),
        _ => None,
    }
}

/// The interface the sysfs device of a node (its host path, `/sys/devices/...`) and the node's name tell: a
/// `usbN` root hub above it is USB; the Tegra VI (`tegra-capture-vi`, `<addr>.vi`, `vi`) or the name NVIDIA's
/// driver gives (`vi-output, imx219 9-0010`) is CSI.
fn sysfs_interface(device: Option<&Path>, name: Option<&str>) -> CameraInterface {
    let parts: Vec<String> = device
        .map(|d| d.components().filter_map(|c| c.as_os_str().to_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let root_hub =
        |p: &str| p.strip_prefix("usb").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if parts.iter().any(|p| root_hub(p)) {
        return CameraInterface::Usb;
    }
    let vi = |p: &str| p == "tegra-capture-vi" || p == "vi" || p.ends_with(".vi") || p.starts_with("tegra-vi");
    if parts.iter().any(|p| vi(p)) || name.is_some_and(|n| n.starts_with("vi-output")) {
        return CameraInterface::Csi;
    }
    CameraInterface::Other
}

/// Opens the node read-only and non-blocking (QUERYCAP needs no write access, and a busy camera must not stall
/// the probe) and asks the driver what the node does.
fn query_caps(node: &Path) -> std::io::Result<Caps> {
    use v4l::v4l2;
    use v4l::v4l_sys::v4l2_capability;
    const CAPTURE: u32 = 0x0000_0001 | 0x0000_1000; // V4L2_CAP_VIDEO_CAPTURE | _MPLANE
    const DEVICE_CAPS: u32 = 0x8000_0000;

    let file =
        OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC).open(node)?;
    // SAFETY: v4l2_capability is plain old data (zeroes are valid) and lives for the whole call; the fd is open.
    let caps = unsafe {
        let mut caps: v4l2_capability = std::mem::zeroed();
        v4l2::ioctl(
            file.as_raw_fd(),
            v4l2::vidioc::VIDIOC_QUERYCAP,
            &mut caps as *mut v4l2_capability as *mut std::os::raw::c_void,
        )?;
        caps
    };
    // device_caps describes this node; capabilities describes the whole device (all its nodes).
    let flags = if caps.capabilities & DEVICE_CAPS != 0 { caps.device_caps } else { caps.capabilities };
    // Not the v4l crate's Capabilities: its conversion panics on a card name that is not UTF-8.
    let card = String::from_utf8_lossy(&caps.card).trim_end_matches('\0').trim().to_owned();
    let driver = String::from_utf8_lossy(&caps.driver).trim_end_matches('\0').trim().to_owned();
    let capture = flags & CAPTURE != 0;
    let bayer = capture && capture_formats(&file).into_iter().any(is_bayer);
    Ok(Caps { capture, card, driver, bayer })
}

/// The pixel formats (fourccs) a capture node offers (`VIDIOC_ENUM_FMT`, single-plane capture, at most 64);
/// empty when the driver refuses to list them.
fn capture_formats(file: &std::fs::File) -> Vec<[u8; 4]> {
    use v4l::v4l2;
    use v4l::v4l_sys::v4l2_fmtdesc;
    const VIDEO_CAPTURE: u32 = 1; // V4L2_BUF_TYPE_VIDEO_CAPTURE
    let mut formats = Vec::new();
    for index in 0..64 {
        // SAFETY: v4l2_fmtdesc is plain old data (zeroes are valid) and lives for the whole call; the fd is open.
        let desc = unsafe {
            let mut desc: v4l2_fmtdesc = std::mem::zeroed();
            desc.index = index;
            desc.type_ = VIDEO_CAPTURE;
            match v4l2::ioctl(
                file.as_raw_fd(),
                v4l2::vidioc::VIDIOC_ENUM_FMT,
                &mut desc as *mut v4l2_fmtdesc as *mut std::os::raw::c_void,
            ) {
                Ok(()) => desc,
                // EINVAL past the last format; any other error ends the list too.
                Err(_) => break,
            }
        };
        formats.push(desc.pixelformat.to_le_bytes());
    }
    formats
}

/// The symlinks in a `/dev/v4l/by-*` directory as (host link path, host target path).
fn stable_links(root: &Path, dir: &str) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(under_root(root, dir)) else {
        return Vec::new();
    };
    let mut links: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            // udev escapes by-id names to ASCII; anything else could not be reported in JSON.
            e.file_name().to_str()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let link = Path::new(dir).join(e.file_name());
            // Resolve lexically against the host path: the link must not be followed on this machine's root.
            let target = crate::os::fsutil::normalize_abs(&Path::new(dir).join(target));
            Some((link, target))
        })
        .collect();
    links.sort();
    links
}

fn links_to(links: &[(PathBuf, PathBuf)], node: &Path) -> Vec<PathBuf> {
    links.iter().filter(|(_, t)| t == node).map(|(l, _)| l.clone()).collect()
}

/// The cameras a selector names: `all` (every node), `csi` (every CSI camera), a path (`/dev/video0` or a `/dev/v4l/by-*` name), or
/// otherwise a case-insensitive substring of the camera name or of a by-id name. Both nodes of a UVC camera
/// match a name, which is harmless: passing the metadata node too does no harm.
pub fn select<'a>(cameras: &'a [Camera], selector: &str) -> Vec<&'a Camera> {
    let selector = selector.trim();
    if selector == "all" {
        return cameras.iter().collect();
    }
    if selector == CSI {
        return cameras.iter().filter(|c| c.interface == CameraInterface::Csi).collect();
    }
    if selector.starts_with('/') {
        let p = Path::new(selector);
        return cameras.iter().filter(|c| c.node == p || c.by_id.iter().chain(&c.by_path).any(|l| l == p)).collect();
    }
    let needle = selector.to_lowercase();
    if needle.is_empty() {
        return Vec::new();
    }
    cameras
        .iter()
        .filter(|c| {
            c.name.as_ref().is_some_and(|n| n.to_lowercase().contains(&needle))
                || c.by_id
                    .iter()
                    .any(|l| l.file_name().is_some_and(|f| f.to_string_lossy().to_lowercase().contains(&needle)))
        })
        .collect()
}

/// The libargus socket of `nvargus-daemon`, which CSI cameras are reached through.
pub const ARGUS_SOCKET: &str = "/tmp/argus_socket";

/// The selector of every CSI camera, which also brings [`ARGUS_SOCKET`] and needs nvargus-daemon to answer.
pub const CSI: &str = "csi";

/// Why the requested cameras cannot be given to a container.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    /// A selector matches no camera on this host (not plugged in, not yet enumerated, or a typo). This is not a
    /// failure of the deployment: the agent puts it in the `waiting-for-device` state and starts it once the
    /// camera appears (a later `discover` + `resolve` succeeds), instead of starting a container that would
    /// crash-loop without its camera.
    #[error("camera `{selector}` is not connected: no video device matches it (check `ls -l /dev/video* /dev/v4l/by-id`); the deployment waits for it")]
    Missing {
        /// The selector as configured.
        selector: String,
    },
    /// A camera's node exists but is not a char device (a broken udev setup or a stray file).
    #[error("camera node {} is not a char device ({found}); check udev (`udevadm trigger --subsystem-match=video4linux`)", .node.display())]
    NotDevice {
        /// The node's host path.
        node: PathBuf,
        /// What is there instead.
        found: String,
    },
    /// The selector `csi` needs nvargus-daemon, and its socket is missing, not root's, or does not answer. The
    /// start fails and is retried with backoff, like any failed start, until the daemon is back.
    #[error("camera selector `csi`: {ARGUS_SOCKET} {reason}")]
    ArgusDown {
        /// What is wrong with the socket and what to do.
        reason: String,
    },
}

/// The device nodes for the camera `selectors` of a deployment: `all`, a node path (`/dev/video0`), a
/// `/dev/v4l/by-id/...` or `/dev/v4l/by-path/...` path, a bare by-id name, or a case-insensitive name substring
/// (see [`select`]). Each selected node brings its siblings (the other nodes of the same sysfs `device`, e.g.
/// the UVC metadata node beside the capture node). Numbers and mode come from `stat(2)` of the live node under
/// `root`, with the cgroup rule `rwm`; the container path is the host node path. `cameras` is a fresh
/// [`discover`] of the same root.
///
/// A selector that matches nothing, including `all` on a host without cameras, gives
/// [`CameraError::Missing`] for the first such selector.
pub fn resolve(
    cameras: &[Camera],
    root: &Path,
    selectors: &[String],
) -> std::result::Result<Vec<DeviceNode>, CameraError> {
    let parents: Vec<Option<PathBuf>> = cameras.iter().map(|c| sysfs_parent(root, &c.node)).collect();
    let mut chosen = vec![false; cameras.len()];
    for selector in selectors {
        let sel = selector.trim();
        let exact_by_id: Vec<&Camera> = if sel.contains('/') {
            Vec::new()
        } else {
            cameras.iter().filter(|c| c.by_id.iter().any(|l| l.file_name().is_some_and(|f| f == sel))).collect()
        };
        let matched = if exact_by_id.is_empty() { select(cameras, sel) } else { exact_by_id };
        if matched.is_empty() {
            return Err(CameraError::Missing { selector: selector.clone() });
        }
        for m in matched {
            let i = cameras.iter().position(|c| std::ptr::eq(c, m)).unwrap_or_default();
            chosen[i] = true;
            if let Some(parent) = &parents[i] {
                for (j, p) in parents.iter().enumerate() {
                    if p.as_ref() == Some(parent) {
                        chosen[j] = true;
                    }
                }
            }
        }
    }
    let mut nodes = Vec::new();
    for (cam, _) in cameras.iter().zip(chosen).filter(|(_, c)| *c) {
        let path = under_root(root, &cam.node.to_string_lossy());
        // lstat: a symlink in place of the node is refused, never followed (on the Docker backend the daemon
        // opens the path itself).
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Unplugged between discovery and now: the same as not connected.
            Err(_) => return Err(CameraError::Missing { selector: cam.node.to_string_lossy().into_owned() }),
        };
        if !meta.file_type().is_char_device() {
            let found = if meta.file_type().is_symlink() {
                "a symlink"
            } else if meta.is_file() {
                "a regular file"
            } else {
                "not a device"
            };
            return Err(CameraError::NotDevice { node: cam.node.clone(), found: found.into() });
        }
        nodes.push(DeviceNode {
            path: cam.node.clone(),
            kind: 'c',
            major: nix::sys::stat::major(meta.rdev()) as i64,
            minor: nix::sys::stat::minor(meta.rdev()) as i64,
            file_mode: Some(meta.mode() & 0o777),
            access: "rwm".into(),
        });
    }
    Ok(nodes)
}

/// The real sysfs device a video node belongs to (`/sys/class/video4linux/videoN/device` resolved with
/// symlinks kept inside `root`), as a host path (`/sys/devices/platform/tegra-capture-vi`).
fn sysfs_parent(root: &Path, node: &Path) -> Option<PathBuf> {
    use crate::os::beneath::{self, Symlinks};
    use nix::fcntl::OFlag;
    let name = node.file_name()?.to_str()?;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let rootfd = nix::fcntl::open(root, flags, nix::sys::stat::Mode::empty()).ok()?;
    let rel = format!("sys/class/video4linux/{name}/device");
    let fd = beneath::open(&rootfd, Path::new(&rel), Symlinks::InRoot, OFlag::O_PATH | OFlag::O_DIRECTORY).ok()?;
    let real = std::fs::read_link(beneath::proc_fd_path(&fd)).ok()?;
    let real_root = std::fs::canonicalize(root).ok()?;
    Some(Path::new("/").join(real.strip_prefix(&real_root).ok()?))
}

/// What a container asking for the cameras `selectors` gets, found fresh under `root`: the selected nodes
/// ([`resolve`]) and, when it also has the GPU (`gpu`), the nvargus socket ([`argus_mount`]). Both backends
/// call this, so a missing camera fails the same way (before anything is created) on each. Discovery warnings
/// are logged.
pub fn edits(root: &Path, selectors: &[String], gpu: bool) -> std::result::Result<DeviceEdits, CameraError> {
    let mut out = DeviceEdits::default();
    if selectors.is_empty() {
        return Ok(out);
    }
    let mut warnings = Vec::new();
    let found = discover(root, &mut warnings);
    for w in warnings {
        tracing::debug!(warning = %w, "camera discovery");
    }
    out.devices = resolve(&found, root, selectors)?;
    if selectors.iter().any(|s| s.trim() == CSI) {
        super::jetson::check_argus(root).map_err(|reason| CameraError::ArgusDown { reason })?;
        out.push_mount(BindMount {
            host: under_root(root, ARGUS_SOCKET),
            container: PathBuf::from(ARGUS_SOCKET),
            read_only: false,
        });
    }
    if let Some(m) = argus_mount(root, gpu, selectors) {
        out.push_mount(m);
    }
    Ok(out)
}

/// The bind mount of [`ARGUS_SOCKET`] for a container that asks for cameras and the GPU, when the host runs
/// `nvargus-daemon` (the socket exists under `root`). CSI cameras are only reachable through it; the argus
/// client library comes with the GPU's CSV/CDI mounts, which is why the GPU is a condition.
pub fn argus_mount(root: &Path, gpu: bool, selectors: &[String]) -> Option<BindMount> {
    if !gpu || selectors.is_empty() || !super::gpu::is_socket(root, ARGUS_SOCKET) {
        return None;
    }
    Some(BindMount { host: under_root(root, ARGUS_SOCKET), container: PathBuf::from(ARGUS_SOCKET), read_only: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(n: u32, name: &str, capture: bool, by_id: &str) -> Camera {
        Camera {
            node: PathBuf::from(format!("/dev/video{n}")),
            name: Some(name.into()),
            index: Some(if capture { 0 } else { 1 }),
            capture,
            detected_by: "sysfs-index".into(),
            interface: if name.starts_with("vi-output") { CameraInterface::Csi } else { CameraInterface::Usb },
            by_id: vec![PathBuf::from(format!("/dev/v4l/by-id/{by_id}"))],
            by_path: vec![PathBuf::from(format!("/dev/v4l/by-path/platform-usb-0:{n}:1.0-video-index0"))],
        }
    }

    #[test]
    fn select_by_all_path_by_id_and_name() {
        let cams = [
            cam(0, "HD Pro Webcam C920", true, "usb-046d_HD_Pro_Webcam_C920-video-index0"),
            cam(1, "HD Pro Webcam C920", false, "usb-046d_HD_Pro_Webcam_C920-video-index1"),
            cam(2, "USB 2.0 Camera", true, "usb-Sonix_USB_2.0_Camera-video-index0"),
        ];
        let nodes =
            |sel: &str| select(&cams, sel).iter().map(|c| c.node.to_string_lossy().into_owned()).collect::<Vec<_>>();
        assert_eq!(nodes("all").len(), 3);
        assert_eq!(nodes("/dev/video2"), ["/dev/video2"]);
        assert_eq!(nodes("/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920-video-index1"), ["/dev/video1"]);
        assert_eq!(nodes("/dev/v4l/by-path/platform-usb-0:0:1.0-video-index0"), ["/dev/video0"]);
        assert_eq!(nodes("c920"), ["/dev/video0", "/dev/video1"]);
        assert_eq!(nodes("sonix"), ["/dev/video2"], "by-id names match too");
        assert!(nodes("/dev/video9").is_empty());
        assert!(nodes("  ").is_empty());
        assert!(nodes("csi").is_empty(), "no CSI camera among USB webcams");
        let mixed = [cam(0, "vi-output, imx219 9-0010", true, "x"), cam(1, "USB Camera csi", true, "y")];
        let csi: Vec<_> = select(&mixed, "csi").iter().map(|c| c.node.display().to_string()).collect();
        assert_eq!(csi, ["/dev/video0"], "`csi` is the interface, not a name substring");
    }

    #[test]
    fn interface_from_driver_then_sysfs_device_then_name() {
        assert!(is_bayer(*b"RG10") && is_bayer(*b"pRAA") && is_bayer(*b"BA81"));
        assert!(!is_bayer(*b"YUYV") && !is_bayer(*b"MJPG") && !is_bayer(*b"NV12"));
        assert_eq!(driver_interface("tegra-video"), Some(CameraInterface::Csi));
        assert_eq!(driver_interface("uvcvideo"), Some(CameraInterface::Usb));
        assert_eq!(driver_interface("vivid"), None);
        let iface = |d: &str, n: &str| sysfs_interface(Some(Path::new(d)), Some(n));
        assert_eq!(iface("/sys/devices/platform/tegra-capture-vi", "vi-output, imx219 9-0010"), CameraInterface::Csi);
        assert_eq!(iface("/sys/devices/50000000.host1x/54080000.vi", "imx219"), CameraInterface::Csi, "JetPack 4");
        assert_eq!(
            iface("/sys/devices/platform/bus@0/3610000.usb/usb1/1-2/1-2.1/1-2.1:1.0", "HD Pro Webcam C920"),
            CameraInterface::Usb
        );
        assert_eq!(iface("/sys/devices/virtual/video4linux", "Dummy video device"), CameraInterface::Other);
        assert_eq!(sysfs_interface(None, Some("vi-output, imx477 10-001a")), CameraInterface::Csi);
        assert_eq!(sysfs_interface(None, None), CameraInterface::Other);
    }
}
