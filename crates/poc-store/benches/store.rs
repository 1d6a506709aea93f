//! Artifact store hot paths: ingest, recovery, proofs (with reads from the log).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use poc_mmr::verify_artifact;
use poc_store::ArtifactStore;
use std::hint::black_box;

fn vector(i: u64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v[8..16].copy_from_slice(&(i * 31).to_le_bytes());
    v
}

fn fill(store: &ArtifactStore, n: u64, batch: u64) {
    let vs: Vec<[u8; 24]> = (0..n).map(vector).collect();
    for start in (0..n).step_by(batch as usize) {
        let items: Vec<(i32, &[u8])> = (start..(start + batch).min(n))
            .map(|i| (i as i32, &vs[i as usize][..]))
            .collect();
        for r in store.append_batch(&items, Some("node-0")) {
            r.unwrap();
        }
    }
}

fn ingest(c: &mut Criterion) {
    let mut g = c.benchmark_group("store::ingest");
    let n = 200_000u64;
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("append_batch1000+flush/200k", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let store = ArtifactStore::open_or_create(dir.path()).unwrap();
                fill(&store, n, 1000);
                store.flush().unwrap();
                dir
            },
            BatchSize::PerIteration,
        )
    });
    // What the API node does per ML-node batch: append, then sync before acknowledging.
    g.bench_function("append_batch1000+sync each/200k", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let store = ArtifactStore::open_or_create(dir.path()).unwrap();
                let vs: Vec<[u8; 24]> = (0..n).map(vector).collect();
                for start in (0..n).step_by(1000) {
                    let items: Vec<(i32, &[u8])> = (start..start + 1000)
                        .map(|i| (i as i32, &vs[i as usize][..]))
                        .collect();
                    for r in store.append_batch(&items, Some("node-0")) {
                        r.unwrap();
                    }
                    store.sync().unwrap();
                }
                store.flush().unwrap();
                dir
            },
            BatchSize::PerIteration,
        )
    });
    // Eight ML nodes posting at once: their syncs share fsyncs (group commit).
    g.bench_function("8 threads x append_batch1000+sync each/200k", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let store = std::sync::Arc::new(ArtifactStore::open_or_create(dir.path()).unwrap());
                let threads: Vec<_> = (0..8u64)
                    .map(|t| {
                        let store = std::sync::Arc::clone(&store);
                        std::thread::spawn(move || {
                            let per = n / 8;
                            let vs: Vec<[u8; 24]> = (t * per..(t + 1) * per).map(vector).collect();
                            for chunk in vs.chunks(1000).enumerate() {
                                let (k, chunk) = chunk;
                                let base = t * per + k as u64 * 1000;
                                let items: Vec<(i32, &[u8])> = chunk
                                    .iter()
                                    .enumerate()
                                    .map(|(j, v)| ((base + j as u64) as i32, &v[..]))
                                    .collect();
                                let node = format!("node-{t}");
                                for r in store.append_batch(&items, Some(&node)) {
                                    r.unwrap();
                                }
                                store.sync().unwrap();
                            }
                        })
                    })
                    .collect();
                for t in threads {
                    t.join().unwrap();
                }
                store.flush().unwrap();
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("append+flush/200k", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let store = ArtifactStore::open_or_create(dir.path()).unwrap();
                for i in 0..n {
                    store.append(i as i32, &vector(i), Some("node-0")).unwrap();
                }
                store.flush().unwrap();
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn million(c: &mut Criterion) {
    let n = 1_000_000u64;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = ArtifactStore::open_or_create(dir.path()).unwrap();
        fill(&store, n, 10_000);
        store.flush().unwrap();
    }
    let mut g = c.benchmark_group("store::recovery");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function("open/1M", |b| {
        b.iter(|| ArtifactStore::open(dir.path()).unwrap())
    });
    g.finish();

    let store = ArtifactStore::open(dir.path()).unwrap();
    let snap = store.flushed();
    let root = snap.root.unwrap();
    let mut g = c.benchmark_group("store::proof");
    let mut i = 0u64;
    g.bench_function("generate+verify/1M", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            let p = store.proof(black_box(i), n).unwrap();
            verify_artifact(&root, n, i, p.nonce, &p.vector, &p.proof).unwrap();
        })
    });
    let leaves: Vec<u64> = (0..200).map(|k| (k * 4_999 + 17) % n).collect();
    g.bench_function("batch200/1M", |b| {
        b.iter(|| store.proofs(black_box(&leaves), n).unwrap())
    });
    g.finish();
}

criterion_group!(benches, ingest, million);
criterion_main!(benches);
