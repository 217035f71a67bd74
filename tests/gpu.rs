//! GPU injection and camera mapping against fixture hosts: each test copies a fixture host to a temp dir, makes
//! the device nodes its CDI spec / CSV files / cameras name with mknod (git cannot hold device nodes; the
//! numbers are like the real ones), plans, and checks the exact edits and the OCI spec they build.
//! Running a container with them is the runtime's test, not this one's.

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use jetship::base::GpuMode;
use jetship::host::devices::cameras::{self, CameraError};
use jetship::host::devices::csv;
use jetship::host::devices::gpu::{self, GpuError, GpuMethod, GpuPlan, GpuRequest};
use jetship::host::devices::inject::{BindMount, DeviceEdits, DeviceNode, HookSpec, Symlink};
use jetship::runtime::spec::{self, HostFiles, ImageProcess, ResolvedUser, RunSpec};
use oci_spec::runtime::{LinuxDeviceType, Spec};

const SPEC: &str = "/etc/cdi/nvidia.yaml";
const JP6_LIBS: &str = "/usr/lib/aarch64-linux-gnu/nvidia";
const TEGRA_LIBS: &str = "/usr/lib/aarch64-linux-gnu/tegra";

fn copy_fixture(host: &str) -> tempfile::TempDir {
    support::copy_fixture_host(host)
}

fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Makes a char device at the host path `abs` under `root`, replacing a fixture placeholder.
fn mknod(root: &Path, abs: &str, major: u64, minor: u64) {
    support::mknod_under(root, abs, major, minor, 0o660);
}

fn mknod_all(root: &Path, nodes: &[(&str, u64, u64)]) {
    for (p, ma, mi) in nodes {
        mknod(root, p, *ma, *mi);
    }
}

fn executable(root: &Path, abs: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = under(root, abs);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Installs the libraries, directories and symlinks the host's CSV files list, as JetPack does, except the
/// paths in `skip` (to check that absent entries are skipped). A `sym` points at the listed file or directory
/// whose name extends the link's name (libcuda.so.1 -> libcuda.so.1.1, /usr/local/cuda -> cuda-10.2).
fn install_csv_files(root: &Path, skip: &[&str]) {
    let entries: Vec<csv::Entry> =
        csv::find_files(root).into_iter().flat_map(|f| f.parsed.unwrap().entries.into_iter()).collect();
    for e in entries.iter().filter(|e| !skip.contains(&e.path.as_str())) {
        let p = under(root, &e.path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        match e.kind {
            csv::EntryKind::Lib => std::fs::write(&p, format!("ELF placeholder for {}", e.path)).unwrap(),
            csv::EntryKind::Dir => {
                std::fs::create_dir_all(p.join("lib64")).unwrap();
                std::fs::write(p.join("lib64/libcudart.so.10.2"), "x").unwrap();
            }
            csv::EntryKind::Sym => {
                let target = entries
                    .iter()
                    .filter(|t| t.kind != csv::EntryKind::Sym && t.kind != csv::EntryKind::Dev)
                    .map(|t| Path::new(&t.path))
                    .find(|t| {
                        t.parent() == Path::new(&e.path).parent()
                            && t.file_name().unwrap().to_str().unwrap().starts_with(
                                Path::new(&e.path)
                                    .file_name()
                                    .unwrap()
                                    .to_str()
                                    .unwrap()
                                    .trim_end_matches(char::is_numeric),
                            )
                    })
                    .unwrap_or_else(|| panic!("no target for {}", e.path));
                symlink(target.file_name().unwrap(), &p).unwrap();
            }
            csv::EntryKind::Dev => {}
        }
    }
}

fn gpu_plan(root: &Path, mode: GpuMode) -> Result<GpuPlan, GpuError> {
    gpu::plan_gpu(root, mode, &GpuRequest::All)
}

/// What the native backend does with a GPU plan: inject its edits, and run under the runtime it names.
fn apply(plan: &GpuPlan, run: &mut RunSpec) -> Option<PathBuf> {
    let (edits, runtime) = plan.injection();
    spec::inject(run, &edits);
    runtime.map(Path::to_path_buf)
}

fn node(path: &str, major: i64, minor: i64) -> DeviceNode {
    DeviceNode { path: path.into(), kind: 'c', major, minor, file_mode: Some(0o660), access: "rwm".into() }
}

fn ro(root: &Path, abs: &str) -> BindMount {
    BindMount { host: under(root, abs), container: abs.into(), read_only: true }
}

/// Builds the OCI spec for `run` the way the runtime will.
fn oci(root: &Path, run: &RunSpec) -> Spec {
    let image = ImageProcess { entrypoint: vec!["/bin/sh".into()], ..ImageProcess::default() };
    spec::build(&image, run, ResolvedUser::default(), Path::new("/bundle/rootfs"), &HostFiles::under(root)).unwrap()
}

/// (path, type, major, minor, mode) of the OCI spec's devices, and (allow, major, minor, access) of its rules.
fn oci_devices(s: &Spec) -> Vec<(String, LinuxDeviceType, i64, i64, Option<u32>)> {
    let linux = s.linux().as_ref().unwrap();
    linux
        .devices()
        .as_ref()
        .unwrap()
        .iter()
        .map(|d| (d.path().display().to_string(), d.typ(), d.major(), d.minor(), d.file_mode()))
        .collect()
}

fn oci_rules(s: &Spec) -> Vec<(bool, Option<i64>, Option<i64>, String)> {
    let res = s.linux().as_ref().unwrap().resources().as_ref().unwrap();
    res.devices()
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| (r.allow(), r.major(), r.minor(), r.access().clone().unwrap_or_default()))
        .collect()
}

fn oci_mount<'a>(s: &'a Spec, dest: &str) -> Option<&'a oci_spec::runtime::Mount> {
    s.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new(dest))
}

