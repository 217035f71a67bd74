//! The metrics sampler against fixture host trees (built from docs in /work/shared/jetson-facts.md): exact values
//! for every host through the library and through `jetship metrics --json`, rates between two samples, broken
//! inputs, rediscovery after a hwmon renumbering, and `--watch`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jetship::host::metrics::{
    Cpu, Emc, Fan, Gpu, Memory, NetIf, PowerMode, PowerRail, Sample, Sampler, Swap, ThermalZone,
};

const KIB: u64 = 1024;

fn zone(name: &str, temp_c: Option<f64>) -> ThermalZone {
    ThermalZone { name: name.into(), temp_c }
}

fn rail(name: &str, mv: u64, ma: u64, mw: u64) -> PowerRail {
    PowerRail { name: name.into(), voltage_mv: Some(mv), current_ma: Some(ma), power_mw: mw }
}

fn netif(name: &str, rx: u64, tx: u64) -> NetIf {
    NetIf { name: name.into(), rx_bytes: rx, tx_bytes: tx, rx_bps: None, tx_bps: None }
}

fn memory(total_kib: u64, avail_kib: u64) -> Option<Memory> {
    Some(Memory {
        total_bytes: total_kib * KIB,
        available_bytes: avail_kib * KIB,
        used_bytes: (total_kib - avail_kib) * KIB,
    })
}

fn swap(total_kib: u64, free_kib: u64) -> Option<Swap> {
    Some(Swap { total_bytes: total_kib * KIB, used_bytes: (total_kib - free_kib) * KIB })
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
        memory: memory(7802148, 3732480),
        swap: swap(3901056, 3659392),
        net: vec![
            netif("enP8p1s0", 987654321, 123456789),
            netif("wlan0", 5000, 4000),
            netif("l4tbr0", 0, 0),
            netif("docker0", 2048, 4096),
        ],
        load: Some([0.52, 0.58, 0.59]),
        uptime_s: Some(12345.67),
        gpu: Some(Gpu {
            load_pct: Some(30.5),
            cur_freq_hz: Some(612_000_000),
            min_freq_hz: Some(306_000_000),
            max_freq_hz: Some(1_020_000_000),
        }),
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
        power: vec![
            rail("VDD_IN", 5064, 584, 2957),
            rail("VDD_CPU_GPU_CV", 5064, 96, 486),
            rail("VDD_SOC", 5064, 200, 1012),
        ],
        fan: Some(Fan { pwm: Some(77), rpm: Some(1529) }),
        power_mode: Some(PowerMode { id: 2, name: Some("MAXN_SUPER".into()) }),
        emc: Some(Emc { rate_hz: Some(204_000_000), load_pct: Some(20.0) }),
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
        memory: memory(65890912, 60817408),
        swap: swap(32945440, 32945440),
        net: vec![netif("eth0", 5555555555, 4444444444), netif("docker0", 0, 0)],
        load: Some([3.10, 2.75, 2.50]),
        uptime_s: Some(86400.0),
        gpu: Some(Gpu {
            load_pct: Some(0.0),
            cur_freq_hz: Some(306_000_000),
            min_freq_hz: Some(306_000_000),
            max_freq_hz: Some(1_300_500_000),
        }),
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
            rail("VDD_GPU_SOC", 19008, 210, 3991),
            rail("VDD_CPU_CV", 19008, 42, 798),
            rail("VIN_SYS_5V0", 5000, 705, 3525),
            rail("VDDQ_VDD2_1V8AO", 19008, 26, 494),
        ],
        fan: Some(Fan { pwm: Some(0), rpm: None }),
        power_mode: Some(PowerMode { id: 0, name: Some("MAXN".into()) }),
        emc: None,
        ..Sample::default()
    };
    assert_eq!(expected.input_power_mw(), None, "AGX Orin has no VDD_IN rail");
    check_host("agx-orin-jp60", expected);
}

