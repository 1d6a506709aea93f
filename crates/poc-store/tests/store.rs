//! Behaviour of one stage store and of the managed stage stores.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use poc_mmr::{Mmr, hash_leaf, verify_artifact};
use poc_store::{AppendError, ArtifactStore, Flusher, StageStores, StoreError, verify_store};

fn vector(i: u64) -> Vec<u8> {
    (0..24)
        .map(|j| (i as u8) ^ (j as u8).wrapping_mul(17))
        .collect()
}

#[test]
fn appends_flush_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("100");
    let store = ArtifactStore::open_or_create(&dir).unwrap();
    assert_eq!(store.flushed().count, 0);
    assert_eq!(store.flushed().root, None);
    for i in 0..10u64 {
        assert_eq!(store.append(i as i32, &vector(i), Some("n1")).unwrap(), i);
    }
    // Appended but not flushed: nothing is reported, and roots/proofs refuse the count.
    assert_eq!(store.count(), 10);
    assert_eq!(store.flushed().count, 0);
    assert!(matches!(
        store.root_at(10),
        Err(StoreError::CountNotFlushed {
            count: 10,
            flushed: 0
        })
    ));
    // Unflushed artifacts can be read back.
    assert_eq!(store.artifact(3).unwrap().vector, vector(3));

    let snap = store.flush().unwrap();
    let leaves: Vec<_> = (0..10u64)
        .map(|i| hash_leaf(i as i32, &vector(i)))
        .collect();
    assert_eq!(snap.count, 10);
    assert_eq!(snap.root, Mmr::from_leaf_hashes(&leaves).root());
    assert_eq!(store.flushed(), snap);
    assert_eq!(
        store.flush().unwrap(),
        snap,
        "an empty flush changes nothing"
    );
    drop(store);

    let store = ArtifactStore::open(&dir).unwrap();
    assert_eq!(store.flushed(), snap);
    assert_eq!(store.count(), 10);
    assert_eq!(store.recovery().truncated_bytes, 0);
    assert_eq!(store.flushed_node_counts().get("n1"), Some(&10));
    let a = store.artifact(7).unwrap();
    assert_eq!(
        (a.leaf_index, a.nonce, a.vector, a.node_id.as_deref()),
        (7, 7, vector(7), Some("n1"))
    );
}

#[test]
fn rejects_bad_appends_without_changing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open_or_create(tmp.path()).unwrap();
    store.append(5, &[1, 2], None).unwrap();
    let before = store.current_root();
    assert_eq!(
        store.append(5, &[3, 4], None),
        Err(AppendError::DuplicateNonce(5))
    );
    assert_eq!(store.append(6, &[], None), Err(AppendError::EmptyVector));
    assert_eq!(
        store.append(6, &vec![0; 4097], None),
        Err(AppendError::VectorTooLong {
            len: 4097,
            max: 4096
        })
    );
    let long_id = "x".repeat(129);
    assert_eq!(
        store.append(6, &[1], Some(&long_id)),
        Err(AppendError::NodeIdTooLong { len: 129, max: 128 })
    );
    assert_eq!(store.count(), 1);
    assert_eq!(store.current_root(), before);
    // A batch: bad items are reported, the good ones are stored.
    let items: Vec<(i32, &[u8])> = vec![(7, &[1]), (5, &[1]), (8, &[])];
    let results = store.append_batch(&items, Some("n"));
    assert_eq!(results[0], Ok(1));
    assert_eq!(results[1], Err(AppendError::DuplicateNonce(5)));
    assert_eq!(results[2], Err(AppendError::EmptyVector));
    assert_eq!(store.count(), 2);
    assert_eq!(
        AppendError::DuplicateNonce(5).to_string(),
        "nonce 5 is already stored"
    );
}

#[test]
fn one_writer_many_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open_or_create(tmp.path()).unwrap();
    store.append(1, &[1], None).unwrap();
    store.flush().unwrap();
    // A second writer is refused while the first is open.
    assert!(matches!(
        ArtifactStore::open(tmp.path()),
        Err(StoreError::Locked(_))
    ));
    // Readers see the flushed state only and cannot write.
    store.append(2, &[2], None).unwrap();
    let reader = ArtifactStore::open_read_only(tmp.path()).unwrap();
    assert_eq!(reader.count(), 1);
    assert_eq!(reader.append(3, &[3], None), Err(AppendError::ReadOnly));
    assert!(reader.flush().is_err());
    drop(store);
    ArtifactStore::open(tmp.path()).unwrap();
}

#[test]
fn missing_store_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        ArtifactStore::open(tmp.path().join("nope")),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        verify_store(tmp.path().join("nope")),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn proofs_for_every_historical_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open_or_create(tmp.path()).unwrap();
    let mut snaps = vec![];
    for i in 0..120u64 {
        store
            .append(
                i as i32 - 60,
                &vector(i),
                Some(if i % 2 == 0 { "even" } else { "odd" }),
            )
            .unwrap();
        if i % 13 == 12 {
            snaps.push(store.flush().unwrap());
        }
    }
    snaps.push(store.flush().unwrap());
    for snap in &snaps {
        let root = snap.root.unwrap();
        let leaves: Vec<u64> = (0..snap.count).collect();
        let proofs = store.proofs(&leaves, snap.count).unwrap();
        for p in &proofs {
            verify_artifact(
                &root,
                snap.count,
                p.leaf_index,
                p.nonce,
                &p.vector,
                &p.proof,
            )
            .unwrap();
            assert_eq!(p.vector, vector(p.leaf_index));
        }
        assert!(matches!(
            store.proof(snap.count, snap.count),
            Err(StoreError::LeafOutOfRange { .. })
        ));
    }
    assert_eq!(store.flushed_node_counts().values().sum::<u64>(), 120);
    assert_eq!(store.flushed_node_counts()["even"], 60);
    // Duplicate indices in one request are served.
    let p = store.proofs(&[3, 3], 120).unwrap();
    assert_eq!(p[0], p[1]);
}

