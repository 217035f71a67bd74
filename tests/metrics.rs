//! The metrics sampler against fixture host trees (built from docs in /work/shared/jetson-facts.md): exact values
//! for every host through the library and through `jetship metrics --json`, rates between two samples, broken
//! inputs, rediscovery after a hwmon renumbering, and `--watch`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jetship::host::metrics::{
    Cpu, CpuCore, Emc, Engine, EngineClock, Fan, Gpu, HwmonTemp, Memory, NetIf, PowerMode, PowerRail, PowerTotal,
    Sample, Sampler, Swap, ThermalZone,
};

const KIB: u64 = 1024;
const MHZ: u64 = 1_000_000;

fn zone(name: &str, temp_c: Option<f64>) -> ThermalZone {
    ThermalZone { name: name.into(), temp_c, measures_temperature: true }
}

/// A zone that does not measure a temperature (PMIC-Die).
fn fixed_zone(name: &str, temp_c: f64) -> ThermalZone {
    ThermalZone { name: name.into(), temp_c: Some(temp_c), measures_temperature: false }
}

/// A rail on its first sample (the average is the power), without limits.
fn rail(name: &str, mv: u64, ma: u64, mw: u64) -> PowerRail {
    PowerRail {
        name: name.into(),
        voltage_mv: Some(mv),
        current_ma: Some(ma),
        power_mw: mw,
        avg_mw: mw,
        ..PowerRail::default()
    }
}

/// `rail` with its warning and critical current limits (mA) and alarm flags.
fn limited(mut r: PowerRail, warn: Option<u64>, crit: Option<u64>, alarms: Option<(bool, bool)>) -> PowerRail {
    r.warn_limit_ma = warn;
    r.crit_limit_ma = crit;
    r.warn_alarm = alarms.map(|a| a.0);
    r.crit_alarm = alarms.map(|a| a.1);
    r
}

fn total(mw: u64, source: &str) -> Option<PowerTotal> {
    Some(PowerTotal { power_mw: mw, avg_mw: mw, source: source.into() })
}

fn gpu(name: &str, load: Option<f64>, cur: u64, min: u64, max: u64) -> Gpu {
    Gpu {
        load_pct: load,
        cur_freq_hz: Some(cur),
        min_freq_hz: Some(min),
        max_freq_hz: Some(max),
        name: Some(name.into()),
        governor: Some("nvhost_podgov".into()),
        ..Gpu::default()
    }
}

/// An online core with its cpufreq values in kHz as sysfs has them: (cur, scaling min, scaling max, hw min, hw max).
fn core(id: u32, load: f64, governor: &str, khz: (Option<u64>, u64, u64, u64, u64)) -> CpuCore {
    CpuCore {
        id,
        online: true,
        load_pct: Some(load),
        governor: Some(governor.into()),
        cur_freq_hz: khz.0.map(|k| k * 1000),
        min_freq_hz: Some(khz.1 * 1000),
        max_freq_hz: Some(khz.2 * 1000),
        hw_min_freq_hz: Some(khz.3 * 1000),
        hw_max_freq_hz: Some(khz.4 * 1000),
    }
}

fn offline_core(id: u32) -> CpuCore {
    CpuCore { id, online: false, ..CpuCore::default() }
}

/// One engine clock: (on, rate, max, min) in Hz as read.
fn clock(name: &str, on: bool, rate: Option<u64>, max: Option<u64>, min: u64) -> EngineClock {
    EngineClock { name: name.into(), on: Some(on), rate_hz: rate, max_hz: max, min_hz: Some(min) }
}

fn engine(name: &str, clocks: Vec<EngineClock>) -> Engine {
    Engine { name: name.into(), on: clocks.iter().any(|c| c.on == Some(true)), clocks }
}

fn hwmon_temp(label: &str, temp: Option<f64>, max: Option<f64>, crit: Option<f64>, alarm: Option<bool>) -> HwmonTemp {
    HwmonTemp { device: "nvme".into(), label: label.into(), temp_c: temp, max_c: max, crit_c: crit, min_c: None, alarm }
}

fn netif(name: &str, rx: u64, tx: u64) -> NetIf {
    NetIf { name: name.into(), rx_bytes: rx, tx_bytes: tx, rx_bps: None, tx_bps: None }
}

/// Memory from /proc/meminfo's kB: `used_bytes` is total - available, `used_tegrastats_bytes` total - free -
/// buffers - cached; `nvmap` is `NvMapMemUsed`.
fn memory(total: u64, avail: u64, free: u64, buffers: u64, cached: u64, nvmap: Option<u64>) -> Option<Memory> {
    Some(Memory {
        total_bytes: total * KIB,
        available_bytes: avail * KIB,
        used_bytes: (total - avail) * KIB,
        used_tegrastats_bytes: Some((total - free - buffers - cached) * KIB),
        free_bytes: Some(free * KIB),
        buffers_bytes: Some(buffers * KIB),
        cached_bytes: Some(cached * KIB),
        gpu_shared_bytes: nvmap.map(|k| k * KIB),
    })
}

fn swap(total_kib: u64, free_kib: u64, cached_kib: u64) -> Option<Swap> {
    Some(Swap {
        total_bytes: total_kib * KIB,
        used_bytes: (total_kib - free_kib) * KIB,
        cached_bytes: Some(cached_kib * KIB),
    })
}

/// A sample with the fields that depend on the moment (timestamp) or the real file system (disk) cleared.
fn comparable(s: &Sample) -> Sample {
    Sample { ts_ms: 0, disk: None, ..s.clone() }
}

/// Checks a first sample of `host` against `expected`, through the library and through the CLI.
fn check_host(host: &str, expected: Sample) {
    let state = tempfile::tempdir().unwrap();
    let mut sampler = Sampler::new(support::fixture_host(host), state.path().to_path_buf());
    let sample = sampler.sample();
    assert_eq!(comparable(&sample), expected, "library sample of {host}");
    let disk = sample.disk.as_ref().expect("disk of the state dir");
    assert_eq!(disk.path, state.path());
    assert!(disk.total_bytes > 0 && disk.available_bytes <= disk.total_bytes && disk.used_bytes <= disk.total_bytes);
    assert!(sample.ts_ms > 1_600_000_000_000, "ts_ms is unix milliseconds: {}", sample.ts_ms);

    let cli: Sample = serde_json::from_str(&run_cli(host, state.path(), &["--json"])).unwrap();
    assert_eq!(comparable(&cli), expected, "`jetship metrics --json` of {host}");
    assert_eq!(cli.disk.unwrap().path, state.path());
}

