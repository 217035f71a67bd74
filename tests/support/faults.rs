//! What the reliability tests check after a fault, and the faults they make: mounts and monitors left behind,
//! a verified store, an emulated power cut, a small loop-mounted file system for a full disk.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Mount points under `<state>/bundles/` (container root file systems), from this process's mount table.
pub fn bundle_mounts(state: &Path) -> BTreeSet<PathBuf> {
    let prefix = format!("{}/bundles/", state.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(PathBuf::from)
        .collect()
}

/// The container ids that a live conmon under `<state>/containers/` watches (from each conmon's `-c ID`).
pub fn monitors(state: &Path) -> Vec<String> {
    let dir = format!("{}/containers/", state.display());
    let mut ids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if !args.first().is_some_and(|a| a.ends_with("conmon")) || !args.iter().any(|a| a.starts_with(&dir)) {
            continue;
        }
        // A zombie has an empty cmdline, so this one is alive.
        if let Some(i) = args.iter().position(|a| a == "-c") {
            ids.push(args[i + 1].clone());
        }
    }
    ids.sort();
    ids
}

/// What is unsound in the image store and the snapshots under `state`, checked independently of the agent's
/// own checks: a blob that does not hash to its name, a partial download of a blob that is complete, a snapshot
/// without its completion record or whose tree differs from the one recorded, a temp or damaged snapshot left.
pub fn store_problems(state: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let blobs = state.join("images/blobs/sha256");
    for e in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
        let digest = format!("sha256:{}", e.file_name().to_string_lossy());
        if jetship::image::store::hash_file(&e.path()).unwrap() != digest {
            problems.push(format!("blob {digest} does not hash to its name"));
        }
    }
    for e in std::fs::read_dir(state.join("images/ingest")).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(hex) = name.strip_suffix(".partial") {
            if blobs.join(hex).exists() {
                problems.push(format!("partial {name} of a complete blob"));
            }
        }
    }
    for e in std::fs::read_dir(state.join("snapshots")).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            problems.push(format!("snapshots/{name} left behind"));
            continue;
        }
        let meta: Option<serde_json::Value> =
            std::fs::read(e.path().join("meta.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let Some(meta) = meta else {
            problems.push(format!("snapshots/{name} has no completion record"));
            continue;
        };
        let (tree, _) = jetship::image::snapshot::tree_digest(&e.path().join("fs")).unwrap();
        if meta["tree"].as_str() != Some(tree.as_str()) {
            problems.push(format!("snapshots/{name}: tree differs from its completion record"));
        }
    }
    problems
}

/// Kills every conmon and container process under `state` with SIGKILL, as a power cut would.
pub fn kill_monitors_and_containers(state: &Path, run: &Path) {
    let dirs = [format!("{}/", state.display()), format!("{}/", run.display())];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let text = String::from_utf8_lossy(&cmdline);
        if text.split('\0').next().is_some_and(|a| a.ends_with("conmon"))
            && dirs.iter().any(|d| text.contains(d.as_str()))
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    // The containers' own processes: the pids runc recorded.
    for e in std::fs::read_dir(state.join("containers")).into_iter().flatten().flatten() {
        if let Ok(pid) = std::fs::read_to_string(e.path().join("ctr.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// An emulated power cut of a native device: the agent is already dead; every conmon and container is killed,
/// the container root file systems are unmounted, the run dir (a tmpfs on a device) is emptied and the boot id
/// changes.
pub fn power_cut(state: &Path, run: &Path, host_root: &Path) {
    kill_monitors_and_containers(state, run);
    for m in bundle_mounts(state) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(run);
    std::fs::create_dir_all(run).unwrap();
    let boot = host_root.join("proc/sys/kernel/random/boot_id");
    std::fs::create_dir_all(boot.parent().unwrap()).unwrap();
    std::fs::write(boot, format!("{:032x}\n", rand::random::<u128>())).unwrap();
}

/// A small ext4 file system in a file, loop-mounted at `mount`; unmounted and detached on drop, even when the
/// test fails.
pub struct LoopFs {
    pub mount: PathBuf,
    device: String,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    pub fn new(size_mib: u64) -> LoopFs {
        assert!(nix::unistd::geteuid().is_root(), "loop mounts need root (scripts/test runs as root)");
        super::require_tool("losetup", "mount");
        super::require_tool("mkfs.ext4", "e2fsprogs");
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image).unwrap().set_len(size_mib << 20).unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(&image));
        let device = run(Command::new("losetup").args(["--find", "--show"]).arg(&image));
        let mount = dir.path().join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        let fs = LoopFs { mount, device, _dir: dir };
        nix::mount::mount(
            Some(fs.device.as_str()),
            &fs.mount,
            Some("ext4"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        fs
    }

    /// Fills the file system to the last block with `fill` (what a runaway log would do); returns its path.
    /// ext4 reserves blocks for delayed allocation and gives back what it did not need at sync, so it writes
    /// and syncs until nothing more fits.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount.join("fill");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        let small = vec![0u8; 512];
        loop {
            let mut wrote = false;
            while f.write_all(&small).is_ok() {
                wrote = true;
            }
            let _ = f.sync_all();
            if !wrote && self.free_bytes() == 0 {
                return path;
            }
        }
    }

    pub fn free_bytes(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.mount).unwrap();
        st.blocks_available() as u64 * st.fragment_size() as u64
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Whatever a test left mounted inside (container root file systems) goes first.
        let inner: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&format!("{}/", self.mount.display())))
            .collect();
        for m in inner.iter().rev() {
            let _ = nix::mount::umount2(Path::new(m), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        let _ = Command::new("losetup").args(["-d", &self.device]).output();
    }
}
