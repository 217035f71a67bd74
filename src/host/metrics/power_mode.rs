//! The nvpmodel power mode: its status file and the names in /etc/nvpmodel.conf.

use super::*;

#[derive(Debug)]
pub(super) struct PowerModeFiles {
    pub(super) status: PathBuf,
    /// (id, name) from nvpmodel.conf.
    pub(super) names: Vec<(u32, String)>,
}

/// The nvpmodel status file and the mode names from nvpmodel.conf (read once: the file is static).
pub(super) fn discover_power_mode(root: &Path, reader: &mut Reader, w: &mut Vec<String>) -> Option<PowerModeFiles> {
    let status = under_root(root, "/var/lib/nvpmodel/status");
    if !status.exists() {
        return None;
    }
    let conf = under_root(root, "/etc/nvpmodel.conf");
    let names = match reader.text(&conf) {
        Ok(text) => parse_nvpmodel_conf(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            w.push(format!("{}: cannot read: {err}; power mode names unknown", conf.display()));
            Vec::new()
        }
    };
    Some(PowerModeFiles { status, names })
}

/// `(id, name)` of every `< POWER_MODEL ID=n NAME=... >` line of nvpmodel.conf.
pub fn parse_nvpmodel_conf(text: &str) -> Vec<(u32, String)> {
    let mut modes = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(body) = line.strip_prefix('<').and_then(|l| l.strip_suffix('>')) else {
            continue;
        };
        let mut words = body.split_ascii_whitespace();
        if words.next() != Some("POWER_MODEL") {
            continue;
        }
        let (mut id, mut name) = (None, None);
        for word in words {
            if let Some(v) = word.strip_prefix("ID=") {
                id = v.parse::<u32>().ok();
            } else if let Some(v) = word.strip_prefix("NAME=") {
                name = Some(v.to_string());
            }
        }
        if let (Some(id), Some(name)) = (id, name) {
            modes.push((id, name));
        }
    }
    modes
}

/// The default mode of nvpmodel.conf (`< PM_CONFIG DEFAULT=n >`): the one the board boots in first.
pub fn parse_nvpmodel_default(text: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let body = line.trim().strip_prefix('<')?.strip_suffix('>')?;
        let mut words = body.split_ascii_whitespace();
        (words.next() == Some("PM_CONFIG")).then_some(())?;
        words.find_map(|w| w.strip_prefix("DEFAULT=")).and_then(|v| v.parse().ok())
    })
}

/// The mode id of /var/lib/nvpmodel/status (`pmode:0002`, possibly followed by other `key:value` words).
pub fn parse_nvpmodel_status(text: &str) -> Option<u32> {
    text.split_ascii_whitespace().find_map(|w| w.strip_prefix("pmode:")).and_then(|v| v.parse().ok())
}

impl PowerModeFiles {
    pub(super) fn read(&self, r: &mut Reader, w: &mut Vec<String>) -> Option<PowerMode> {
        let text = match r.text(&self.status) {
            Ok(t) => t,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
            Err(err) => {
                w.push(format!("{}: cannot read: {err}", self.status.display()));
                return None;
            }
        };
        let Some(id) = parse_nvpmodel_status(text) else {
            w.push(format!("{}: expected `pmode:NNNN`, found `{}`", self.status.display(), snippet(text.trim())));
            return None;
        };
        let name = self.names.iter().find(|(i, _)| *i == id).map(|(_, n)| n.clone());
        Some(PowerMode { id, name })
    }
}