/// Runs `jetship metrics --root <fixture> ARGS` with a config whose state dir is `state`; returns stdout.
fn run_cli(host: &str, state: &Path, args: &[&str]) -> String {
    let config = state.join("agent.toml");
    std::fs::write(&config, format!("state_dir = {:?}\n", state.to_str().unwrap())).unwrap();
    let out = Command::new(support::jetship_bin())
        .arg("--config")
        .arg(&config)
        .args(["metrics", "--root"])
        .arg(support::fixture_host(host))
        .args(args)
        .env_remove("JETSHIP_STATE_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A writable copy of a fixture tree (symlinks kept), for tests that change files between samples.
fn copy_fixture(host: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let status =
        Command::new("cp").arg("-a").arg(support::fixture_host(host)).arg(dir.path().join("root")).status().unwrap();
    assert!(status.success());
    let root = dir.path().join("root");
    (dir, root)
}

#[test]
fn orin_nano_super_sample_has_every_metric() {
    let expected = Sample {
        cpu: Some(Cpu { total_pct: 24.17, per_core_pct: vec![15.0, 25.0, 10.0, 40.0, 5.0, 50.0] }),
        memory: memory(7802148, 3732480, 2147484, 81920, 1843200, None),
        swap: swap(3901056, 3659392, 0),
        net: vec![
            netif("enP8p1s0", 987654321, 123456789),
            netif("wlan0", 5000, 4000),
            netif("l4tbr0", 0, 0),
            netif("docker0", 2048, 4096),
        ],
        load: Some([0.52, 0.58, 0.59]),
        uptime_s: Some(12345.67),
        // No railgate/3D-scaling files and no debugfs GPC counters in this tree.
        gpu: Some(gpu("ga10b", Some(30.5), 612 * MHZ, 306 * MHZ, 1020 * MHZ)),
        thermal: vec![
            zone("cpu-thermal", Some(44.125)),
            zone("gpu-thermal", Some(44.531)),
            zone("cv0-thermal", None),
            zone("cv1-thermal", None),
            zone("cv2-thermal", None),
            zone("soc0-thermal", Some(42.125)),
            zone("soc1-thermal", Some(43.156)),
            zone("soc2-thermal", Some(43.375)),
            zone("tj-thermal", Some(44.531)),
        ],
        // mW = mV * mA / 1000, truncated; the "sum of shunt voltages" channel 7 is not a rail.
        // The NVMe drive's hwmon has one unlabelled sensor and no thresholds.
        hwmon_temps: vec![HwmonTemp {
            device: "nvme".into(),
            label: "temp1".into(),
            temp_c: Some(38.85),
            ..HwmonTemp::default()
        }],
        power: vec![
            limited(rail("VDD_IN", 5064, 584, 2957), Some(4000), None, None),
            limited(rail("VDD_CPU_GPU_CV", 5064, 96, 486), Some(4000), None, None),
            limited(rail("VDD_SOC", 5064, 200, 1012), Some(4000), None, None),
        ],
        power_total: total(2957, "VDD_IN"),
        fan: Some(Fan { pwm: Some(77), rpm: Some(1529) }),
        power_mode: Some(PowerMode { id: 2, name: Some("MAXN_SUPER".into()) }),
        emc: Some(Emc { rate_hz: Some(204_000_000), load_pct: Some(20.0), ..Emc::default() }),
        // No per-core sysfs here, but the GPU's range (306-1020 MHz) is not pinned: off.
        jetson_clocks: Some(false),
        ..Sample::default()
    };
    assert_eq!(expected.input_power_mw(), Some(2957));
    assert_eq!(expected.hottest().unwrap().name, "tj-thermal");
    check_host("orin-nano-super-jp62", expected);
}

#[test]
fn agx_orin_sample_skips_nc_channels_and_has_no_tach_or_emc() {
    let expected = Sample {
        cpu: Some(Cpu {
            total_pct: 32.5,
            per_core_pct: vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 5.0, 15.0, 25.0, 35.0, 45.0, 55.0],
        }),
        memory: memory(65890912, 60817408, 52428800, 81920, 1843200, None),
        swap: swap(32945440, 32945440, 0),
        net: vec![netif("eth0", 5555555555, 4444444444), netif("docker0", 0, 0)],
        load: Some([3.10, 2.75, 2.50]),
        uptime_s: Some(86400.0),
        gpu: Some(gpu("ga10b", Some(0.0), 306 * MHZ, 306 * MHZ, 1_300_500_000)),
        thermal: vec![
            zone("cpu-thermal", Some(47.5)),
            zone("gpu-thermal", Some(46.0)),
            zone("cv0-thermal", None),
            zone("cv1-thermal", None),
            zone("cv2-thermal", None),
            zone("soc0-thermal", Some(45.25)),
            zone("soc1-thermal", Some(45.75)),
            zone("soc2-thermal", Some(44.0)),
            zone("tj-thermal", Some(47.5)),
        ],
        // Two INA3221 chips; the second has two NC channels.
        power: vec![
            limited(rail("VDD_GPU_SOC", 19008, 210, 3991), Some(4000), None, None),
            limited(rail("VDD_CPU_CV", 19008, 42, 798), Some(4000), None, None),
            limited(rail("VIN_SYS_5V0", 5000, 705, 3525), Some(4000), None, None),
            limited(rail("VDDQ_VDD2_1V8AO", 19008, 26, 494), Some(4000), None, None),
        ],
        // No VDD_IN: the total is the sum of the rails, marked so.
        power_total: total(3991 + 798 + 3525 + 494, "sum"),
        fan: Some(Fan { pwm: Some(0), rpm: None }),
        power_mode: Some(PowerMode { id: 0, name: Some("MAXN".into()) }),
        emc: None,
        jetson_clocks: Some(false),
        ..Sample::default()
    };
    assert_eq!(expected.input_power_mw(), None, "AGX Orin has no VDD_IN rail");
    assert_eq!(expected.total_power().unwrap().power_mw, 8808);
    check_host("agx-orin-jp60", expected);
}

#[test]
fn agx_orin_jp62_gives_every_field_of_its_expected_md() {
    // tests/fixtures/hosts/agx-orin-jp62/EXPECTED.md: two INA3221 without VDD_IN, cores 8-11 offline (their
    // policy answers EBUSY, stood in for by directories), engines, NvMap, GPC clocks; no warning at all.
    let (a, b) = (1_190_400, 729_600);
    let expected = Sample {
        cpu: Some(Cpu { total_pct: 25.2, per_core_pct: vec![15.63, 18.32, 21.05, 23.81, 26.6, 29.41, 32.26, 35.14] }),
        cpu_cores: vec![
            core(0, 15.63, "schedutil", (Some(a), 115_200, 1_728_000, 115_200, 2_201_600)),
            core(1, 18.32, "schedutil", (Some(a), 115_200, 1_728_000, 115_200, 2_201_600)),
            core(2, 21.05, "schedutil", (Some(a), 115_200, 1_728_000, 115_200, 2_201_600)),
            core(3, 23.81, "schedutil", (Some(a), 115_200, 1_728_000, 115_200, 2_201_600)),
            core(4, 26.6, "schedutil", (Some(b), 115_200, 1_728_000, 115_200, 2_201_600)),
            core(5, 29.41, "schedutil", (Some(b), 115_200, 1_728_000, 115_200, 2_201_600)),
            core(6, 32.26, "schedutil", (Some(b), 115_200, 1_728_000, 115_200, 2_201_600)),
            core(7, 35.14, "schedutil", (Some(b), 115_200, 1_728_000, 115_200, 2_201_600)),
            offline_core(8),
            offline_core(9),
            offline_core(10),
            offline_core(11),
        ],
        // tegrastats' used: 64335708 - 48719872 - 121344 - 7212032 = 8282460 kB; MemAvailable's: 8122204 kB.
        memory: memory(64335708, 56213504, 48719872, 121344, 7212032, Some(1843200)),
        swap: swap(32167852, 31643564, 0),
        net: vec![netif("eth0", 5555555555, 4444444444), netif("docker0", 0, 0)],
        load: Some([1.25, 1.10, 0.95]),
        uptime_s: Some(172800.0),
        gpu: Some(Gpu {
            railgate: Some(true),
            scaling_3d: Some(true),
            gpc_freq_hz: vec![306_000_000, 305_800_000],
            ..gpu("ga10b", Some(31.2), 306 * MHZ, 306 * MHZ, 612 * MHZ)
        }),
        thermal: vec![
            zone("cpu-thermal", Some(46.968)),
            zone("gpu-thermal", Some(45.406)),
            zone("cv0-thermal", None),
            zone("cv1-thermal", None),
            zone("cv2-thermal", None),
            zone("soc0-thermal", Some(44.687)),
            zone("soc1-thermal", Some(45.218)),
            zone("soc2-thermal", Some(44.375)),
            zone("tj-thermal", Some(47.156)),
        ],
        hwmon_temps: vec![],
        // 1-0041's NC channels and both sum channels are not rails; VDD_CPU_CV's warning alarm has latched.
        power: vec![
            limited(rail("VDD_GPU_SOC", 19160, 248, 4751), Some(6720), Some(8960), Some((false, false))),
            limited(rail("VDD_CPU_CV", 19160, 104, 1992), Some(5000), Some(8960), Some((true, false))),
            limited(rail("VIN_SYS_5V0", 4992, 682, 3404), Some(4000), Some(5440), Some((false, false))),
            limited(rail("VDDQ_VDD2_1V8AO", 19160, 44, 843), Some(4000), Some(5440), Some((false, false))),
        ],
        power_total: total(10990, "sum"),
        fan: Some(Fan { pwm: Some(78), rpm: Some(1520) }),
        power_mode: Some(PowerMode { id: 2, name: Some("30W".into()) }),
        emc: Some(Emc {
            rate_hz: Some(2_133_000_000),
            load_pct: Some(32.0),
            max_rate_hz: Some(3_199_000_000),
            min_rate_hz: Some(204_000_000),
        }),
        // `emc` and `uartb` are clocks of the same directory but no engines; APE's max is "no limit".
        engines: vec![
            engine("APE", vec![clock("ape", true, Some(200_000_000), None, 0)]),
            engine(
                "DLA0",
                vec![
                    clock("dla0_core", false, Some(0), Some(1_369_600_000), 0),
                    clock("dla0_falcon", false, Some(0), Some(793_600_000), 0),
                ],
            ),
            engine(
                "DLA1",
                vec![
                    clock("dla1_core", false, Some(0), Some(1_369_600_000), 0),
                    clock("dla1_falcon", false, Some(0), Some(793_600_000), 0),
                ],
            ),
            engine("NVDEC", vec![clock("nvdec", true, Some(704_000_000), Some(1_036_800_000), 115_200_000)]),
            engine("NVENC", vec![clock("nvenc", false, Some(0), Some(1_152_000_000), 115_200_000)]),
            engine(
                "NVJPG",
                vec![
                    clock("nvjpg", false, Some(0), Some(1_152_000_000), 115_200_000),
                    clock("nvjpg1", false, Some(0), Some(1_152_000_000), 115_200_000),
                ],
            ),
            engine("OFA", vec![clock("ofa", false, Some(0), Some(998_400_000), 115_200_000)]),
            engine(
                "PVA0",
                vec![
                    clock("pva0_cpu_axi", false, Some(0), Some(550_400_000), 0),
                    clock("pva0_vps", false, Some(0), Some(1_152_000_000), 0),
                ],
            ),
            engine("SE", vec![clock("se", true, Some(633_600_000), Some(787_200_000), 115_200_000)]),
            engine("VIC", vec![clock("vic", true, Some(729_600_000), Some(1_036_800_000), 115_200_000)]),
        ],
        jetson_clocks: Some(false),
        ..Sample::default()
    };
    assert_eq!(expected.hottest().map(|z| (z.name.as_str(), z.temp_c)), Some(("tj-thermal", Some(47.156))));
    assert_eq!(expected.input_power_mw(), None);
    check_host("agx-orin-jp62", expected);
}

#[test]
fn xavier_nx_jp513_gives_every_field_of_its_expected_md() {
    // tests/fixtures/hosts/xavier-nx-jp513/EXPECTED.md: PMIC-Die, NVMe sensors (one unreadable), jetson_clocks
    // on, garbage in one cpufreq attribute and an engine clock that cannot be read.
    let pinned = (1_420_800, 1_420_800, 115_200, 1_907_200);
    let c = |id, load, cur| core(id, load, "schedutil", (cur, pinned.0, pinned.1, pinned.2, pinned.3));
    let expected = Sample {
        cpu: Some(Cpu { total_pct: 43.22, per_core_pct: vec![39.2, 40.79, 42.41, 44.05, 45.71, 47.4] }),
        cpu_cores: vec![
            c(0, 39.2, Some(1_420_800)),
            c(1, 40.79, Some(1_420_800)),
            c(2, 42.41, Some(1_420_800)),
            c(3, 44.05, Some(1_420_800)),
            c(4, 45.71, None),
            c(5, 47.4, None),
        ],
        // tegrastats' used: 7001236 - 3014656 - 65536 - 1572864 = 2348180 kB; MemAvailable's: 2380948 kB.
        memory: memory(7001236, 4620288, 3014656, 65536, 1572864, Some(502156)),
        swap: swap(3500616, 3479112, 2048),
        net: vec![netif("eth0", 1000000, 200000), netif("wlan0", 0, 0)],
        load: Some([2.40, 2.10, 1.90]),
        uptime_s: Some(7200.0),
        gpu: Some(Gpu {
            railgate: Some(false),
            scaling_3d: Some(true),
            ..gpu("gv11b", Some(45.5), 1_109_250_000, 1_109_250_000, 1_109_250_000)
        }),
        thermal: vec![
            zone("CPU-therm", Some(44.5)),
            zone("GPU-therm", Some(43.0)),
            zone("AUX-therm", Some(42.5)),
            zone("AO-therm", Some(41.5)),
            fixed_zone("PMIC-Die", 100.0),
            zone("Tboard_tegra", Some(38.0)),
            zone("Tdiode_tegra", Some(39.25)),
            zone("thermal-fan-est", Some(43.4)),
        ],
        // -273150 and 65261850 m°C are the NVMe driver's "no threshold".
        hwmon_temps: vec![
            hwmon_temp("Composite", Some(41.85), Some(81.85), Some(84.85), Some(false)),
            hwmon_temp("Sensor 1", Some(41.85), None, None, None),
            hwmon_temp("Sensor 2", None, None, None, None),
        ],
        power: vec![
            limited(rail("VDD_IN", 5040, 1624, 8184), Some(4000), Some(5440), Some((false, false))),
            limited(rail("VDD_CPU_GPU_CV", 5040, 608, 3064), Some(3000), Some(4080), Some((false, false))),
            limited(rail("VDD_SOC", 5040, 296, 1491), Some(2000), None, Some((false, false))),
        ],
        // VDD_IN is the module's input; the other rails are part of it, so they are not added.
        power_total: total(8184, "VDD_IN"),
        fan: Some(Fan { pwm: Some(255), rpm: None }),
        power_mode: Some(PowerMode { id: 8, name: Some("MODE_20W_6CORE".into()) }),
        emc: Some(Emc {
            rate_hz: Some(1_866_000_000),
            load_pct: Some(22.5),
            max_rate_hz: Some(1_866_000_000),
            min_rate_hz: Some(204_000_000),
        }),
        engines: vec![
            engine("APE", vec![clock("ape", true, Some(150_000_000), Some(600_000_000), 0)]),
            engine("CVNAS", vec![clock("cvnas", false, Some(0), Some(1_356_800_000), 0)]),
            engine(
                "DLA0",
                vec![
                    clock("dla0_core", true, Some(1_100_800_000), Some(1_100_800_000), 0),
                    clock("dla0_falcon", true, Some(640_000_000), Some(640_000_000), 0),
                ],
            ),
            engine(
                "DLA1",
                vec![
                    clock("dla1_core", false, Some(0), Some(1_100_800_000), 0),
                    clock("dla1_falcon", false, Some(0), Some(640_000_000), 0),
                ],
            ),
            engine("NVDEC", vec![clock("nvdec", false, Some(0), Some(1_203_200_000), 0)]),
            engine("NVENC", vec![clock("nvenc", true, Some(1_075_200_000), Some(1_203_200_000), 0)]),
            engine("NVJPG", vec![clock("nvjpg", false, None, Some(819_200_000), 0)]),
            engine(
                "PVA0",
                vec![
                    clock("pva0_vps0", false, Some(0), Some(1_011_200_000), 0),
                    clock("pva0_vps1", false, Some(0), Some(1_011_200_000), 0),
                ],
            ),
            engine("VIC", vec![clock("vic", true, Some(1_036_800_000), Some(1_036_800_000), 0)]),
        ],
        jetson_clocks: Some(true),
        warnings: vec![
            "/sys/devices/system/cpu/cpufreq/policy4/scaling_cur_freq: expected a number, found `\\u{1}\\u{2}<unknown>`"
                .into(),
            "/sys/devices/platform/14160000.pcie/pci0004:00/0004:00:00.0/0004:01:00.0/hwmon/hwmon3/temp3_input: \
             cannot read: Is a directory (os error 21)"
                .into(),
            "/sys/kernel/debug/clk/nvjpg/clk_rate: cannot read: Is a directory (os error 21)".into(),
        ],
        ..Sample::default()
    };
    // PMIC-Die's 100 °C is never the hottest.
    assert_eq!(expected.hottest().map(|z| (z.name.as_str(), z.temp_c)), Some(("CPU-therm", Some(44.5))));
    check_host("xavier-nx-jp513", expected);
}

#[test]
fn orin_nx_jp5_sample_uses_the_gpu0_layout_and_unnamed_power_mode() {
    let expected = Sample {
        cpu: Some(Cpu { total_pct: 20.0, per_core_pct: vec![20.0; 8] }),
        memory: memory(15652708, 12582912, 10485760, 81920, 1843200, None),
        swap: swap(7826336, 7826336, 0),
        net: vec![netif("eth0", 1000000, 200000), netif("wlan0", 0, 0)],
        load: Some([1.0, 0.9, 0.8]),
        uptime_s: Some(3600.5),
        gpu: Some(gpu("ga10b", Some(99.9), 918 * MHZ, 306 * MHZ, 918 * MHZ)),
        thermal: vec![
            zone("CPU-therm", Some(50.0)),
            zone("GPU-therm", Some(51.5)),
            zone("CV0-therm", None),
            zone("CV1-therm", None),
            zone("CV2-therm", None),
            zone("SOC0-therm", Some(48.0)),
            zone("SOC1-therm", Some(48.5)),
            zone("SOC2-therm", Some(49.0)),
            zone("Tj-therm", Some(51.5)),
        ],
        power: vec![
            limited(rail("VDD_IN", 5000, 2000, 10000), Some(4000), None, None),
            limited(rail("VDD_CPU_GPU_CV", 5000, 1200, 6000), Some(4000), None, None),
            limited(rail("VDD_SOC", 5000, 300, 1500), Some(4000), None, None),
        ],
        power_total: total(10000, "VDD_IN"),
        fan: Some(Fan { pwm: Some(255), rpm: Some(5200) }),
        // No /etc/nvpmodel.conf in this fixture: the id alone.
        power_mode: Some(PowerMode { id: 0, name: None }),
        // EMC rate readable, no cactmon: no load.
        emc: Some(Emc { rate_hz: Some(3_199_000_000), load_pct: None, ..Emc::default() }),
        jetson_clocks: Some(false),
        ..Sample::default()
    };
    check_host("orin-nx-jp512", expected);
}

#[test]
fn nano_r32_sample_reads_iio_power_rails() {
    let expected = Sample {
        cpu: Some(Cpu { total_pct: 25.0, per_core_pct: vec![30.0, 10.0, 20.0, 40.0] }),
        memory: memory(4050112, 2097152, 1048576, 81920, 1843200, None),
        swap: swap(2025040, 1767424, 0),
        net: vec![netif("eth0", 300000, 100000), netif("l4tbr0", 0, 0), netif("dummy0", 0, 0)],
        load: Some([0.1, 0.2, 0.3]),
        uptime_s: Some(60.25),
        gpu: Some(gpu("gpu", Some(12.0), 76_800_000, 76_800_000, 921_600_000)),
        thermal: vec![
            zone("AO-therm", Some(38.5)),
            zone("CPU-therm", Some(40.0)),
            zone("GPU-therm", Some(38.0)),
            zone("PLL-therm", Some(37.5)),
            fixed_zone("PMIC-Die", 100.0),
            zone("thermal-fan-est", Some(39.1)),
        ],
        // R32's driver reports power itself (in_power{N}_input), not computed from mV*mA.
        power: vec![
            rail("POM_5V_IN", 5008, 498, 2492),
            rail("POM_5V_GPU", 4984, 8, 40),
            rail("POM_5V_CPU", 4976, 100, 498),
        ],
        power_total: total(2492, "POM_5V_IN"),
        fan: None,
        power_mode: Some(PowerMode { id: 0, name: Some("MAXN".into()) }),
        emc: None,
        jetson_clocks: Some(false),
        ..Sample::default()
    };
    assert_eq!(expected.input_power_mw(), Some(2492));
    assert_eq!(expected.hottest().unwrap().name, "CPU-therm", "PMIC-Die's fixed 100 °C is not the hottest");
    check_host("nano-jp461", expected);
}

#[test]
fn generic_x86_sample_has_no_jetson_metrics() {
    let expected = Sample {
        cpu: Some(Cpu { total_pct: 37.5, per_core_pct: (0..16).map(|i| i as f64 * 5.0).collect() }),
        memory: memory(16326412, 12582912, 8388608, 81920, 1843200, None),
        swap: swap(0, 0, 0),
        net: vec![netif("enp3s0", 123456789012, 98765432109)],
        load: Some([1.5, 1.25, 1.0]),
        uptime_s: Some(500000.99),
        thermal: vec![zone("x86_pkg_temp", Some(55.0))],
        hwmon_temps: vec![HwmonTemp {
            device: "coretemp".into(),
            label: "Package id 0".into(),
            temp_c: Some(55.0),
            ..HwmonTemp::default()
        }],
        // No Jetson GPU: no jetson_clocks to tell about.
        jetson_clocks: None,
        ..Sample::default()
    };
    assert_eq!(expected.gpu, None);
    assert!(expected.power.is_empty() && expected.fan.is_none() && expected.power_mode.is_none());
    assert!(expected.power_total.is_none() && expected.engines.is_empty() && expected.cpu_cores.is_empty());
    check_host("generic-x86", expected);
}

fn stat_line(label: &str, user: u64, system: u64, idle: u64) -> String {
    format!("{label} {user} 0 {system} {idle} 0 0 0 0 0 0\n")
}

#[test]
fn cpu_and_network_rates_come_from_the_counters_between_two_samples() {
    let (_dir, root) = copy_fixture("orin-nano-super-jp62");
    let state = tempfile::tempdir().unwrap();
    let mut sampler = Sampler::new(root.clone(), state.path().to_path_buf());
    let t0 = Instant::now();
    let first = sampler.sample_at(t0);
    assert!(first.net.iter().all(|n| n.rx_bps.is_none() && n.tx_bps.is_none()));

    // Second reading: each core 1000 more jiffies, of which busy: 100, 200, 300, 400, 500, 1000.
    let fixture_stat = std::fs::read_to_string(root.join("proc/stat")).unwrap();
    let mut cores = Vec::new();
    for line in fixture_stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")) {
        let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
        cores.push((f[0], f[2], f[3] + f[4]));
    }
    let busy = [100, 200, 300, 400, 500, 1000];
    let mut text = String::new();
    let (mut su, mut ss, mut si) = (0, 0, 0);
    let mut per = String::new();
    for (i, ((u, s, idle), b)) in cores.iter().zip(busy).enumerate() {
        let (u, s, idle) = (u + b, *s, idle + 1000 - b);
        per += &stat_line(&format!("cpu{i}"), u, s, idle);
        (su, ss, si) = (su + u, ss + s, si + idle);
    }
    text += &stat_line("cpu ", su, ss, si);
    text += &per;
    std::fs::write(root.join("proc/stat"), text).unwrap();

    // Network: +4000/+1000 bytes on enP8p1s0, wlan0 counters reset (went down), others unchanged.
    let net = std::fs::read_to_string(root.join("proc/net/dev"))
        .unwrap()
        .replace("987654321", "987658321")
        .replace("123456789", "123457789")
        .replace("  5000 ", "  1000 ");
    std::fs::write(root.join("proc/net/dev"), net).unwrap();

    let second = sampler.sample_at(t0 + Duration::from_secs(2));
    let cpu = second.cpu.unwrap();
    assert_eq!(cpu.per_core_pct, vec![10.0, 20.0, 30.0, 40.0, 50.0, 100.0]);
    assert_eq!(cpu.total_pct, 41.67, "2500 busy of 6000 jiffies");
    let rates: Vec<(&str, Option<f64>, Option<f64>)> =
        second.net.iter().map(|n| (n.name.as_str(), n.rx_bps, n.tx_bps)).collect();
    assert_eq!(
        rates,
        vec![
            ("enP8p1s0", Some(2000.0), Some(500.0)),
            ("wlan0", None, Some(0.0)),
            ("l4tbr0", Some(0.0), Some(0.0)),
            ("docker0", Some(0.0), Some(0.0)),
        ]
    );
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
}

