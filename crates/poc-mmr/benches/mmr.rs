//! MMR hot paths: appends (leaf + node hashing), proofs and verification.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use poc_mmr::{Mmr, hash_leaf, verify_proof};
use std::hint::black_box;

fn vector(i: u64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("mmr::append");
    let n = 100_000u64;
    g.throughput(Throughput::Elements(n));
    g.bench_function("hash+push/100k", |b| {
        b.iter_batched(
            || Mmr::with_capacity(n),
            |mut t| {
                for i in 0..n {
                    t.push(hash_leaf(i as i32, &vector(i)));
                }
                t
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn proofs(c: &mut Criterion) {
    let n = 1_000_000u64;
    let leaves: Vec<_> = (0..n).map(|i| hash_leaf(i as i32, &vector(i))).collect();
    let t = Mmr::from_leaf_hashes(&leaves);
    let root = t.root().unwrap();
    let mut g = c.benchmark_group("mmr::proof");
    let mut i = 0u64;
    g.bench_function("generate/1M", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            t.proof(black_box(i), n).unwrap()
        })
    });
    let p = t.proof(123_456, n).unwrap();
    g.bench_function("verify/1M", |b| {
        b.iter(|| verify_proof(&root, n, black_box(123_456), &leaves[123_456], &p).unwrap())
    });
    g.bench_function("generate+verify/1M", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            let p = t.proof(black_box(i), n).unwrap();
            verify_proof(&root, n, i, &leaves[i as usize], &p).unwrap()
        })
    });
    let batch: Vec<u64> = (0..200).map(|k| k * 4999).collect();
    g.bench_function("batch200/1M", |b| {
        b.iter(|| t.proofs(black_box(&batch), n).unwrap())
    });
    g.finish();
}

criterion_group!(benches, append, proofs);
criterion_main!(benches);
