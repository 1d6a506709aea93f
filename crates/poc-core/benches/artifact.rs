//! Per-nonce work after the model: pick + Haar + encoding, and the validator's test.

use criterion::{Criterion, criterion_group, criterion_main};
use poc_core::artifact::{decode_vector_f32, encode_vector};
use poc_core::pick::pick_indices;
use poc_core::projection::artifact_from_hidden;
use poc_core::stats::binomial_upper_tail;
use poc_core::validation::compare_artifacts;
use poc_core::{Artifact, StatTest};
use std::hint::black_box;

fn projection(c: &mut Criterion) {
    let mut g = c.benchmark_group("projection");
    let hidden: Vec<f32> = (0..4096).map(|d| ((d * 37 % 101) as f32) - 50.0).collect();
    g.bench_function("pick/H4096-k12", |b| {
        b.iter(|| pick_indices("TEST_BLOCK", "test_pub_keys", black_box(3), 12, 4096).unwrap())
    });
    g.bench_function("pick+haar+encode/H4096-k12", |b| {
        b.iter(|| {
            artifact_from_hidden("TEST_BLOCK", "test_pub_keys", black_box(3), &hidden, 12).unwrap()
        })
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let v: Vec<f32> = (0..12).map(|i| i as f32 / 12.0).collect();
    let b64 = encode_vector(&v);
    c.bench_function("artifact::encode/k12", |b| {
        b.iter(|| encode_vector(black_box(&v)))
    });
    c.bench_function("artifact::decode/k12", |b| {
        b.iter(|| decode_vector_f32(black_box(&b64), Some(12)).unwrap())
    });
}

fn statistics(c: &mut Criterion) {
    let mut g = c.benchmark_group("stats::binomial_upper_tail");
    g.bench_function("n200-k8-p0.02", |b| {
        b.iter(|| binomial_upper_tail(black_box(8), 200, 0.02))
    });
    g.bench_function("n1e6-k500500-p0.5", |b| {
        b.iter(|| binomial_upper_tail(black_box(500_500), 1_000_000, 0.5))
    });
    g.finish();
    let computed: Vec<(i64, Vec<f32>)> = (0..200)
        .map(|n| (n, (0..12).map(|i| ((n + i) % 7) as f32 / 7.0).collect()))
        .collect();
    let received: Vec<Artifact> = computed
        .iter()
        .map(|(n, v)| Artifact {
            nonce: *n,
            vector_b64: encode_vector(v),
        })
        .collect();
    c.bench_function("validation::compare/200", |b| {
        b.iter(|| compare_artifacts(&computed, black_box(&received), &StatTest::default()).unwrap())
    });
}

criterion_group!(benches, projection, codec, statistics);
criterion_main!(benches);
