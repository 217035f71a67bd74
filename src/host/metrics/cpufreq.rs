//! Per-core state from /sys/devices/system/cpu: which cores exist and are online, and each online core's
//! cpufreq policy (governor, current clock, the governor's limits and the hardware's).

use super::*;

/// The cores and cpufreq policies found by discovery.
#[derive(Debug, Default)]
pub(super) struct CoreFiles {
    /// `/sys/devices/system/cpu/online` (a list such as `0-7`), when it exists.
    online_list: Option<PathBuf>,
    cores: Vec<Core>,
    /// Policies shared by cores (`cpuN/cpufreq` links to `cpufreq/policyM`): each is read once per sample.
    policies: Vec<PolicyFiles>,
}

#[derive(Debug)]
struct Core {
    id: u32,
    /// `cpuN/online`; cpu0 usually has none (it cannot go offline).
    online: Option<PathBuf>,
    /// Index into `policies`.
    policy: Option<usize>,
}

#[derive(Debug)]
struct PolicyFiles {
    dir: PathBuf,
}

/// What one policy's attributes read in this sample.
#[derive(Debug, Default, Clone)]
struct PolicyValues {
    governor: Option<String>,
    cur: Option<u64>,
    min: Option<u64>,
    max: Option<u64>,
    hw_min: Option<u64>,
    hw_max: Option<u64>,
}

/// Every `cpuN` directory (in N order) and the cpufreq policy each links to.
pub(super) fn discover_cores(root: &Path) -> CoreFiles {
    let base = under_root(root, "/sys/devices/system/cpu");
    let mut files = CoreFiles::default();
    let online_list = base.join("online");
    files.online_list = online_list.is_file().then_some(online_list);
    for (name, dir) in sorted_entries(&base) {
        let Some(id) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !dir.is_dir() {
            continue;
        }
        let online = dir.join("online");
        let policy = match fs::canonicalize(dir.join("cpufreq")) {
            Ok(p) if p.is_dir() => Some(match files.policies.iter().position(|q| q.dir == p) {
                Some(i) => i,
                None => {
                    files.policies.push(PolicyFiles { dir: p });
                    files.policies.len() - 1
                }
            }),
            _ => None,
        };
        files.cores.push(Core { id, online: online.is_file().then_some(online), policy });
    }
    files
}

/// Whether `id` is in a kernel CPU list such as `0-3,6,8-11`; `None` when the list does not parse.
pub(super) fn in_cpu_list(list: &str, id: u32) -> Option<bool> {
    let list = list.trim();
    if list.is_empty() {
        return Some(false);
    }
    let mut found = false;
    for part in list.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let a = part.trim().parse::<u32>().ok()?;
                (a, a)
            }
        };
        found |= (a..=b).contains(&id);
    }
    Some(found)
}

impl PolicyFiles {
    /// Reads the policy's attributes. A missing attribute is simply absent (not every driver has all); a read
    /// error or garbage is a warning naming the file.
    fn read(&self, r: &mut Reader, w: &mut Vec<String>) -> PolicyValues {
        let khz = |name: &str, r: &mut Reader, w: &mut Vec<String>| -> Option<u64> {
            let p = self.dir.join(name);
            if p.symlink_metadata().is_err() {
                return None;
            }
            let mut ignored = false;
            r.sysfs_number::<u64>(&p, w, &mut ignored).map(|k| k.saturating_mul(1000))
        };
        let governor_path = self.dir.join("scaling_governor");
        let governor = governor_path.symlink_metadata().is_ok().then(|| word_attr(r, &governor_path, w)).flatten();
        PolicyValues {
            governor,
            cur: khz("scaling_cur_freq", r, w),
            min: khz("scaling_min_freq", r, w),
            max: khz("scaling_max_freq", r, w),
            hw_min: khz("cpuinfo_min_freq", r, w),
            hw_max: khz("cpuinfo_max_freq", r, w),
        }
    }
}

impl CoreFiles {
    /// Every core's state. `loads` are the per-core busy percentages of this sample by core id. An offline
    /// core is listed with its id and nothing else, and its policy is not read: the kernel answers EBUSY for a
    /// policy whose cores are all offline, which is the normal state, not a problem.
    pub(super) fn read(
        &self,
        r: &mut Reader,
        loads: &[(u32, f64)],
        w: &mut Vec<String>,
        gone: &mut bool,
    ) -> Vec<CpuCore> {
        if self.cores.is_empty() {
            return Vec::new();
        }
        let list = match &self.online_list {
            Some(p) => match r.text(p) {
                Ok(t) => match in_cpu_list(t, 0).map(|_| t.to_owned()) {
                    Some(t) => Some(t),
                    None => {
                        w.push(format!("{}: expected a CPU list like 0-5, found `{}`", p.display(), snippet(t.trim())));
                        None
                    }
                },
                Err(err) => {
                    if err.kind() == io::ErrorKind::NotFound {
                        *gone = true;
                    }
                    w.push(format!("{}: cannot read: {err}", p.display()));
                    None
                }
            },
            None => None,
        };
        let mut policies: Vec<Option<PolicyValues>> = vec![None; self.policies.len()];
        let mut out = Vec::with_capacity(self.cores.len());
        for core in &self.cores {
            let online = match (&list, &core.online) {
                (Some(l), _) => in_cpu_list(l, core.id).unwrap_or(true),
                (None, Some(p)) => r.sysfs_number::<u32>(p, w, gone).is_none_or(|v| v != 0),
                (None, None) => true,
            };
            let mut c = CpuCore { id: core.id, online, ..CpuCore::default() };
            if online {
                c.load_pct = loads.iter().find(|(id, _)| *id == core.id).map(|(_, l)| *l);
                if let Some(i) = core.policy {
                    let v = policies[i].get_or_insert_with(|| self.policies[i].read(r, w)).clone();
                    c.governor = v.governor;
                    c.cur_freq_hz = v.cur;
                    c.min_freq_hz = v.min;
                    c.max_freq_hz = v.max;
                    c.hw_min_freq_hz = v.hw_min;
                    c.hw_max_freq_hz = v.hw_max;
                }
            }
            out.push(c);
        }
        out
    }
}

impl CoreFiles {
    /// How many cores discovery found.
    pub(super) fn len(&self) -> usize {
        self.cores.len()
    }
}