#[test]
fn proofs_are_served_while_another_thread_appends_and_flushes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(ArtifactStore::open_or_create(tmp.path()).unwrap());
    for i in 0..1000u64 {
        store.append(i as i32, &vector(i), Some("n")).unwrap();
    }
    let first = store.flush().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        std::thread::spawn(move || {
            for i in 1000..30_000u64 {
                store.append(i as i32, &vector(i), Some("n")).unwrap();
                if i % 1000 == 0 {
                    store.flush().unwrap();
                }
            }
            store.flush().unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut served = 0u64;
    let mut snapshots_seen = std::collections::HashSet::new();
    while !done.load(Ordering::SeqCst) || served < 2000 {
        // Alternate between the first snapshot and the newest flushed one.
        let snap = if served.is_multiple_of(2) {
            first
        } else {
            store.flushed()
        };
        snapshots_seen.insert(snap.count);
        let leaf = (served * 7919) % snap.count;
        let p = store.proof(leaf, snap.count).unwrap();
        verify_artifact(
            &snap.root.unwrap(),
            snap.count,
            leaf,
            p.nonce,
            &p.vector,
            &p.proof,
        )
        .unwrap();
        assert_eq!(p.vector, vector(leaf));
        // Any appended artifact is readable, flushed or not.
        let n = store.count();
        assert_eq!(store.artifact(n - 1).unwrap().vector, vector(n - 1));
        served += 1;
    }
    writer.join().unwrap();
    assert_eq!(store.flushed().count, 30_000);
    assert!(
        snapshots_seen.len() > 2,
        "proofs were served against several snapshots"
    );
}

#[test]
fn flusher_makes_appends_durable_on_a_timer_and_at_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(ArtifactStore::open_or_create(tmp.path()).unwrap());
    let f = {
        let s = Arc::clone(&store);
        Flusher::start(Duration::from_millis(20), move || {
            s.flush().unwrap();
        })
    };
    store.append(1, &[1], None).unwrap();
    while store.flushed().count < 1 {
        std::thread::sleep(Duration::from_millis(5));
    }
    store.append(2, &[2], None).unwrap();
    f.stop();
    assert_eq!(store.flushed().count, 2);
}

#[test]
fn verify_reports_a_sound_store_and_an_unflushed_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open_or_create(tmp.path()).unwrap();
    for i in 0..50u64 {
        store.append(i as i32, &vector(i), Some("n")).unwrap();
    }
    let snap = store.flush().unwrap();
    drop(store);
    let r = verify_store(tmp.path()).unwrap();
    assert!(r.is_sound(), "{:?}", r.problems);
    assert_eq!(r.artifacts, 50);
    assert_eq!(r.rebuilt_root, snap.root);
    assert_eq!(r.flushed_node_counts["n"], 50);
    assert_eq!(r.tail, None);
    // A torn tail after the flush is reported but is not a problem.
    let log = tmp.path().join("artifacts.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    std::fs::write(&log, &bytes).unwrap();
    let r = verify_store(tmp.path()).unwrap();
    assert!(r.is_sound());
    assert!(r.tail.unwrap().contains("6 bytes from offset"));
    let reopened = ArtifactStore::open(tmp.path()).unwrap();
    assert_eq!(reopened.recovery().truncated_bytes, 6);
    assert_eq!(reopened.flushed(), snap);
}

#[test]
fn managed_stores_keep_the_newest_stages_and_reopen_from_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let stages = StageStores::new(tmp.path(), 3).unwrap();
    let mut roots = vec![];
    for h in [10u64, 20, 30, 40, 50] {
        let s = stages.get_or_create(h).unwrap();
        s.append(h as i32, &vector(h), Some("n")).unwrap();
        roots.push((h, s.flush().unwrap()));
    }
    assert_eq!(stages.heights_on_disk().unwrap(), vec![30, 40, 50]);
    // A stage older than the kept ones is refused instead of being created and deleted.
    assert!(matches!(
        stages.get_or_create(5),
        Err(StoreError::Retired { height: 5, keep: 3 })
    ));
    assert!(matches!(stages.get(10), Err(StoreError::NotFound(_))));
    // Flush everything appended, then "restart": a fresh manager opens stages on demand.
    stages.get(50).unwrap().append(-1, &[1], None).unwrap();
    let results = stages.flush_all();
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    drop(stages);
    let stages = StageStores::new(tmp.path(), 3).unwrap();
    for (h, snap) in &roots[2..] {
        let s = stages.get(*h).unwrap();
        assert_eq!(s.root_at(snap.count).unwrap(), snap.root);
    }
    assert_eq!(stages.get(50).unwrap().flushed().count, 2);
    // Non-numeric directories are ignored by retention.
    std::fs::create_dir(tmp.path().join("notes")).unwrap();
    stages.get_or_create(60).unwrap();
    assert_eq!(stages.heights_on_disk().unwrap(), vec![40, 50, 60]);
    assert!(tmp.path().join("notes").exists());
    assert_eq!(stages.prune().unwrap(), Vec::<u64>::new());
}