#[test]
fn rates_divide_by_the_wall_time_between_samples() {
    let (_dir, root) = copy_fixture("generic-x86");
    let state = tempfile::tempdir().unwrap();
    let mut sampler = Sampler::new(root.clone(), state.path().to_path_buf());
    sampler.sample();
    let started = Instant::now();
    let net = std::fs::read_to_string(root.join("proc/net/dev")).unwrap().replace("123456789012", "123456799012");
    std::fs::write(root.join("proc/net/dev"), net).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let second = sampler.sample();
    let elapsed = started.elapsed().as_secs_f64();
    let rx = second.net[0].rx_bps.unwrap();
    // 10000 bytes over at least 200 ms (and at most the time measured around it).
    assert!(rx <= 50_000.0 && rx >= 10_000.0 / (elapsed + 0.05), "rx_bps {rx} over ~{elapsed} s");
}

#[test]
fn broken_inputs_give_partial_results_and_warnings_naming_the_files() {
    let state = tempfile::tempdir().unwrap();
    let mut sampler = Sampler::new(support::fixture_host("broken-metrics"), state.path().to_path_buf());
    let sample = sampler.sample();
    // policy0: scaling limits readable, no cpuinfo_* files, governor and current clock garbage.
    let policy0 = CpuCore { min_freq_hz: Some(115_200_000), max_freq_hz: Some(1_728_000_000), ..CpuCore::default() };
    let expected = Sample {
        // The truncated cpu1 line is dropped; the all-cores line and cpu0 still count.
        cpu: Some(Cpu {
            total_pct: 50.0,
            per_core_pct: vec![50.0],
        }),
        // Cores 0 and 1 share policy0, whose governor and current clock are garbage (one warning each); the
        // online list is garbage, so each core's own `online` decides: cpu0 has none (online), cpu2's is garbage
        // (warned, taken as online). cpu1's /proc/stat line is truncated: no load.
        cpu_cores: vec![
            CpuCore { id: 0, online: true, load_pct: Some(50.0), ..policy0.clone() },
            CpuCore { id: 1, online: true, load_pct: None, ..policy0 },
            CpuCore { id: 2, online: true, ..CpuCore::default() },
        ],
        // MemAvailable is garbage: MemFree + Buffers + Cached stands in; NvMapMemUsed is garbage: unknown.
        memory: memory(4000000, 2000000, 1000000, 100000, 900000, None),
        swap: None,
        net: vec![netif("eth0", 1000, 2000)],
        load: None,
        uptime_s: None,
        // railgate_enable holds `yes`: unknown, warned.
        gpu: Some(gpu("ga10b", None, 612 * MHZ, 306 * MHZ, 1020 * MHZ)),
        thermal: vec![
            zone("cpu-thermal", None),
            zone("thermal_zone1", Some(50.0)),
            zone("cv0-thermal", None),
        ],
        // The NVMe sensor's input is garbage; its -273150 minimum means "none".
        hwmon_temps: vec![HwmonTemp {
            device: "nvme".into(),
            label: "Composite".into(),
            crit_c: Some(84.85),
            ..HwmonTemp::default()
        }],
        // VDD_CPU_GPU_CV has a garbage voltage: no power for it; NC skipped. VDD_IN's curr1_crit is garbage.
        power: vec![limited(rail("VDD_IN", 5064, 584, 2957), Some(4000), None, None)],
        power_total: total(2957, "VDD_IN"),
        // The pwmfan hwmon has no `name`: it cannot be identified.
        fan: None,
        power_mode: None,
        emc: None,
        // nvenc's enable count is garbage (unknown, so the engine is not on); its max is "no limit"; `emc` is
        // no engine.
        engines: vec![engine(
            "NVENC",
            vec![EngineClock { name: "nvenc".into(), on: None, rate_hz: Some(0), max_hz: None, min_hz: Some(115_200_000) }],
        )],
        // The cores' limits are not pinned (115-1728 MHz), nor is the GPU's.
        jetson_clocks: Some(false),
        warnings: vec![
            "/proc/stat: `cpu1` is truncated (3 counters, at least 4 expected)".into(),
            "/proc/meminfo: `MemAvailable` is not a number: `lots`".into(),
            "/proc/meminfo: `NvMapMemUsed` is not a number: `many`".into(),
            "/proc/meminfo: `SwapTotal` or `SwapFree` missing".into(),
            "/proc/net/dev: `eth1` has missing or bad byte counters".into(),
            "/proc/loadavg: expected three load averages, found `high high high`".into(),
            "/proc/uptime: cannot read: No such file or directory (os error 2)".into(),
            "/sys/devices/system/cpu/online: expected a CPU list like 0-5, found `0-1,x`".into(),
            "/sys/devices/system/cpu/cpufreq/policy0/scaling_governor: expected a name, found `sched\\u{1}util`".into(),
            "/sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq: expected a number, found `fast`".into(),
            "/sys/devices/system/cpu/cpu2/online: expected a number, found `maybe`".into(),
            "/sys/devices/platform/bus@0/17000000.gpu/load: expected a number, found `busy`".into(),
            "/sys/devices/platform/bus@0/17000000.gpu/railgate_enable: expected a number, found `yes`".into(),
            "/sys/devices/virtual/thermal/thermal_zone0/temp: expected a number, found `hot`".into(),
            "/sys/devices/platform/bus@0/14100000.pcie/pci0001:00/0001:00:00.0/0001:01:00.0/hwmon/hwmon2/temp1_input: \
             expected a number, found `warm`"
                .into(),
            "/sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon/hwmon1/curr1_crit: expected a number, found `lots`"
                .into(),
            "/sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon/hwmon1/in2_input: expected a number, found `5.064V`"
                .into(),
            "/var/lib/nvpmodel/status: expected `pmode:NNNN`, found `pmode:zz`".into(),
            "/sys/kernel/debug/bpmp/debug/clk/emc/rate: expected a number, found `\\u{1}\\u{2}garbage`".into(),
            "/sys/kernel/debug/clk/nvenc/clk_enable_count: expected a number, found `on`".into(),
            "/sys/devices/virtual/thermal/thermal_zone1/type: cannot read: No such file or directory (os error 2); using `thermal_zone1`".into(),
            "/sys/devices/platform/pwm-fan/hwmon/hwmon0/name: cannot read: No such file or directory (os error 2); hwmon device skipped".into(),
        ],
        ..Sample::default()
    };
    assert_eq!(comparable(&sample), expected);
    // The text view lists the warnings too.
    let text = sample.to_text();
    assert!(text.contains("warning: /proc/loadavg: expected three load averages"), "{text}");
    // A second sample keeps giving the same partial result (nothing cached a failure as success).
    assert_eq!(comparable(&sampler.sample()).warnings, expected.warnings);
}

