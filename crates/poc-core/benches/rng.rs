//! Input generation: the hot path of every PoC forward on CPU.
//! Names follow `module::operation/param`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use poc_core::InputRng;
use poc_core::inputs::{fill_inputs, split_inputs};
use poc_core::rng::{fill_hashes, fill_normals};
use rayon::prelude::*;
use std::hint::black_box;

const L: usize = 1024;
const H: usize = 4096;

fn inputs(c: &mut Criterion) {
    let mut g = c.benchmark_group("inputs::generate");
    g.throughput(Throughput::Elements((L * H) as u64));
    g.sample_size(20);
    let mut out = vec![0f32; L * H];
    for rng in [InputRng::Standard, InputRng::Stronger] {
        let name = format!("{rng:?}").to_lowercase();
        g.bench_function(
            BenchmarkId::new(format!("{name}/1-thread"), "L1024xH4096"),
            |b| b.iter(|| fill_inputs("TEST_BLOCK", "test_pub_keys", black_box(0), rng, &mut out)),
        );
        g.bench_function(
            BenchmarkId::new(format!("{name}/all-threads"), "L1024xH4096"),
            |b| {
                b.iter(|| {
                    split_inputs(
                        "TEST_BLOCK",
                        "test_pub_keys",
                        black_box(0),
                        rng,
                        &mut out,
                        1 << 16,
                    )
                    .into_par_iter()
                    .for_each(|c| c.fill())
                })
            },
        );
    }
    g.finish();
}

fn primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("rng");
    let n = 1 << 20;
    g.throughput(Throughput::Elements(n as u64));
    let mut hashes = vec![0u32; n];
    g.bench_function("murmur/1M", |b| {
        b.iter(|| fill_hashes(black_box(7), 0, &mut hashes))
    });
    let mut normals = vec![0f32; n];
    g.bench_function("normals/1M", |b| {
        b.iter(|| fill_normals(black_box(7), &mut normals))
    });
    g.finish();
}

criterion_group!(benches, inputs, primitives);
criterion_main!(benches);
