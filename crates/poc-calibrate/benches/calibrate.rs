//! The calibration's end-to-end time: `tiny-moe`, L = 64, six variants (the reference
//! f32, bf16, FP8, int4, no reflections, random vectors), 1,000 nonces each by default
//! (`POC_CALIBRATE_BENCH_NONCES` to change). One timed run, as an operator would start it;
//! the time per variant is printed with the total.

use std::time::Instant;

use candle_core::DType;
use poc_calibrate::power::{Test, Weights};
use poc_calibrate::report::Settings;
use poc_calibrate::variants::Variant;
use poc_calibrate::{Config, run};
use poc_model::presets::{Preset, write_preset};

fn main() {
    let nonces: usize = std::env::var("POC_CALIBRATE_BENCH_NONCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let model = dir.path().join("tiny-moe");
    write_preset(Preset::TinyMoe, &model).expect("the preset writes");
    let variants = ["f32", "bf16", "fp8", "int4", "no-reflect", "random"]
        .iter()
        .map(|v| Variant::parse(v).expect("a known variant"))
        .collect();
    let cfg = Config {
        model: Some(model),
        variants,
        files: Vec::new(),
        reference: "f32".into(),
        nonces,
        seq_len: 64,
        k_dim: 12,
        batch: 32,
        dtype: DType::F32,
        block_hash: "calibration-block".into(),
        public_key: "calibration-key".into(),
        rate: None,
        block_time_s: 6.0,
        settings: Settings {
            percentile: 98.0,
            test: Test {
                p_mismatch: 0.1,
                p_value_threshold: 0.05,
            },
            sample_sizes: vec![50, 100, 200, 500, 1000],
            fractions: vec![0.01, 0.02, 0.04, 0.1, 1.0],
            sample_size: 200,
            trials: 2000,
            seed: 1,
            weights: vec![Weights::uniform(377), Weights::heavy(377, 1)],
            production: None,
            rate_source: String::new(),
            stage_blocks: Vec::new(),
            phase_fraction: 0.04,
        },
        out: dir.path().join("out"),
    };
    let t = Instant::now();
    let a = run(&cfg).expect("the calibration runs");
    let total = t.elapsed().as_secs_f64();
    for v in &a.variants {
        if let Some(r) = v.nonces_per_sec {
            eprintln!("{:>12}: {:.1} nonces/s", v.name, r);
        }
    }
    println!(
        "calibrate tiny-moe L=64: {nonces} nonces x 6 variants in {total:.1} s (reference {:.1} nonces/s)",
        a.phase
            .as_ref()
            .map_or(0.0, |p| p.production.nonces_per_sec)
    );
}