#[test]
fn power_rails_are_found_again_after_the_hwmon_device_is_renumbered() {
    let (_dir, root) = copy_fixture("orin-nano-super-jp62");
    let state = tempfile::tempdir().unwrap();
    let mut sampler = Sampler::new(root.clone(), state.path().to_path_buf());
    let before = sampler.sample();
    assert_eq!(before.power.len(), 3);

    // A driver reload: hwmon1 comes back as hwmon7.
    let devices = root.join("sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon");
    std::fs::rename(devices.join("hwmon1"), devices.join("hwmon7")).unwrap();
    std::fs::remove_file(root.join("sys/class/hwmon/hwmon1")).unwrap();
    std::os::unix::fs::symlink(
        "../../devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon/hwmon7",
        root.join("sys/class/hwmon/hwmon7"),
    )
    .unwrap();

    let during = sampler.sample();
    assert!(during.power.is_empty());
    assert!(during.warnings.iter().any(|w| w.contains("hwmon1/in1_input: cannot read")), "{:?}", during.warnings);
    let after = sampler.sample();
    assert_eq!(after.power, before.power);
    assert!(after.warnings.is_empty(), "{:?}", after.warnings);
}

#[test]
fn text_view_shows_every_subsystem_like_tegrastats() {
    let state = tempfile::tempdir().unwrap();
    let text = run_cli("orin-nano-super-jp62", state.path(), &[]);
    for line in [
        "cpu      24.2% [15%,25%,10%,40%,5%,50%]",
        "ram      used 3.88/7.44 GiB (52%, total - available)  tegrastats used 3.56 GiB  swap 0.23/3.72 GiB",
        "load     0.52 0.58 0.59  up 0d 3h 25m",
        "gpu      30.5% @ 612 MHz (306-1020 MHz) ga10b nvhost_podgov",
        "emc      20.0% @ 204 MHz",
        "temp     cpu@44.1C gpu@44.5C cv0@off cv1@off cv2@off soc0@42.1C soc1@43.2C soc2@43.4C tj@44.5C",
        "sensors  nvme temp1 38.9C",
        "power    VDD_IN 2957mW/2957mW VDD_CPU_GPU_CV 486mW/486mW VDD_SOC 1012mW/1012mW  total 2957mW/2957mW (VDD_IN)",
        "fan      pwm 77/255 (30%) 1529 rpm",
        "mode     2 MAXN_SUPER  jetson_clocks off",
        "net      enP8p1s0 rx - tx -",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains(&format!("disk     {}: ", state.path().display())), "{text}");
    assert!(!text.contains("warning"), "{text}");
}

