//! The PoC forward on the CPU (tiny presets; larger shapes: `poc artifacts bench`).

use std::sync::Arc;

use candle_core::{DType, Device};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use poc_core::InputRng;
use poc_model::presets::{Preset, write_preset};
use poc_model::{Checkpoint, PocEngine, PocParams, Qwen3Model};

fn forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("poc::forward");
    g.sample_size(10);
    for preset in [Preset::TinyMoe, Preset::TinyDense] {
        let dir = tempfile::tempdir().unwrap();
        write_preset(preset, dir.path()).unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let engine = PocEngine::new(Arc::new(
                Qwen3Model::load(&ck, dtype, &Device::Cpu).unwrap(),
            ));
            for (seq_len, batch) in [(256usize, 8usize), (1024, 8)] {
                let p = PocParams {
                    block_hash: "BENCH".into(),
                    public_key: "key".into(),
                    seq_len,
                    k_dim: 12,
                    rng: InputRng::Standard,
                };
                let nonces: Vec<i64> = (0..batch as i64).collect();
                g.throughput(Throughput::Elements((batch * seq_len) as u64));
                let id = BenchmarkId::new(
                    format!("{}/{dtype:?}", preset.name()),
                    format!("L{seq_len}xB{batch}"),
                );
                g.bench_function(id, |b| {
                    b.iter(|| engine.compute_batch(&p, &nonces).unwrap())
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
