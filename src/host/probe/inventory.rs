//! What the board is and what is installed on it, beyond the L4T release: the serial number and the module's
//! 699-level part number, the CUDA/cuDNN/TensorRT/VPI/OpenCV/JetPack versions that dpkg says are installed (not
//! the ones the L4T table expects), and the nvpmodel power modes with the default.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::host::l4t;
use crate::host::metrics::{parse_nvpmodel_conf, parse_nvpmodel_default};
use crate::os::fsutil::under_root;

/// The board's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// `/proc/device-tree/serial-number`.
    pub serial_number: Option<String>,
    /// The module's 699-level part number from its EEPROM (bytes 20-49), e.g. `699-13701-0005-500 M.0`.
    pub part_number: Option<String>,
    /// The module from the part number (`p3701-0005`: its characters 5-8 and 10-13).
    pub part_module: Option<String>,
}

/// Versions of the NVIDIA software dpkg lists as installed: the Debian version's upstream part (no epoch, cut
/// at the first `-` or `+`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// `cuda-cudart-X-Y`.
    pub cuda: Option<String>,
    /// `libcudnnN` or `libcudnnN-cuda-M`.
    pub cudnn: Option<String>,
    /// `libnvinferN`.
    pub tensorrt: Option<String>,
    /// `libnvvpiN`.
    pub vpi: Option<String>,
    /// `libopencv` (JetPack's build), else Ubuntu's `libopencv-core*`.
    pub opencv: Option<String>,
    /// The `nvidia-jetpack` meta package.
    pub jetpack: Option<String>,
}

/// The nvpmodel power modes of /etc/nvpmodel.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerModes {
    /// Every `< POWER_MODEL ID=n NAME=... >`, in file order.
    pub modes: Vec<PowerModeName>,
    /// `< PM_CONFIG DEFAULT=n >`: the mode a fresh board runs in.
    pub default_id: Option<u32>,
}

/// One nvpmodel mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerModeName {
    /// The id `nvpmodel -m` takes.
    pub id: u32,
    /// Its name, e.g. `MAXN`, `15W`.
    pub name: String,
}

impl PowerModes {
    /// The mode a controller named, by id (`2`) or name (`30W`, any case); `None` when nvpmodel.conf has no such
    /// mode. This is the only way a mode reaches `nvpmodel -m`: the id passed is the file's, never the caller's text.
    pub fn find(&self, wanted: &str) -> Option<&PowerModeName> {
        let wanted = wanted.trim();
        match wanted.parse::<u32>() {
            Ok(id) if wanted.bytes().all(|b| b.is_ascii_digit()) => self.modes.iter().find(|m| m.id == id),
            _ => self.modes.iter().find(|m| m.name.eq_ignore_ascii_case(wanted)),
        }
    }