#[test]
fn text_view_shows_cores_engines_sensors_and_the_total_where_the_tree_has_them() {
    let state = tempfile::tempdir().unwrap();
    let agx = run_cli("agx-orin-jp62", state.path(), &[]);
    for line in [
        "cores    0-3 1190MHz schedutil (115-1728 MHz), 4-7 729MHz schedutil (115-1728 MHz), 8-11 offline",
        "ram      used 7.75/61.36 GiB (13%, total - available)  tegrastats used 7.90 GiB  gpu nvmap 1.76 GiB  swap 0.50/30.68 GiB",
        "gpu      31.2% @ 306 MHz (306-612 MHz) ga10b nvhost_podgov railgate on 3d-scaling on gpc 306/305 MHz",
        "emc      32.0% @ 2133 MHz (max 3199 MHz)",
        "engines  APE 200MHz, NVDEC 704MHz, SE 633MHz, VIC 729MHz; off: DLA0 DLA1 NVENC NVJPG OFA PVA0",
        "power    VDD_GPU_SOC 4751mW/4751mW VDD_CPU_CV 1992mW/1992mW WARN VIN_SYS_5V0 3404mW/3404mW \
         VDDQ_VDD2_1V8AO 843mW/843mW  total 10990mW/10990mW (sum)",
        "mode     2 30W  jetson_clocks off",
    ] {
        assert!(agx.lines().any(|l| l == line), "missing `{line}` in:\n{agx}");
    }
    let xavier = run_cli("xavier-nx-jp513", state.path(), &[]);
    for line in [
        "cores    0-3 1420MHz schedutil (1420-1420 MHz), 4-5 ?MHz schedutil (1420-1420 MHz)",
        "temp     CPU@44.5C GPU@43.0C AUX@42.5C AO@41.5C PMIC-Die@100.0C(fixed) Tboard_tegra@38.0C Tdiode_tegra@39.2C \
         thermal-fan-est@43.4C",
        "sensors  nvme Composite 41.9C, nvme Sensor 1 41.9C, nvme Sensor 2 ?",
        "power    VDD_IN 8184mW/8184mW VDD_CPU_GPU_CV 3064mW/3064mW VDD_SOC 1491mW/1491mW  total 8184mW/8184mW (VDD_IN)",
        "mode     8 MODE_20W_6CORE  jetson_clocks on",
    ] {
        assert!(xavier.lines().any(|l| l == line), "missing `{line}` in:\n{xavier}");
    }
}

