//! PoC v1 hot paths: numpy-exact normals (pool and inputs), building the round's model,
//! and one nonce's distance on the tiny set.

use candle_core::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use poc_v1::compute::{V1Round, inputs};
use poc_v1::numpy::Pcg64;
use poc_v1::params::V1Params;
use poc_v1::weights::pool_values;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("v1::rng");
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("standard_normal x1M", |b| {
        b.iter(|| {
            let mut r = Pcg64::from_string("bench", 4);
            let mut s = 0.0;
            for _ in 0..1_000_000 {
                s += r.standard_normal();
            }
            black_box(s)
        })
    });
    g.bench_function("pool (normal → f32 → f16) x1M", |b| {
        b.iter(|| black_box(pool_values("bench", 1_000_000)))
    });
    let t = V1Params::testnet();
    g.throughput(Throughput::Elements((t.seq_len * t.dim) as u64));
    g.bench_function("inputs of one testnet nonce", |b| {
        b.iter(|| black_box(inputs("bh", "pk", 7, t.seq_len, t.dim)))
    });
    g.finish();
    let p = V1Params::tiny();
    let mut g = c.benchmark_group("v1::tiny");
    g.bench_function("build model", |b| {
        b.iter(|| black_box(V1Round::build(&p, "bh", &Device::Cpu).unwrap()))
    });
    let round = V1Round::build(&p, "bh", &Device::Cpu).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("distance of one nonce", |b| {
        b.iter(|| black_box(round.distances("pk", &[3]).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
