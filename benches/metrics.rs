//! Cost of one metrics sample on the Orin Nano fixture (run by scripts/bench-metrics through `cargo bench`).
//!
//! `cargo test --all-targets` also runs this target without `--bench`: it then takes a single sample as a smoke
//! check and prints nothing, so the test suite stays quiet and fast.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use jetship::host::metrics::Sampler;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts/orin-nano-super-jp62");
    let mut sampler = Sampler::new(root, std::env::temp_dir());
    let first = sampler.sample();
    assert!(first.gpu.is_some() && first.warnings.is_empty(), "{:?}", first.warnings);
    if !std::env::args().any(|a| a == "--bench") {
        return;
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
    println!("metrics_sample_us {:.1}", per_sample.as_secs_f64() * 1e6);
}