    /// `0 MAXN, 1 15W, 2 30W (default), 3 50W`.
    pub fn list(&self) -> String {
        self.modes
            .iter()
            .map(|m| {
                let default = if Some(m.id) == self.default_id { " (default)" } else { "" };
                format!("{} {}{default}", m.id, m.name)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The name of mode `id`.
    pub(crate) fn name_of(&self, id: u32) -> Option<&str> {
        self.modes.iter().find(|m| m.id == id).map(|m| m.name.as_str())
    }
}

/// Largest nvpmodel.conf read (real ones are a few KiB).
const NVPMODEL_CONF_LIMIT: u64 = 1024 * 1024;

/// The power modes of `/etc/nvpmodel.conf` under `root`; `None` without the file.
pub fn read_power_modes(root: &Path, w: &mut Vec<String>) -> Option<PowerModes> {
    let text = match crate::host::devices::read_regular(&under_root(root, "/etc/nvpmodel.conf"), NVPMODEL_CONF_LIMIT) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            w.push(format!("/etc/nvpmodel.conf: cannot read: {e}"));
            return None;
        }
    };
    let modes: Vec<PowerModeName> =
        parse_nvpmodel_conf(&text).into_iter().map(|(id, name)| PowerModeName { id, name }).collect();
    if modes.is_empty() {
        w.push("/etc/nvpmodel.conf: no `< POWER_MODEL ID=n NAME=... >` line; power modes unknown".into());
    }
    Some(PowerModes { modes, default_id: parse_nvpmodel_default(&text) })
}

/// I2C buses whose address 0x50 holds the module EEPROM on Jetsons (7 on TX2), in the order they are tried.
const EEPROM_BUSES: [u32; 4] = [0, 1, 2, 7];

/// The serial number and the EEPROM's part number.
pub(crate) fn read_inventory(root: &Path, w: &mut Vec<String>) -> Inventory {
    let serial_number = super::read_text(root, "/proc/device-tree/serial-number", w);
    let part_number = EEPROM_BUSES.iter().find_map(|bus| read_part_number(root, *bus, w));
    let part_module = part_number.as_deref().and_then(module_of_part_number);
    Inventory { serial_number, part_number, part_module }
}

/// Bytes 20-49 of `/sys/bus/i2c/devices/<bus>-0050/eeprom` (NVIDIA's EEPROM layout), trailing NUL, 0xFF and
/// spaces cut. `None` without the file or when the field is blank; a field that is not text is a warning.
fn read_part_number(root: &Path, bus: u32, w: &mut Vec<String>) -> Option<String> {
    let abs = format!("/sys/bus/i2c/devices/{bus}-0050/eeprom");
    let path = under_root(root, &abs);
    if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::fs::File::open(&path).and_then(|f| f.take(256).read_to_end(&mut bytes)) {
        w.push(format!("{abs}: cannot read: {e}"));
        return None;
    }
    let field = bytes.get(20..50.min(bytes.len()))?;
    let end = field.iter().rposition(|b| !matches!(b, 0 | 0xff | b' ')).map_or(0, |i| i + 1);
    let field = &field[..end];
    if field.is_empty() {
        return None;
    }
    match std::str::from_utf8(field) {
        Ok(s) if s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => Some(s.to_owned()),
        _ => {
            w.push(format!("{abs}: the part number (bytes 20-49) is not text; ignored"));
            None
        }
    }
}

/// `p3701-0005` from `699-13701-0005-500 M.0` (characters 5-8 and 10-13).
fn module_of_part_number(part: &str) -> Option<String> {
    let b = part.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    (part.starts_with("699-") && digits(4..9) && b.get(9) == Some(&b'-') && digits(10..14))
        .then(|| format!("p{}-{}", &part[5..9], &part[10..14]))
}

/// The installed versions from the text of dpkg's status file.
pub(crate) fn installed_from_dpkg(text: &str, w: &mut Vec<String>) -> Installed {
    // Per field: (rank, numeric version, version). The newest of several wins (two CUDA toolkits, say), except
    // that JetPack's own OpenCV build (`libopencv`, rank 1) wins over Ubuntu's.
    let mut found: [Option<(u8, Vec<u64>, String)>; 6] = Default::default();
    for (name, version) in l4t::dpkg_installed(text) {
        let Some(slot) = slot_of(name) else { continue };
        let Some(v) = upstream_version(version) else {
            w.push(format!(
                "/var/lib/dpkg/status: package `{name}` has version `{}`, which is not a version; ignored",
                version.escape_debug()
            ));
            continue;
        };
        let key: Vec<u64> = v.split('.').map(|p| p.parse().unwrap_or(0)).collect();
        let rank = u8::from(name == "libopencv");
        if found[slot].as_ref().is_none_or(|(r, k, _)| (rank, &key) > (*r, k)) {
            found[slot] = Some((rank, key, v));
        }
    }
    let [cuda, cudnn, tensorrt, vpi, opencv, jetpack] = found.map(|f| f.map(|(_, _, v)| v));
    Installed { cuda, cudnn, tensorrt, vpi, opencv, jetpack }
}

/// Which [`Installed`] field a package gives: 0 CUDA, 1 cuDNN, 2 TensorRT, 3 VPI, 4 OpenCV, 5 JetPack.
fn slot_of(name: &str) -> Option<usize> {
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let cudart = name
        .strip_prefix("cuda-cudart-")
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()));
    let cudnn = numbered("libcudnn")
        || name.strip_prefix("libcudnn").and_then(|r| r.split_once("-cuda-")).is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        });
    if cudart {
        Some(0)
    } else if cudnn {
        Some(1)
    } else if numbered("libnvinfer") {
        Some(2)
    } else if numbered("libnvvpi") {
        Some(3)
    } else if name == "libopencv" || name.starts_with("libopencv-core") && !name.ends_with("-dev") {
        Some(4)
    } else if name == "nvidia-jetpack" {
        Some(5)
    } else {
        None
    }
}