#[test]
fn power_averages_are_the_mean_since_the_sampler_started() {
    let (_dir, root) = copy_fixture("agx-orin-jp62");
    let state = tempfile::tempdir().unwrap();
    let mut sampler = Sampler::new(root.clone(), state.path().to_path_buf());
    let first = sampler.sample();
    assert_eq!(first.power_total.as_ref().map(|t| (t.power_mw, t.avg_mw)), Some((10990, 10990)));
    // VDD_GPU_SOC's current doubles (248 -> 496 mA): 9503 mW now, (4751 + 9503) / 2 = 7127 mW on average.
    let curr = root.join("sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon/hwmon1/curr1_input");
    std::fs::write(&curr, "496\n").unwrap();
    let second = sampler.sample();
    let gpu_soc = &second.power[0];
    assert_eq!((gpu_soc.name.as_str(), gpu_soc.power_mw, gpu_soc.avg_mw), ("VDD_GPU_SOC", 9503, 7127));
    assert_eq!(second.power[1].avg_mw, 1992, "an unchanged rail keeps its average");
    let t = second.power_total.unwrap();
    assert_eq!((t.power_mw, t.avg_mw, t.source.as_str()), (9503 + 1992 + 3404 + 843, 7127 + 1992 + 3404 + 843, "sum"));
    // A third reading back at 248 mA: (4751 + 9503 + 4751) / 3 = 6335.
    std::fs::write(&curr, "248\n").unwrap();
    assert_eq!(sampler.sample().power[0].avg_mw, 6335);
}

