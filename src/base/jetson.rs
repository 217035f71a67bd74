//! The Jetson conveniences a deployment may ask for by name (`jetson = ["argus", "localtime"]`): each stands for
//! what jetson-containers' `run.sh` adds to `docker run` for one purpose (docs/runtime.md has the table). A
//! leaf value type shared by documents, the local policy and the runtime; what each one mounts is
//! `host::devices::jetson`'s.

use serde::{Deserialize, Serialize};

/// One Jetson convenience. Serialized in kebab-case (`l4t-release`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Convenience {
    /// nvargus-daemon's socket `/tmp/argus_socket` (CSI cameras through libargus).
    Argus,
    /// The X11 socket directory `/tmp/.X11-unix` with `DISPLAY` (and `XAUTHORITY` when the host has
    /// `/tmp/.docker.xauth`).
    Display,
    /// The sound devices under `/dev/snd`.
    Audio,
    /// Every USB device node under `/dev/bus/usb` (raw USB access).
    Usb,
    /// `/etc/localtime` and `/etc/timezone`, read-only.
    Localtime,
    /// `/etc/nv_tegra_release` and `/etc/enctune.conf`, read-only.
    L4tRelease,
    /// The board model (`/proc/device-tree/model`) at `/tmp/nv_jetson_model`, read-only.
    Model,
}

impl Convenience {
    /// Every convenience, in documentation order.
    pub const ALL: [Convenience; 7] = [
        Convenience::Argus,
        Convenience::Display,
        Convenience::Audio,
        Convenience::Usb,
        Convenience::Localtime,
        Convenience::L4tRelease,
        Convenience::Model,
    ];

    /// The name documents, the policy and `--jetson` use.
    pub fn name(self) -> &'static str {
        match self {
            Convenience::Argus => "argus",
            Convenience::Display => "display",
            Convenience::Audio => "audio",
            Convenience::Usb => "usb",
            Convenience::Localtime => "localtime",
            Convenience::L4tRelease => "l4t-release",
            Convenience::Model => "model",
        }
    }

    /// Parses a name (as [`Convenience::name`] gives it); the error lists the valid names.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Self::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            format!(
                "`{s}` is not a Jetson convenience; use one of {}",
                Self::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The conveniences the local policy allows without being asked: the read-only information files and the
    /// argus socket (which cameras with the GPU get anyway). `display`, `audio` and `usb` widen what the
    /// container can reach (other X clients' windows and input, sound devices, raw USB devices).
    pub fn default_allowed() -> Vec<Convenience> {
        vec![Convenience::Argus, Convenience::Localtime, Convenience::L4tRelease, Convenience::Model]
    }
}

impl std::fmt::Display for Convenience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Convenience {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_parse() {
        for c in Convenience::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
            assert_eq!(serde_json::from_str::<Convenience>(&json).unwrap(), c);
            assert_eq!(Convenience::parse(c.name()).unwrap(), c);
        }
        let err = Convenience::parse("x11").unwrap_err();
        assert!(err.contains("`x11`") && err.contains("display"), "{err}");
    }
}