fn oci_env(s: &Spec) -> Vec<String> {
    s.process().as_ref().unwrap().env().clone().unwrap()
}

fn oci_hooks(s: &Spec) -> Vec<(PathBuf, Vec<String>)> {
    s.hooks()
        .as_ref()
        .and_then(|h| h.create_container().clone())
        .unwrap_or_default()
        .iter()
        .map(|h| (h.path().clone(), h.args().clone().unwrap_or_default()))
        .collect()
}

// ---- CDI ----------------------------------------------------------------------------------------------------

/// The device nodes of the Orin Nano fixture spec, with numbers like a JetPack 6 Orin Nano's.
const ORIN_NODES: [(&str, u64, u64); 12] = [
    ("/dev/nvidiactl", 195, 255),
    ("/dev/nvmap", 10, 125),
    ("/dev/nvhost-ctrl-gpu", 492, 0),
    ("/dev/nvhost-as-gpu", 492, 1),
    ("/dev/host1x-fence", 497, 0),
    ("/dev/nvsciipc", 490, 0),
    ("/dev/v4l2-nvenc", 81, 10),
    ("/dev/v4l2-nvdec", 81, 11),
    ("/dev/nvidia0", 195, 0),
    ("/dev/nvgpu/igpu0/ctrl", 507, 0),
    ("/dev/nvgpu/igpu0/as", 507, 1),
    ("/dev/nvgpu/igpu0/channel", 507, 2),
];