#[test]
fn agx_orin_jp62_with_offline_cores_gives_todays_fields_without_warnings() {
    // Cores 8-11 are offline: /proc/stat lists cores 0-7 only. The fields issue 14 adds are in the tree's EXPECTED.md.
    let expected = Sample {
        cpu: Some(Cpu { total_pct: 25.2, per_core_pct: vec![15.63, 18.32, 21.05, 23.81, 26.6, 29.41, 32.26, 35.14] }),
        memory: memory(64335708, 56213504),
        swap: swap(32167852, 31643564),
        net: vec![netif("eth0", 5555555555, 4444444444), netif("docker0", 0, 0)],
        load: Some([1.25, 1.10, 0.95]),
        uptime_s: Some(172800.0),
        gpu: Some(Gpu {
            load_pct: Some(31.2),
            cur_freq_hz: Some(306_000_000),
            min_freq_hz: Some(306_000_000),
            max_freq_hz: Some(612_000_000),
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
        power: vec![
            rail("VDD_GPU_SOC", 19160, 248, 4751),
            rail("VDD_CPU_CV", 19160, 104, 1992),
            rail("VIN_SYS_5V0", 4992, 682, 3404),
            rail("VDDQ_VDD2_1V8AO", 19160, 44, 843),
        ],
        fan: Some(Fan { pwm: Some(78), rpm: Some(1520) }),
        power_mode: Some(PowerMode { id: 2, name: Some("30W".into()) }),
        emc: Some(Emc { rate_hz: Some(2_133_000_000), load_pct: Some(32.0) }),
        ..Sample::default()
    };
    check_host("agx-orin-jp62", expected);
}

#[test]
fn xavier_nx_jp513_gives_todays_fields_without_warnings() {
    let expected = Sample {
        cpu: Some(Cpu { total_pct: 43.22, per_core_pct: vec![39.2, 40.79, 42.41, 44.05, 45.71, 47.4] }),
        memory: memory(7001236, 4620288),
        swap: swap(3500616, 3479112),
        net: vec![netif("eth0", 1000000, 200000), netif("wlan0", 0, 0)],
        load: Some([2.40, 2.10, 1.90]),
        uptime_s: Some(7200.0),
        gpu: Some(Gpu {
            load_pct: Some(45.5),
            cur_freq_hz: Some(1_109_250_000),
            min_freq_hz: Some(1_109_250_000),
            max_freq_hz: Some(1_109_250_000),
        }),
        thermal: vec![
            zone("CPU-therm", Some(44.5)),
            zone("GPU-therm", Some(43.0)),
            zone("AUX-therm", Some(42.5)),
            zone("AO-therm", Some(41.5)),
            zone("PMIC-Die", Some(100.0)),
            zone("Tboard_tegra", Some(38.0)),
            zone("Tdiode_tegra", Some(39.25)),
            zone("thermal-fan-est", Some(43.4)),
        ],
        power: vec![
            rail("VDD_IN", 5040, 1624, 8184),
            rail("VDD_CPU_GPU_CV", 5040, 608, 3064),
            rail("VDD_SOC", 5040, 296, 1491),
        ],
        fan: Some(Fan { pwm: Some(255), rpm: None }),
        power_mode: Some(PowerMode { id: 8, name: Some("MODE_20W_6CORE".into()) }),
        emc: Some(Emc { rate_hz: Some(1_866_000_000), load_pct: Some(22.5) }),
        ..Sample::default()
    };
    check_host("xavier-nx-jp513", expected);
}

#[test]
fn orin_nx_jp5_sample_uses_the_gpu0_layout_and_unnamed_power_mode() {
    let expected = Sample {
        cpu: Some(Cpu { total_pct: 20.0, per_core_pct: vec![20.0; 8] }),
        memory: memory(15652708, 12582912),
        swap: swap(7826336, 7826336),
        net: vec![netif("eth0", 1000000, 200000), netif("wlan0", 0, 0)],
        load: Some([1.0, 0.9, 0.8]),
        uptime_s: Some(3600.5),
        gpu: Some(Gpu {
            load_pct: Some(99.9),
            cur_freq_hz: Some(918_000_000),
            min_freq_hz: Some(306_000_000),
            max_freq_hz: Some(918_000_000),
        }),
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
            rail("VDD_IN", 5000, 2000, 10000),
            rail("VDD_CPU_GPU_CV", 5000, 1200, 6000),
            rail("VDD_SOC", 5000, 300, 1500),
        ],
        fan: Some(Fan { pwm: Some(255), rpm: Some(5200) }),
        // No /etc/nvpmodel.conf in this fixture: the id alone.
        power_mode: Some(PowerMode { id: 0, name: None }),
        // EMC rate readable, no cactmon: no load.
        emc: Some(Emc { rate_hz: Some(3_199_000_000), load_pct: None }),
        ..Sample::default()
    };
    check_host("orin-nx-jp512", expected);
}

#[test]
fn nano_r32_sample_reads_iio_power_rails() {
    let expected = Sample {
        cpu: Some(Cpu { total_pct: 25.0, per_core_pct: vec![30.0, 10.0, 20.0, 40.0] }),
        memory: memory(4050112, 2097152),
        swap: swap(2025040, 1767424),
        net: vec![netif("eth0", 300000, 100000), netif("l4tbr0", 0, 0), netif("dummy0", 0, 0)],
        load: Some([0.1, 0.2, 0.3]),
        uptime_s: Some(60.25),
        gpu: Some(Gpu {
            load_pct: Some(12.0),
            cur_freq_hz: Some(76_800_000),
            min_freq_hz: Some(76_800_000),
            max_freq_hz: Some(921_600_000),
        }),
        thermal: vec![
            zone("AO-therm", Some(38.5)),
            zone("CPU-therm", Some(40.0)),
            zone("GPU-therm", Some(38.0)),
            zone("PLL-therm", Some(37.5)),
            zone("PMIC-Die", Some(100.0)),
            zone("thermal-fan-est", Some(39.1)),
        ],
        // R32's driver reports power itself (in_power{N}_input), not computed from mV*mA.
        power: vec![
            rail("POM_5V_IN", 5008, 498, 2492),
            rail("POM_5V_GPU", 4984, 8, 40),
            rail("POM_5V_CPU", 4976, 100, 498),
        ],
        fan: None,
        power_mode: Some(PowerMode { id: 0, name: Some("MAXN".into()) }),
        emc: None,
        ..Sample::default()
    };
    assert_eq!(expected.input_power_mw(), Some(2492));
    check_host("nano-jp461", expected);
}

#[test]
fn generic_x86_sample_has_no_jetson_metrics() {
    let expected = Sample {
        cpu: Some(Cpu { total_pct: 37.5, per_core_pct: (0..16).map(|i| i as f64 * 5.0).collect() }),
        memory: memory(16326412, 12582912),
        swap: swap(0, 0),
        net: vec![netif("enp3s0", 123456789012, 98765432109)],
        load: Some([1.5, 1.25, 1.0]),
        uptime_s: Some(500000.99),
        thermal: vec![zone("x86_pkg_temp", Some(55.0))],
        ..Sample::default()
    };
    assert_eq!(expected.gpu, None);
    assert!(expected.power.is_empty() && expected.fan.is_none() && expected.power_mode.is_none());
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
    let expected = Sample {
        // The truncated cpu1 line is dropped; the all-cores line and cpu0 still count.
        cpu: Some(Cpu {
            total_pct: 50.0,
            per_core_pct: vec![50.0],
        }),
        // MemAvailable is garbage: MemFree + Buffers + Cached stands in.
        memory: memory(4000000, 2000000),
        swap: None,
        net: vec![netif("eth0", 1000, 2000)],
        load: None,
        uptime_s: None,
        gpu: Some(Gpu {
            load_pct: None,
            cur_freq_hz: Some(612_000_000),
            min_freq_hz: Some(306_000_000),
            max_freq_hz: Some(1_020_000_000),
        }),
        thermal: vec![
            zone("cpu-thermal", None),
            zone("thermal_zone1", Some(50.0)),
            zone("cv0-thermal", None),
        ],
        // VDD_CPU_GPU_CV has a garbage voltage: no power for it; NC skipped.
        power: vec![rail("VDD_IN", 5064, 584, 2957)],
        // The pwmfan hwmon has no `name`: it cannot be identified.
        fan: None,
        power_mode: None,
        emc: None,
        warnings: vec![
            "/proc/stat: `cpu1` is truncated (3 counters, at least 4 expected)".into(),
            "/proc/meminfo: `MemAvailable` is not a number: `lots`".into(),
            "/proc/meminfo: `SwapTotal` or `SwapFree` missing".into(),
            "/proc/net/dev: `eth1` has missing or bad byte counters".into(),
            "/proc/loadavg: expected three load averages, found `high high high`".into(),
            "/proc/uptime: cannot read: No such file or directory (os error 2)".into(),
            "/sys/devices/platform/bus@0/17000000.gpu/load: expected a number, found `busy`".into(),
            "/sys/devices/virtual/thermal/thermal_zone0/temp: expected a number, found `hot`".into(),
            "/sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon/hwmon1/in2_input: expected a number, found `5.064V`"
                .into(),
            "/var/lib/nvpmodel/status: expected `pmode:NNNN`, found `pmode:zz`".into(),
            "/sys/kernel/debug/bpmp/debug/clk/emc/rate: expected a number, found `\\u{1}\\u{2}garbage`".into(),
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
        "ram      3.88/7.44 GiB (52%)  swap 0.23/3.72 GiB",
        "load     0.52 0.58 0.59  up 0d 3h 25m",
        "gpu      30.5% @ 612 MHz (306-1020 MHz)",
        "emc      20.0% @ 204 MHz",
        "temp     cpu@44.1C gpu@44.5C cv0@off cv1@off cv2@off soc0@42.1C soc1@43.2C soc2@43.4C tj@44.5C",
        "power    VDD_IN 2957mW VDD_CPU_GPU_CV 486mW VDD_SOC 1012mW",
        "fan      pwm 77/255 (30%) 1529 rpm",
        "mode     2 MAXN_SUPER",
        "net      enP8p1s0 rx - tx -",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains(&format!("disk     {}: ", state.path().display())), "{text}");
    assert!(!text.contains("warning"), "{text}");
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