/// The upstream part of a Debian version: no epoch, cut at the first `-` or `+` (`10.3.0.30-1+cuda12.5` ->
/// `10.3.0.30`, `6.2+b77` -> `6.2`, `1:4.5.4+dfsg-9` -> `4.5.4`). `None` for text that is not a version.
fn upstream_version(v: &str) -> Option<String> {
    let v = v.split_once(':').map_or(v, |(_, rest)| rest);
    let up = v.split(['-', '+']).next()?;
    (!up.is_empty() && up.len() <= 64 && up.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'~')))
        .then(|| up.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_versions_drop_epoch_and_debian_revision() {
        assert_eq!(upstream_version("10.3.0.30-1+cuda12.5").as_deref(), Some("10.3.0.30"));
        assert_eq!(upstream_version("6.2+b77").as_deref(), Some("6.2"));
        assert_eq!(upstream_version("5.1.3-b29").as_deref(), Some("5.1.3"));
        assert_eq!(upstream_version("1:4.5.4+dfsg-9").as_deref(), Some("4.5.4"));
        assert_eq!(upstream_version("3.2.4").as_deref(), Some("3.2.4"));
        assert_eq!(upstream_version("\u{1}x"), None);
        assert_eq!(upstream_version(""), None);
    }

    #[test]
    fn packages_map_to_their_field() {
        for (name, slot) in [
            ("cuda-cudart-12-6", Some(0)),
            ("cuda-cudart-dev-12-6", None),
            ("cuda-cudart-10-2", Some(0)),
            ("libcudnn8", Some(1)),
            ("libcudnn9-cuda-12", Some(1)),
            ("libcudnn9-dev-cuda-12", None),
            ("libnvinfer10", Some(2)),
            ("libnvinfer-plugin10", None),
            ("libnvinfer-bin", None),
            ("libnvvpi3", Some(3)),
            ("vpi3-dev", None),
            ("libopencv", Some(4)),
            ("libopencv-core4.5d", Some(4)),
            ("libopencv-dev", None),
            ("nvidia-jetpack", Some(5)),
            ("nvidia-jetpack-dev", None),
        ] {
            assert_eq!(slot_of(name), slot, "{name}");
        }
    }

    #[test]
    fn the_newest_of_two_toolkits_wins_and_jetpacks_opencv_beats_ubuntus() {
        let status = "Package: cuda-cudart-11-4\nStatus: install ok installed\nVersion: 11.4.298-1\n\n\
                      Package: cuda-cudart-12-2\nStatus: install ok installed\nVersion: 12.2.140-1\n\n\
                      Package: libopencv-core4.5d\nStatus: install ok installed\nVersion: 4.5.4+dfsg-9ubuntu4\n\n\
                      Package: libopencv\nStatus: install ok installed\nVersion: 4.8.0-1-g6371ee1\n\n\
                      Package: libnvvpi3\nStatus: deinstall ok config-files\nVersion: 3.1.5\n";
        let mut w = Vec::new();
        let i = installed_from_dpkg(status, &mut w);
        assert_eq!((i.cuda.as_deref(), i.opencv.as_deref(), i.vpi), (Some("12.2.140"), Some("4.8.0"), None));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn modes_are_found_by_id_or_name_only_from_the_file() {
        let modes = PowerModes {
            modes: vec![PowerModeName { id: 0, name: "MAXN".into() }, PowerModeName { id: 2, name: "30W".into() }],
            default_id: Some(2),
        };
        assert_eq!(modes.find("2").map(|m| m.id), Some(2));
        assert_eq!(modes.find("maxn").map(|m| m.id), Some(0));
        assert_eq!(modes.find(" 30W ").map(|m| m.id), Some(2));
        for bad in ["1", "-m 0", "0; reboot", "+2", "02x", "", "MAXN_SUPER"] {
            assert_eq!(modes.find(bad), None, "{bad:?}");
        }
        assert_eq!(modes.list(), "0 MAXN, 2 30W (default)");
    }

    #[test]
    fn part_numbers_give_the_module() {
        assert_eq!(module_of_part_number("699-13701-0005-500 M.0").as_deref(), Some("p3701-0005"));
        assert_eq!(module_of_part_number("699-13767-0005-300 K.2").as_deref(), Some("p3767-0005"));
        assert_eq!(module_of_part_number("900-13701-0005"), None);
        assert_eq!(module_of_part_number("699-1370"), None);
    }
}