#[test]
fn jetson_clocks_is_told_from_the_pinned_limits() {
    // Pinning every online core and the GPU of agx-orin-jp62 (the EMC still below its max) is not enough;
    // pinning the EMC too is. Offline cores 8-11 take no part.
    let (_dir, root) = copy_fixture("agx-orin-jp62");
    let state = tempfile::tempdir().unwrap();
    let mut sampler = Sampler::new(root.clone(), state.path().to_path_buf());
    assert_eq!(sampler.sample().jetson_clocks, Some(false));
    for policy in ["policy0", "policy4"] {
        let dir = root.join("sys/devices/system/cpu/cpufreq").join(policy);
        std::fs::write(dir.join("scaling_min_freq"), "1728000\n").unwrap();
    }
    let devfreq = root.join("sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu");
    std::fs::write(devfreq.join("min_freq"), "612000000\n").unwrap();
    assert_eq!(sampler.sample().jetson_clocks, Some(false), "the EMC runs at 2133 of 3199 MHz");
    let emc = root.join("sys/kernel/debug/bpmp/debug/clk/emc");
    std::fs::write(emc.join("rate"), "3199000000\n").unwrap();
    let on = sampler.sample();
    assert_eq!(on.jetson_clocks, Some(true));
    assert!(on.warnings.is_empty(), "{:?}", on.warnings);
    // A core whose limits cannot be read makes it unknown, not on.
    std::fs::write(root.join("sys/devices/system/cpu/cpufreq/policy4/scaling_max_freq"), "?\n").unwrap();
    assert_eq!(sampler.sample().jetson_clocks, None);
}

