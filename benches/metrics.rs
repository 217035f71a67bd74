//! Cost of one metrics sample on the Orin Nano fixture, and on agx-orin-jp62, the tree with every source the
//! sampler reads (per-core cpufreq, engines, hwmon limits, GPC clocks) (run by scripts/bench-metrics through
//! `cargo bench`).
//!
//! `cargo test --all-targets` also runs this target without `--bench`: it then takes a single sample as a smoke
//! check and prints nothing, so the test suite stays quiet and fast.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use jetship::host::metrics::Sampler;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    for (host, label) in
        [("orin-nano-super-jp62", "metrics_sample_us"), ("agx-orin-jp62", "metrics_sample_us_agx_orin_jp62")]
    {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts").join(host);
        let mut sampler = Sampler::new(root, std::env::temp_dir());
        let first = sampler.sample();
        assert!(first.gpu.is_some() && first.warnings.is_empty(), "{host}: {:?}", first.warnings);
        if !bench {
            continue;
        }
        for _ in 0..200 {
            black_box(sampler.sample());
        }
        let n: u32 = 20_000;
        let started = Instant::now();
        for _ in 0..n {
            black_box(sampler.sample());
        }
        let per_sample = started.elapsed() / n;
        println!("{label} {:.1}", per_sample.as_secs_f64() * 1e6);
    }
}