/// A copy of the JetPack 6.2 Orin Nano fixture whose CDI spec is usable: its nodes made, its mounted
/// libraries and hook program installed, and (as newer nvidia-ctk writes) the numbers of
/// /dev/nvgpu/igpu0/ctrl declared in the spec (507:0).
fn orin_with_cdi() -> tempfile::TempDir {
    let root = copy_fixture("orin-nano-super-jp62");
    let r = root.path();
    mknod_all(r, &ORIN_NODES);
    mknod(r, "/dev/nvgpu/igpu0/tsg", 507, 3);
    for lib in ["libcuda.so.1.1", "libnvrm_gpu.so", "libnvidia-ptxjitcompiler.so.540.4.0"] {
        let p = under(r, &format!("{JP6_LIBS}/{lib}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "ELF placeholder").unwrap();
    }
    executable(r, "/usr/bin/nvidia-cdi-hook");
    let spec_file = under(r, SPEC);
    let text = std::fs::read_to_string(&spec_file).unwrap();
    let declared = text.replace(
        "    - path: /dev/nvgpu/igpu0/ctrl\n",
        "    - path: /dev/nvgpu/igpu0/ctrl\n      hostPath: /dev/nvgpu/igpu0/ctrl\n      type: c\n      major: 507\n      minor: 0\n      permissions: rw\n",
    );
    assert_ne!(text, declared, "fixture spec changed: update this test");
    std::fs::write(spec_file, declared).unwrap();
    root
}

#[test]
fn cdi_spec_edits_use_live_numbers_and_carry_mounts_env_and_hooks() {
    let root = orin_with_cdi();
    let r = root.path();
    let plan = gpu_plan(r, GpuMode::Cdi).unwrap();
    assert!(plan.skipped.is_empty());
    let GpuMethod::Cdi { spec, device, edits } = &plan.method else { panic!("{plan:?}") };
    assert_eq!((spec.as_path(), device.as_str()), (Path::new(SPEC), "nvidia.com/gpu=all"));

    let mut want: Vec<DeviceNode> = ORIN_NODES.iter().map(|(p, ma, mi)| node(p, *ma as i64, *mi as i64)).collect();
    want.push(node("/dev/nvgpu/igpu0/tsg", 507, 3));
    want[9].access = "rw".into(); // the spec's permissions for ctrl
    assert_eq!(edits.devices, want);
    assert_eq!(edits.env, ["NVIDIA_VISIBLE_DEVICES=void"]);
    let libs = ["libcuda.so.1.1", "libnvrm_gpu.so", "libnvidia-ptxjitcompiler.so.540.4.0"];
    assert_eq!(edits.mounts, libs.map(|l| ro(r, &format!("{JP6_LIBS}/{l}"))));
    let hook = under(r, "/usr/bin/nvidia-cdi-hook");
    assert_eq!(edits.hooks.len(), 2);
    assert_eq!(edits.hooks[0].path, hook);
    assert_eq!(edits.hooks[0].args[..2], ["create-symlinks", "--link"], "argv[0] is dropped: the path is argv[0]");
    assert_eq!(
        edits.hooks[1],
        HookSpec {
            path: hook.clone(),
            args: vec!["update-ldcache".into(), "--folder".into(), JP6_LIBS.into()],
            env: vec![]
        }
    );
    assert!(edits.symlinks.is_empty(), "CDI specs make their symlinks with their own hook");

    // Through the spec builder: nodes with the live numbers, an allow rule per node, ro mounts, env, hooks.
    let mut run = RunSpec { env: vec!["APP=1".into()], ..RunSpec::default() };
    assert_eq!(apply(&plan, &mut run), None, "CDI runs under the normal OCI runtime");
    let s = oci(r, &run);
    let devs = oci_devices(&s);
    assert_eq!(devs.len(), 13);
    assert!(devs.contains(&("/dev/nvgpu/igpu0/ctrl".into(), LinuxDeviceType::C, 507, 0, Some(0o660))), "{devs:?}");
    assert!(devs.contains(&("/dev/nvmap".into(), LinuxDeviceType::C, 10, 125, Some(0o660))), "{devs:?}");
    let rules = oci_rules(&s);
    assert_eq!(rules[0], (false, None, None, "rwm".into()), "default deny first");
    assert!(rules.contains(&(true, Some(507), Some(0), "rw".into())), "{rules:?}");
    assert!(rules.contains(&(true, Some(195), Some(255), "rwm".into())), "{rules:?}");
    let m = oci_mount(&s, &format!("{JP6_LIBS}/libcuda.so.1.1")).unwrap();
    assert_eq!(m.source().as_deref(), Some(under(r, &format!("{JP6_LIBS}/libcuda.so.1.1")).as_path()));
    assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
    let env = oci_env(&s);
    assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=void".to_string()) && env.contains(&"APP=1".to_string()));
    let hooks = oci_hooks(&s);
    assert_eq!(hooks[1].0, hook);
    assert_eq!(hooks[1].1, [hook.to_str().unwrap(), "update-ldcache", "--folder", JP6_LIBS]);
}

#[test]
fn auto_picks_a_cdi_spec_that_matches_the_live_dev() {
    let root = orin_with_cdi();
    let plan = gpu_plan(root.path(), GpuMode::Auto).unwrap();
    assert_eq!(plan.method.mode(), GpuMode::Cdi);
    assert!(plan.skipped.is_empty(), "{:?}", plan.skipped);
}

#[test]
fn named_cdi_device_applies_that_device_and_unknown_names_are_errors() {
    let root = orin_with_cdi();
    let zero = GpuRequest::parse("nvidia.com/gpu=0").unwrap();
    let plan = gpu::plan_gpu(root.path(), GpuMode::Cdi, &zero).unwrap();
    let GpuMethod::Cdi { device, edits, .. } = &plan.method else { panic!("{plan:?}") };
    assert_eq!(device, "nvidia.com/gpu=0");
    assert!(gpu::device_paths(edits).contains("/dev/nvgpu/igpu0/tsg"));
    let seven = GpuRequest::parse("7").unwrap();
    let err = gpu::plan_gpu(root.path(), GpuMode::Cdi, &seven).unwrap_err();
    assert!(matches!(err, GpuError::NoCdiSpec { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("nvidia.com/gpu=7") && msg.contains("nvidia-ctk cdi generate"), "{msg}");
}

#[test]
fn stale_cdi_spec_is_an_error_in_cdi_mode_and_auto_falls_back_to_csv_with_the_reason() {
    let root = orin_with_cdi();
    let r = root.path();
    // After a reboot nvgpu came up with another major than the spec was generated with.
    mknod(r, "/dev/nvgpu/igpu0/ctrl", 498, 0);
    let err = gpu_plan(r, GpuMode::Cdi).unwrap_err();
    let GpuError::StaleCdi { spec, node, declared, live } = &err else { panic!("{err:?}") };
    assert_eq!(
        (spec.as_path(), node.as_str(), declared.as_str(), live.as_str()),
        (Path::new(SPEC), "/dev/nvgpu/igpu0/ctrl", "c 507:0", "c 498:0")
    );
    let msg = err.to_string();
    for part in [SPEC, "/dev/nvgpu/igpu0/ctrl", "c 507:0", "c 498:0", "nvidia-ctk cdi generate --mode=csv"] {
        assert!(msg.contains(part), "{msg} lacks {part}");
    }

    install_csv_files(r, &[]);
    let plan = gpu_plan(r, GpuMode::Auto).unwrap();
    assert_eq!(plan.method.mode(), GpuMode::Csv);
    assert_eq!(plan.skipped.len(), 1);
    assert_eq!(plan.skipped[0].mode, GpuMode::Cdi);
    assert!(
        plan.skipped[0].reason.contains("stale") && plan.skipped[0].reason.contains("c 498:0"),
        "{:?}",
        plan.skipped
    );
    let edits = plan.edits().unwrap();
    let ctrl = edits.devices.iter().find(|d| d.path == Path::new("/dev/nvgpu/igpu0/ctrl")).unwrap();
    assert_eq!((ctrl.major, ctrl.minor), (498, 0), "CSV mode takes the live numbers");
}

#[test]
fn cdi_spec_naming_a_node_the_host_lacks_is_stale() {
    let root = orin_with_cdi();
    std::fs::remove_file(under(root.path(), "/dev/nvsciipc")).unwrap();
    let err = gpu_plan(root.path(), GpuMode::Cdi).unwrap_err();
    assert!(
        matches!(&err, GpuError::CdiMissing { what: "device node", path, .. } if path == "/dev/nvsciipc"),
        "{err:?}"
    );
    // A placeholder file where a node belongs is not a device either.
    let root = orin_with_cdi();
    let p = under(root.path(), "/dev/nvmap");
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, "").unwrap();
    let err = gpu_plan(root.path(), GpuMode::Cdi).unwrap_err();
    assert!(matches!(err, GpuError::CdiNotDevice { .. }), "{err:?}");
    // Without the hook program the spec cannot work either: install the toolkit.
    let root = orin_with_cdi();
    std::fs::remove_file(under(root.path(), "/usr/bin/nvidia-cdi-hook")).unwrap();
    let msg = gpu_plan(root.path(), GpuMode::Cdi).unwrap_err().to_string();
    assert!(msg.contains("hook program /usr/bin/nvidia-cdi-hook") && msg.contains("nvidia-container-toolkit"), "{msg}");
}

#[test]
fn x86_discrete_gpu_uses_the_same_cdi_path_and_var_run_cdi_overrides_etc_cdi() {
    let root = copy_fixture("generic-x86");
    let r = root.path();
    let spec = |driver: &str| {
        format!(
            "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ndevices:\n- name: all\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\ncontainerEdits:\n  env:\n  - NVIDIA_VISIBLE_DEVICES=void\n  deviceNodes:\n  - path: /dev/nvidiactl\n  - path: /dev/nvidia-uvm\n  mounts:\n  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.{driver}\n    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.{driver}\n    options: [ro, nosuid, nodev, bind]\n"
        )
    };
    std::fs::create_dir_all(under(r, "/etc/cdi")).unwrap();
    std::fs::create_dir_all(under(r, "/var/run/cdi")).unwrap();
    std::fs::write(under(r, "/etc/cdi/nvidia.yaml"), spec("535.0.0")).unwrap();
    std::fs::write(under(r, "/var/run/cdi/nvidia.yaml"), spec("550.54.15")).unwrap();
    mknod_all(r, &[("/dev/nvidia0", 195, 0), ("/dev/nvidiactl", 195, 255), ("/dev/nvidia-uvm", 509, 0)]);
    let lib = "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15";
    std::fs::create_dir_all(under(r, "/usr/lib/x86_64-linux-gnu")).unwrap();
    std::fs::write(under(r, lib), "ELF").unwrap();

    let plan = gpu_plan(r, GpuMode::Auto).unwrap();
    let GpuMethod::Cdi { spec, edits, .. } = &plan.method else { panic!("{plan:?}") };
    assert_eq!(spec, Path::new("/var/run/cdi/nvidia.yaml"));
    assert_eq!(
        edits.devices,
        [node("/dev/nvidiactl", 195, 255), node("/dev/nvidia-uvm", 509, 0), node("/dev/nvidia0", 195, 0)]
    );
    assert_eq!(edits.mounts, [ro(r, lib)]);
    assert!(edits.hooks.is_empty());
}

// ---- CSV ----------------------------------------------------------------------------------------------------

/// Nodes a JetPack 6 AGX Orin has (a subset of what devices.csv lists for all models).
const AGX_NODES: [(&str, u64, u64); 10] = [
    ("/dev/nvidia0", 195, 0),
    ("/dev/nvidiactl", 195, 255),
    ("/dev/nvmap", 10, 125),
    ("/dev/nvgpu/igpu0/ctrl", 507, 0),
    ("/dev/nvgpu/igpu0/as", 507, 1),
    ("/dev/host1x-fence", 497, 0),
    ("/dev/dri/card0", 226, 0),
    ("/dev/dri/card1", 226, 1),
    ("/dev/dri/renderD128", 226, 128),
    ("/dev/v4l2-nvenc", 81, 12),
];

#[test]
fn csv_jp6_maps_live_nodes_globs_libraries_symlinks_and_the_ldcache_hook() {
    let root = copy_fixture("agx-orin-jp60");
    let r = root.path();
    mknod_all(r, &AGX_NODES);
    install_csv_files(r, &[&format!("{JP6_LIBS}/libnvcudla.so"), &format!("{JP6_LIBS}/libnvidia-nvvm.so.4")]);

    let plan = gpu_plan(r, GpuMode::Csv).unwrap();
    let GpuMethod::Csv { files, edits } = &plan.method else { panic!("{plan:?}") };
    let dir = csv::CSV_DIR;
    assert_eq!(files, &[PathBuf::from(format!("{dir}/devices.csv")), PathBuf::from(format!("{dir}/drivers.csv"))]);
    // In CSV order, globs expanded in name order, with the live numbers.
    let want: Vec<DeviceNode> = [
        ("/dev/nvidia0", 195, 0),
        ("/dev/nvidiactl", 195, 255),
        ("/dev/nvmap", 10, 125),
        ("/dev/nvgpu/igpu0/as", 507, 1),
        ("/dev/nvgpu/igpu0/ctrl", 507, 0),
        ("/dev/host1x-fence", 497, 0),
        ("/dev/dri/card0", 226, 0),
        ("/dev/dri/card1", 226, 1),
        ("/dev/dri/renderD128", 226, 128),
        ("/dev/v4l2-nvenc", 81, 12),
    ]
    .iter()
    .map(|(p, a, b)| node(p, *a, *b))
    .collect();
    assert_eq!(edits.devices, want);
    assert!(edits.env.is_empty(), "no LD_LIBRARY_PATH: it would replace the image's own");
    // Every lib line present on the host, read-only at the same path; the absent one is skipped.
    assert_eq!(edits.mounts.len(), 19, "20 lib lines, one absent");
    assert!(edits.mounts.iter().all(|m| m.read_only && under(r, m.container.to_str().unwrap()) == m.host));
    assert_eq!(edits.mounts[0], ro(r, &format!("{JP6_LIBS}/libcuda.so.1.1")));
    assert!(!edits.mounts.iter().any(|m| m.container.ends_with("libnvcudla.so")));
    assert_eq!(
        edits.symlinks[..2],
        [
            Symlink { link: format!("{JP6_LIBS}/libcuda.so.1").into(), target: "libcuda.so.1.1".into() },
            Symlink { link: format!("{JP6_LIBS}/libcuda.so").into(), target: "libcuda.so.1.1".into() },
        ]
    );
    assert_eq!(
        edits.symlinks.len(),
        5,
        "6 sym lines; the absent libnvidia-nvvm.so.4 link is skipped: {:?}",
        edits.symlinks
    );
    assert_eq!(
        edits.hooks,
        [HookSpec {
            path: "/bin/sh".into(),
            args: vec!["-c".into(), gpu::LDCACHE_SCRIPT.into(), "jetship-ldcache".into(), JP6_LIBS.into()],
            env: vec![gpu::HOOK_PATH_ENV.into()],
        }]
    );
    let w = plan.warnings.join("\n");
    // 27 dev lines, 9 of them (two globs) found on this AGX Orin.
    assert!(w.contains("device nodes listed in the CSV files but not on this host were skipped (18;"), "{w}");
    assert!(w.contains("/dev/nvhost-dbg-gpu") && w.contains("/dev/v4l2-nvdec"), "{w}");
    assert!(w.contains(&format!("libraries listed in the CSV files but not on this host were skipped (1; the files cover every Jetson model): {JP6_LIBS}/libnvcudla.so")), "{w}");

    // Through the spec builder, together with the symlinks the bundle builder creates.
    let mut run = RunSpec::default();
    apply(&plan, &mut run);
    let s = oci(r, &run);
    assert!(oci_devices(&s).contains(&("/dev/dri/renderD128".into(), LinuxDeviceType::C, 226, 128, Some(0o660))));
    assert!(oci_rules(&s).contains(&(true, Some(226), Some(128), "rwm".into())));
    let m = oci_mount(&s, &format!("{JP6_LIBS}/libnvrm_gpu.so")).unwrap();
    assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
    assert_eq!(oci_hooks(&s)[0].1[..2], ["/bin/sh", "-c"]);
    let rootfs = tempfile::tempdir().unwrap();
    let mut w = Vec::new();
    gpu::create_symlinks(rootfs.path(), &edits.symlinks, &mut w).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let made = rootfs.path().join(format!("{}/libcuda.so.1", JP6_LIBS.trim_start_matches('/')));
    assert_eq!(std::fs::read_link(made).unwrap(), Path::new("libcuda.so.1.1"));
}

#[test]
fn auto_without_a_cdi_spec_uses_csv_and_says_why() {
    let root = copy_fixture("agx-orin-jp60");
    mknod_all(root.path(), &AGX_NODES);
    install_csv_files(root.path(), &[]);
    let plan = gpu_plan(root.path(), GpuMode::Auto).unwrap();
    assert_eq!(plan.method.mode(), GpuMode::Csv);
    assert_eq!(plan.skipped.len(), 1);
    assert!(plan.skipped[0].reason.starts_with("no CDI spec in /etc/cdi or /var/run/cdi declares nvidia.com/gpu=all"));
}

#[test]
fn csv_jp5_mounts_tegra_libraries_and_the_egl_directory() {
    let root = copy_fixture("orin-nx-jp512");
    let r = root.path();
    mknod_all(
        r,
        &[
            ("/dev/nvhost-ctrl-gpu", 492, 0),
            ("/dev/nvhost-as-gpu", 492, 1),
            ("/dev/nvhost-gpu", 492, 2),
            ("/dev/nvmap", 10, 125),
            ("/dev/nvhost-vic", 489, 0),
        ],
    );
    install_csv_files(r, &[]);
    let plan = gpu_plan(r, GpuMode::Csv).unwrap();
    let edits = plan.edits().unwrap();
    let paths: Vec<_> = edits.devices.iter().map(|d| (d.path.to_str().unwrap(), d.major, d.minor)).collect();
    assert_eq!(
        paths,
        [
            ("/dev/nvhost-as-gpu", 492, 1),
            ("/dev/nvhost-ctrl-gpu", 492, 0),
            ("/dev/nvhost-gpu", 492, 2),
            ("/dev/nvhost-vic", 489, 0),
            ("/dev/nvmap", 10, 125),
        ]
    );
    assert!(edits.mounts.contains(&ro(r, &format!("{TEGRA_LIBS}/libcuda.so.1.1"))));
    assert!(edits.mounts.contains(&ro(r, "/usr/lib/aarch64-linux-gnu/tegra-egl")), "dir lines mount the directory");
    assert_eq!(edits.hooks[0].args[3..], [TEGRA_LIBS], "ldconfig gets the tegra folder only");
    assert!(edits
        .symlinks
        .contains(&Symlink { link: format!("{TEGRA_LIBS}/libcuda.so").into(), target: "libcuda.so.1.1".into() }));
}

#[test]
fn csv_jp4_bind_mounts_cuda_and_links_usr_local_cuda() {
    let root = copy_fixture("nano-jp461");
    let r = root.path();
    mknod_all(
        r,
        &[
            ("/dev/nvhost-as-gpu", 511, 1),
            ("/dev/nvhost-ctrl", 10, 60),
            ("/dev/nvhost-ctrl-gpu", 511, 0),
            ("/dev/nvhost-gpu", 511, 2),
            ("/dev/nvhost-prof-gpu", 511, 3),
            ("/dev/nvhost-vic", 493, 0),
            ("/dev/nvmap", 10, 62),
            ("/dev/fb0", 29, 0),
        ],
    );
    install_csv_files(r, &[]);
    let plan = gpu_plan(r, GpuMode::Csv).unwrap();
    let edits = plan.edits().unwrap();
    assert_eq!(edits.devices.len(), 8);
    assert_eq!(edits.devices[0], node("/dev/fb0", 29, 0));
    assert!(edits.mounts.contains(&ro(r, "/usr/local/cuda-10.2")), "{:?}", edits.mounts);
    assert!(edits.symlinks.contains(&Symlink { link: "/usr/local/cuda".into(), target: "cuda-10.2".into() }));
    assert_eq!(edits.hooks[0].args[3..], [TEGRA_LIBS]);
    let mut run = RunSpec::default();
    apply(&plan, &mut run);
    let s = oci(r, &run);
    let cuda = oci_mount(&s, "/usr/local/cuda-10.2").unwrap();
    assert_eq!(cuda.source().as_deref(), Some(under(r, "/usr/local/cuda-10.2").as_path()));
    assert!(cuda.options().as_ref().unwrap().contains(&"ro".to_string()));
}

#[test]
fn csv_without_live_nodes_is_an_error_and_auto_falls_back_to_nvidia_runtime() {
    // The fixture's /dev holds placeholder files only: no node the CSV lists is a device.
    let root = copy_fixture("nano-jp461");
    let r = root.path();
    let err = gpu_plan(r, GpuMode::Csv).unwrap_err();
    assert!(matches!(err, GpuError::CsvNoDevices { listed: 24, .. }), "{err:?}");
    assert!(err.to_string().contains("nvgpu"), "{err}");
    let plan = gpu_plan(r, GpuMode::Auto).unwrap();
    let GpuMethod::NvidiaRuntime { runtime_path, env } = &plan.method else { panic!("{plan:?}") };
    assert_eq!(runtime_path, &under(r, "/usr/bin/nvidia-container-runtime"));
    assert_eq!(env, &["NVIDIA_VISIBLE_DEVICES=all"]);
    let modes: Vec<_> = plan.skipped.iter().map(|s| s.mode).collect();
    assert_eq!(modes, [GpuMode::Cdi, GpuMode::Csv]);
}

// ---- nvidia-runtime, off, nothing ---------------------------------------------------------------------------

#[test]
fn nvidia_runtime_mode_hands_over_the_runtime_and_visible_devices() {
    let root = copy_fixture("orin-nx-jp512");
    let r = root.path();
    let plan = gpu_plan(r, GpuMode::NvidiaRuntime).unwrap();
    let mut run = RunSpec::default();
    assert_eq!(apply(&plan, &mut run), Some(under(r, "/usr/bin/nvidia-container-runtime")));
    assert_eq!(run.env, ["NVIDIA_VISIBLE_DEVICES=all"]);
    assert!(run.devices.is_empty() && run.mounts.is_empty(), "the runtime injects the GPU itself");
    let zero = gpu::plan_gpu(r, GpuMode::NvidiaRuntime, &GpuRequest::parse("0").unwrap()).unwrap();
    assert!(matches!(&zero.method, GpuMethod::NvidiaRuntime { env, .. } if env == &["NVIDIA_VISIBLE_DEVICES=0"]));
    let x86 = copy_fixture("generic-x86");
    let err = gpu_plan(x86.path(), GpuMode::NvidiaRuntime).unwrap_err();
    assert!(err.to_string().contains("apt install nvidia-container-toolkit"), "{err}");
}

#[test]
fn off_mode_gives_nothing_even_on_a_jetson() {
    let root = orin_with_cdi();
    let plan = gpu_plan(root.path(), GpuMode::Off).unwrap();
    assert_eq!(plan.method, GpuMethod::Off);
    let mut run = RunSpec::default();
    assert_eq!(apply(&plan, &mut run), None);
    assert_eq!(run, RunSpec::default());
}

#[test]
fn auto_with_nothing_installed_says_what_is_missing_and_how_to_fix_it() {
    let root = copy_fixture("generic-x86");
    let err = gpu_plan(root.path(), GpuMode::Auto).unwrap_err();
    let GpuError::NothingFits { tried } = &err else { panic!("{err:?}") };
    let modes: Vec<_> = tried.iter().map(|s| s.mode).collect();
    assert_eq!(modes, [GpuMode::Cdi, GpuMode::Csv, GpuMode::NvidiaRuntime]);
    let msg = err.to_string();
    for part in [
        "- cdi: no CDI spec in /etc/cdi or /var/run/cdi",
        "- csv: no Jetson CSV files in /etc/nvidia-container-runtime/host-files-for-container.d",
        "- nvidia-runtime: nvidia-container-runtime is not installed",
        "sudo nvidia-ctk cdi generate --mode=csv --output=/etc/cdi/nvidia.yaml",
        "gpu.mode = \"off\"",
    ] {
        assert!(msg.contains(part), "{msg}\nlacks {part}");
    }
}

// ---- cameras ------------------------------------------------------------------------------------------------

/// The Orin Nano fixture with its four video nodes made (81:0..3, as sysfs says).
fn orin_with_cameras() -> tempfile::TempDir {
    let root = copy_fixture("orin-nano-super-jp62");
    for n in 0..4 {
        mknod(root.path(), &format!("/dev/video{n}"), 81, n);
    }
    root
}

fn resolve(root: &Path, selectors: &[&str]) -> Result<Vec<DeviceNode>, CameraError> {
    let mut warnings = Vec::new();
    let cams = cameras::discover(root, &mut warnings);
    cameras::resolve(&cams, root, &selectors.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

fn summary(nodes: &[DeviceNode]) -> Vec<(String, i64, i64, String)> {
    nodes.iter().map(|n| (n.path.display().to_string(), n.major, n.minor, n.access.clone())).collect()
}

fn video(n: i64) -> (String, i64, i64, String) {
    (format!("/dev/video{n}"), 81, n, "rwm".into())
}

#[test]
fn cameras_map_by_all_path_by_id_and_name_with_their_metadata_nodes() {
    let root = orin_with_cameras();
    let r = root.path();
    assert_eq!(summary(&resolve(r, &["all"]).unwrap()), [video(0), video(1), video(2), video(3)]);
    assert_eq!(summary(&resolve(r, &["/dev/video2"]).unwrap()), [video(2), video(3)], "capture + metadata");
    assert_eq!(
        summary(&resolve(r, &["/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920_A1B2C3D4-video-index0"]).unwrap()),
        [video(0), video(1)]
    );
    assert_eq!(
        summary(&resolve(r, &["usb-Sonix_Technology_Co.__Ltd._USB_2.0_Camera_SN0001-video-index0"]).unwrap()),
        [video(2), video(3)],
        "a bare by-id name"
    );
    assert_eq!(summary(&resolve(r, &["c920"]).unwrap()), [video(0), video(1)], "a name substring");
    assert_eq!(summary(&resolve(r, &["/dev/video3", "c920"]).unwrap()), [video(0), video(1), video(2), video(3)]);
    let nodes = resolve(r, &["/dev/video0"]).unwrap();
    assert_eq!(nodes[0].file_mode, Some(0o660), "mode of the live node");

    // Into the OCI spec: nodes and their allow rules.
    let mut run = RunSpec::default();
    spec::inject(&mut run, &DeviceEdits { devices: nodes.clone(), ..Default::default() });
    let s = oci(r, &run);
    assert_eq!(
        oci_devices(&s),
        [
            ("/dev/video0".into(), LinuxDeviceType::C, 81, 0, Some(0o660)),
            ("/dev/video1".into(), LinuxDeviceType::C, 81, 1, Some(0o660))
        ]
    );
    assert!(oci_rules(&s).contains(&(true, Some(81), Some(1), "rwm".into())));
}

#[test]
fn missing_camera_is_waiting_for_device_until_its_node_appears() {
    let root = copy_fixture("orin-nx-jp512");
    let r = root.path();
    mknod(r, "/dev/video0", 81, 0);
    let err = resolve(r, &["/dev/video1"]).unwrap_err();
    assert!(matches!(&err, CameraError::Missing { selector } if selector == "/dev/video1"), "{err:?}");
    assert!(err.to_string().contains("waits"), "{err}");
    assert!(matches!(resolve(r, &["usb webcam"]), Err(CameraError::Missing { .. })));

    // A USB camera is plugged in: the kernel adds its sysfs entry, udev makes the node.
    let dev = "sys/devices/platform/bus@0/3610000.usb/usb1/1-1/1-1:1.0";
    let sys = r.join(dev).join("video4linux/video1");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::write(sys.join("name"), "USB webcam\n").unwrap();
    std::fs::write(sys.join("index"), "0\n").unwrap();
    std::fs::write(sys.join("dev"), "81:1\n").unwrap();
    symlink("../..", sys.join("device")).unwrap();
    symlink(
        format!("../../{}", dev.trim_start_matches("sys/")) + "/video4linux/video1",
        r.join("sys/class/video4linux/video1"),
    )
    .unwrap();
    assert!(matches!(resolve(r, &["/dev/video1"]), Err(CameraError::Missing { .. })), "no node yet");
    mknod(r, "/dev/video1", 81, 1);
    assert_eq!(summary(&resolve(r, &["/dev/video1"]).unwrap()), [video(1)]);
    assert_eq!(summary(&resolve(r, &["usb webcam"]).unwrap()), [video(1)]);
    assert_eq!(summary(&resolve(r, &["all"]).unwrap()), [video(0), video(1)]);

    let none = copy_fixture("generic-x86");
    assert!(matches!(resolve(none.path(), &["all"]), Err(CameraError::Missing { selector }) if selector == "all"));
}

#[test]
fn camera_placeholder_file_is_not_a_device() {
    let root = copy_fixture("orin-nx-jp512");
    let err = resolve(root.path(), &["all"]).unwrap_err();
    assert!(matches!(&err, CameraError::NotDevice { node, .. } if node == Path::new("/dev/video0")), "{err:?}");
}

#[test]
fn csi_camera_with_the_gpu_gets_the_argus_socket() {
    let root = copy_fixture("orin-nx-jp512");
    let r = root.path();
    let sel = vec!["all".to_string()];
    assert_eq!(cameras::argus_mount(r, true, &sel), None, "no nvargus-daemon socket on the host");
    std::fs::create_dir_all(r.join("tmp")).unwrap();
    let _daemon = std::os::unix::net::UnixListener::bind(r.join("tmp/argus_socket")).unwrap();
    let want = BindMount { host: r.join("tmp/argus_socket"), container: "/tmp/argus_socket".into(), read_only: false };
    assert_eq!(cameras::argus_mount(r, true, &sel), Some(want.clone()));
    assert_eq!(cameras::argus_mount(r, false, &sel), None, "argus needs the GPU's libraries");
    assert_eq!(cameras::argus_mount(r, true, &[]), None, "no cameras asked for");

    let mut run = RunSpec::default();
    run.mounts.extend(cameras::argus_mount(r, true, &sel));
    let s = oci(r, &run);
    let m = oci_mount(&s, "/tmp/argus_socket").unwrap();
    assert_eq!(m.source().as_deref(), Some(want.host.as_path()));
}

#[test]
fn csv_ldcache_hook_runs_the_images_ldconfig_inside_the_rootfs() {
    // The hook as the CSV plan builds it, run the way runc runs createContainer hooks: cwd = the container's
    // root file system, with the GPU libraries mounted in it. Debian's ldconfig is static, so it can stand in
    // for an image's.
    let ldconfig = support::require_tool("ldconfig", "libc-bin");
    support::require_tool("chroot", "coreutils");
    let host = copy_fixture("orin-nx-jp512");
    mknod(host.path(), "/dev/nvmap", 10, 125);
    install_csv_files(host.path(), &[]);
    let plan = gpu_plan(host.path(), GpuMode::Csv).unwrap();
    let hook = plan.edits().unwrap().hooks[0].clone();

    let run_hook = |rootfs: &Path| {
        let out = std::process::Command::new(&hook.path)
            .args(&hook.args)
            .env_clear()
            .envs(hook.env.iter().map(|e| e.split_once('=').unwrap()))
            .current_dir(rootfs)
            .output()
            .unwrap();
        assert!(out.status.success(), "hook failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    std::fs::create_dir_all(r.join("sbin")).unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join(TEGRA_LIBS.trim_start_matches('/'))).unwrap();
    // A real shared object with a soname stands in for libcuda (the fixture's are placeholders).
    let real_lib = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib/x86_64-linux-gnu"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten())
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("libz.so.1."))
        .expect("libz (package zlib1g) is needed by this test");
    let name = real_lib.file_name().unwrap();
    std::fs::copy(&real_lib, r.join(TEGRA_LIBS.trim_start_matches('/')).join(name)).unwrap();

    run_hook(r);
    assert!(!r.join("etc/ld.so.cache").exists(), "an image without ldconfig is left alone");

    std::fs::copy(&ldconfig, r.join("sbin/ldconfig")).unwrap();
    run_hook(r);
    let cache = std::fs::read(r.join("etc/ld.so.cache")).unwrap();
    let want = format!("{TEGRA_LIBS}/libz.so.1");
    assert!(cache.windows(want.len()).any(|w| w == want.as_bytes()), "{want} not in the image's ld.so.cache");
}

#[test]
fn csv_device_symlinks_are_followed_inside_the_host_root() {
    // udev makes /dev/v4l2-nvdec a link to the nvhost node; an absolute target names a path on the host, which
    // lives under the host root here (as it does for an agent that sees the host on /host).
    let root = copy_fixture("agx-orin-jp60");
    let r = root.path();
    mknod(r, "/dev/nvhost-nvdec", 486, 0);
    symlink("/dev/nvhost-nvdec", under(r, "/dev/v4l2-nvdec")).unwrap();
    symlink("nvhost-nvdec", under(r, "/dev/v4l2-nvenc")).unwrap();
    symlink("/dev/gone", under(r, "/dev/nvsciipc")).unwrap();
    let entries = csv::parse("dev, /dev/v4l2-nvdec\ndev, /dev/v4l2-nvenc\ndev, /dev/nvsciipc\n").entries;
    let mut warnings = Vec::new();
    let edits = gpu::csv_edits(r, &entries, &mut warnings);
    assert_eq!(edits.devices, [node("/dev/v4l2-nvdec", 486, 0), node("/dev/v4l2-nvenc", 486, 0)]);
    assert!(warnings[0].contains("(1;") && warnings[0].ends_with("/dev/nvsciipc"), "{warnings:?}");
}