/// Kills the child when dropped, so a failed assertion leaves no process behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watch_prints_one_json_line_per_interval() {
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("agent.toml");
    std::fs::write(&config, format!("state_dir = {:?}\n", state.path().to_str().unwrap())).unwrap();
    let mut child = KillOnDrop(
        Command::new(support::jetship_bin())
            .arg("--config")
            .arg(&config)
            .args(["metrics", "--json", "--watch", "0.2", "--root"])
            .arg(support::fixture_host("orin-nano-super-jp62"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first: Sample = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let second: Sample = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let third: Sample = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert!(child.0.try_wait().unwrap().is_none(), "--watch keeps running");
    assert!(second.ts_ms >= first.ts_ms + 150 && third.ts_ms >= second.ts_ms + 150);
    assert_eq!(first.net[0].rx_bps, None);
    // Later samples have rates (the fixture's counters do not move) and CPU over the interval.
    assert_eq!(second.net[0].rx_bps, Some(0.0));
    assert_eq!(third.cpu.unwrap().total_pct, 0.0);
    assert_eq!(comparable(&second).power, first.power);
}

#[test]
fn a_missing_root_gives_warnings_and_no_panic() {
    let state = tempfile::tempdir().unwrap();
    let root = state.path().join("no-such-root");
    let sample = Sampler::new(root, state.path().to_path_buf()).sample();
    assert!(sample.cpu.is_none() && sample.memory.is_none() && sample.load.is_none() && sample.uptime_s.is_none());
    assert!(sample.gpu.is_none() && sample.thermal.is_empty() && sample.power.is_empty());
    let files: Vec<&str> = sample.warnings.iter().map(|w| w.split(':').next().unwrap()).collect();
    assert_eq!(files, ["/proc/stat", "/proc/meminfo", "/proc/net/dev", "/proc/loadavg", "/proc/uptime"]);
}

#[test]
fn disk_measures_the_nearest_existing_ancestor_of_a_missing_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("not/yet/created");
    let sample = Sampler::new(support::fixture_host("generic-x86"), state).sample();
    let disk = sample.disk.unwrap();
    assert_eq!(disk.path, dir.path());
    assert!(disk.total_bytes > 0);
}

#[test]
fn json_field_names_are_all_documented() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md")).unwrap();
    let mut keys = Vec::new();
    for host in ["orin-nano-super-jp62", "agx-orin-jp62", "xavier-nx-jp513"] {
        let state = tempfile::tempdir().unwrap();
        let v: serde_json::Value = serde_json::from_str(&run_cli(host, state.path(), &["--json"])).unwrap();
        collect_keys(&v, "", &mut keys);
    }
    keys.sort();
    keys.dedup();
    assert!(keys.len() > 80, "{keys:?}");
    let missing: Vec<_> = keys.iter().filter(|k| !doc.contains(&format!("`{k}`"))).collect();
    assert!(missing.is_empty(), "docs/metrics.md does not document {missing:?}");
}

/// Dotted key paths of a JSON value; array elements add `[]`.
fn collect_keys(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.push(path.clone());
                collect_keys(v, &path, out);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                collect_keys(v, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}
