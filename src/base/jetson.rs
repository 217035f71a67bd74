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
    pub(crate) fn default_allowed() -> Vec<Convenience> {
        vec![Convenience::Argus, Convenience::Localtime, Convenience::L4tRelease, Convenience::Model]
    }
}

/// The policy's refusals of a deployment's `jetson` list (`asked`) and of a `csi` camera selector among
/// `cameras` when `allowed` lacks what they need: `(field, message)` pairs naming `policy.allowed_jetson`.
pub fn refusals(asked: &[Convenience], cameras: &[String], allowed: &[Convenience]) -> Vec<(String, String)> {
    let refuse = |what: String, c: Convenience| {
        format!(
            "{what} is not allowed by this device's policy; set policy.allowed_jetson to include \"{c}\" in the agent \
             config"
        )
    };
    let mut out = Vec::new();
    for (i, c) in asked.iter().enumerate() {
        if !allowed.contains(c) {
            out.push((format!("jetson[{i}]"), refuse(format!("the Jetson convenience `{c}` ({})", c.widens()), *c)));
        }
    }
    if !allowed.contains(&Convenience::Argus) {
        for (i, sel) in cameras.iter().enumerate().filter(|(_, s)| s.trim() == "csi") {
            let what = format!("the camera selector `{}` (it mounts nvargus-daemon's socket)", sel.trim());
            out.push((format!("cameras[{i}]"), refuse(what, Convenience::Argus)));
        }
    }
    out
}

impl Convenience {
    /// What the convenience gives the container, for refusals.
    fn widens(self) -> &'static str {
        match self {
            Convenience::Argus => "nvargus-daemon's socket: the CSI cameras",
            Convenience::Display => "the X11 socket: every window and the input of the display",
            Convenience::Audio => "the sound devices under /dev/snd",
            Convenience::Usb => "raw access to every USB device under /dev/bus/usb",
            Convenience::Localtime => "the host's time zone files",
            Convenience::L4tRelease => "the L4T release and encoder tuning files",
            Convenience::Model => "the board model",
        }
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

    #[test]
    fn refusals_name_the_policy_key_for_what_is_not_allowed() {
        let allowed = Convenience::default_allowed();
        assert!(refusals(&allowed, &["csi".into()], &allowed).is_empty(), "the defaults pass");
        let r = refusals(&[Convenience::Localtime, Convenience::Usb], &[], &allowed);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, "jetson[1]");
        assert!(r[0].1.contains("policy.allowed_jetson to include \"usb\"") && r[0].1.contains("/dev/bus/usb"));
        let r = refusals(&[], &["all".into(), " csi".into()], &[]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, "cameras[1]");
        assert!(r[0].1.contains("\"argus\""), "{}", r[0].1);
    }
}
