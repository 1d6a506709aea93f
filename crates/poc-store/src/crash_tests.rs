//! Crash safety by fault injection: every byte offset of the last flush's writes
//! (truncated, zeroed, garbage), every step of the flush sequence, and damage inside the
//! flushed data.

use std::path::Path;

use poc_mmr::verify_artifact;

use crate::error::StoreError;
use crate::format::{LOG_FILE, META_FILE, META_TMP_FILE};
use crate::store::{ArtifactStore, CrashPoint, Snapshot};
use crate::verify::verify_store;

fn artifact(i: u64) -> (i32, Vec<u8>) {
    let nonce = (i as i32).wrapping_mul(7) - 50;
    let v: Vec<u8> = (0..24).map(|j| (i as u8).wrapping_add(j * 3)).collect();
    (nonce, v)
}

fn node_of(i: u64) -> Option<&'static str> {
    match i % 3 {
        0 => Some("node-a"),
        1 => Some("node-b"),
        _ => None,
    }
}

#[derive(Clone)]
struct DirState {
    log: Vec<u8>,
    meta: Option<Vec<u8>>,
}

fn save(dir: &Path) -> DirState {
    DirState {
        log: std::fs::read(dir.join(LOG_FILE)).unwrap(),
        meta: std::fs::read(dir.join(META_FILE)).ok(),
    }
}

fn restore(dir: &Path, st: &DirState, log: &[u8], tmp_meta: Option<&[u8]>) {
    std::fs::write(dir.join(LOG_FILE), log).unwrap();
    match &st.meta {
        Some(m) => std::fs::write(dir.join(META_FILE), m).unwrap(),
        None => {
            let _ = std::fs::remove_file(dir.join(META_FILE));
        }
    }
    match tmp_meta {
        Some(t) => std::fs::write(dir.join(META_TMP_FILE), t).unwrap(),
        None => {
            let _ = std::fs::remove_file(dir.join(META_TMP_FILE));
        }
    }
}

/// Appends artifacts `range` and returns nothing; artifacts are a pure function of i.
fn append_range(store: &ArtifactStore, range: std::ops::Range<u64>) {
    for i in range {
        let (n, v) = artifact(i);
        store.append(n, &v, node_of(i)).unwrap();
    }
}

/// A store with three flushes (reported snapshots), then 20 more appended artifacts.
fn populate(dir: &Path) -> (ArtifactStore, Vec<Snapshot>) {
    let store = ArtifactStore::open_or_create(dir).unwrap();
    let mut reported = vec![];
    for (a, b) in [(0, 17), (17, 40), (40, 64)] {
        append_range(&store, a..b);
        reported.push(store.flush().unwrap());
    }
    append_range(&store, 64..84);
    (store, reported)
}

/// Every reported snapshot is provable and every reported artifact is intact.
fn check_reported(store: &ArtifactStore, reported: &[Snapshot]) {
    for snap in reported {
        assert_eq!(
            store.root_at(snap.count).unwrap(),
            snap.root,
            "root at {}",
            snap.count
        );
        let root = snap.root.unwrap();
        for leaf in [0, snap.count / 2, snap.count - 1] {
            let p = store.proof(leaf, snap.count).unwrap();
            verify_artifact(&root, snap.count, leaf, p.nonce, &p.vector, &p.proof).unwrap();
        }
    }
    let last = reported.last().unwrap().count;
    assert!(store.flushed().count >= last);
    for leaf in 0..store.count() {
        let a = store.artifact(leaf).unwrap();
        assert_eq!((a.nonce, a.vector), artifact(leaf), "leaf {leaf}");
        assert_eq!(a.node_id.as_deref(), node_of(leaf));
    }
}

/// Reopens, checks the reported snapshots, and checks the store keeps working.
fn reopen_and_check(dir: &Path, reported: &[Snapshot]) -> ArtifactStore {
    let store = ArtifactStore::open(dir).unwrap_or_else(|e| panic!("reopen failed: {e}"));
    check_reported(&store, reported);
    let next = store.count();
    append_range(&store, next..next + 3);
    let snap = store.flush().unwrap();
    assert_eq!(snap.count, next + 3);
    check_reported(&store, &[*reported.last().unwrap(), snap]);
    store
}

#[test]
fn crash_at_every_byte_of_the_last_flush_loses_nothing_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stage");
    let (store, reported) = populate(&dir);
    let before = save(&dir);
    let after_snap = store.flush().unwrap();
    drop(store);
    let after = save(&dir);
    let (a, b) = (before.log.len(), after.log.len());
    assert_eq!(b - a, 20 * 39); // 20 records of 8 + 7 + 24 bytes

    for cut in a..=b {
        // Power loss before the data fsync: any prefix of the new bytes survived.
        restore(&dir, &before, &after.log[..cut], None);
        let s = reopen_and_check(&dir, &reported);
        drop(s);
        // The same with the new bytes present but zeroed from `cut` on.
        let mut zeroed = after.log.clone();
        zeroed[cut..].fill(0);
        restore(&dir, &before, &zeroed, None);
        drop(reopen_and_check(&dir, &reported));
        // Or filled with garbage.
        let mut garbage = after.log.clone();
        for (k, byte) in garbage[cut..].iter_mut().enumerate() {
            *byte = (k as u8).wrapping_mul(151).wrapping_add(7);
        }
        restore(&dir, &before, &garbage, None);
        drop(reopen_and_check(&dir, &reported));
    }

    // Data fsynced, crash while writing the temporary metadata (any prefix of it).
    let new_meta = after.meta.clone().unwrap();
    for cut in 0..=new_meta.len() {
        restore(&dir, &before, &after.log, Some(&new_meta[..cut]));
        let s = reopen_and_check(&dir, &reported);
        // The complete unflushed records were kept and flushed again.
        assert!(s.count() >= after_snap.count);
    }

    // Renamed: the new snapshot is the reported one.
    restore(&dir, &after, &after.log, None);
    let mut all = reported.clone();
    all.push(after_snap);
    drop(reopen_and_check(&dir, &all));
}

#[test]
fn crash_at_every_step_of_the_flush_sequence() {
    let points: Vec<(CrashPoint, usize)> = [0usize, 1, 7, 8, 9, 50, 400, usize::MAX]
        .iter()
        .map(|&k| (CrashPoint::Write, k))
        .chain([(CrashPoint::DataSync, 0)])
        .chain((0..=60).step_by(6).map(|k| (CrashPoint::MetaWrite, k)))
        .chain([(CrashPoint::Rename, 0)])
        .collect();
    for (point, keep) in points {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("stage");
        let (store, reported) = populate(&dir);
        *store.crash_at.lock().unwrap() = Some((point, keep));
        assert!(store.flush().is_err(), "{point:?}");
        // After a failed flush the store refuses writes until reopened.
        assert!(store.append(999_999, &[1], None).is_err());
        drop(store);
        // Only a completed rename publishes the new snapshot.
        let published = ArtifactStore::open_read_only(&dir).unwrap().flushed().count;
        assert_eq!(
            published,
            if point == CrashPoint::Rename { 84 } else { 64 },
            "{point:?}"
        );
        let s = reopen_and_check(&dir, &reported);
        if matches!(
            point,
            CrashPoint::DataSync | CrashPoint::MetaWrite | CrashPoint::Rename
        ) || (point == CrashPoint::Write && keep == usize::MAX)
        {
            // Every appended artifact reached the log and survived.
            assert!(s.count() >= 84 + 3, "{point:?}: {}", s.count());
        }
    }
}

#[test]
fn damage_inside_flushed_data_is_refused_with_the_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stage");
    let (store, _) = populate(&dir);
    store.flush().unwrap();
    drop(store);
    let good = save(&dir);
    // Flip one byte in each of several records inside the flushed part.
    for &at in &[16usize + 3, 200, 1000, good.log.len() - 30] {
        let mut bad = good.log.clone();
        bad[at] ^= 0x40;
        restore(&dir, &good, &bad, None);
        match ArtifactStore::open(&dir) {
            Err(StoreError::Corrupt { offset, .. }) => {
                assert!(
                    offset <= at as u64 && at as u64 - offset < 40 + 20,
                    "offset {offset} for byte {at}"
                )
            }
            other => panic!("byte {at}: expected Corrupt, got {other:?}"),
        }
        let report = verify_store(&dir).unwrap();
        assert!(!report.is_sound());
        assert!(
            report.problems[0].contains("corrupt record at byte offset"),
            "{:?}",
            report.problems
        );
    }
    // Flushed data cut off (lost after being reported).
    restore(&dir, &good, &good.log[..good.log.len() - 5], None);
    assert!(matches!(
        ArtifactStore::open(&dir),
        Err(StoreError::Truncated { .. })
    ));
    assert!(!verify_store(&dir).unwrap().is_sound());
    // Damaged metadata.
    let mut meta = good.meta.clone().unwrap();
    meta[10] ^= 1;
    std::fs::write(dir.join(META_FILE), &meta).unwrap();
    std::fs::write(dir.join(LOG_FILE), &good.log).unwrap();
    assert!(matches!(
        ArtifactStore::open(&dir),
        Err(StoreError::Format { .. })
    ));
    assert!(!verify_store(&dir).unwrap().is_sound());
    // Restored, all is well again.
    restore(&dir, &good, &good.log, None);
    assert!(verify_store(&dir).unwrap().is_sound());
    ArtifactStore::open(&dir).unwrap();
}

/// A copy of the store's files as a crash would leave them (what the process wrote; its
/// buffers are gone).
fn crash_copy(from: &Path, to: &Path) {
    for f in [LOG_FILE, META_FILE] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
}

#[test]
fn synced_artifacts_survive_a_crash_before_the_next_flush() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open_or_create(tmp.path()).unwrap();
    append_range(&store, 0..10);
    let reported = store.flush().unwrap();
    append_range(&store, 10..25);
    store.sync().unwrap();
    assert_eq!(store.flushed(), reported, "sync reports no new snapshot");
    append_range(&store, 25..30); // appended, never synced
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(tmp.path(), crashed.path());
    drop(store);

    let reopened = ArtifactStore::open(crashed.path()).unwrap();
    assert_eq!(reopened.recovery().unflushed_artifacts, 15);
    assert_eq!(reopened.count(), 25);
    check_reported(&reopened, &[reported]);
    let snap = reopened.flush().unwrap();
    assert_eq!(snap.count, 25);
    check_reported(&reopened, &[reported, snap]);
    assert!(verify_store(crashed.path()).unwrap().is_sound());
}

#[test]
fn concurrent_syncs_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(ArtifactStore::open_or_create(tmp.path()).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let store = std::sync::Arc::clone(&store);
            std::thread::spawn(move || {
                for k in 0..50u64 {
                    let i = t * 1000 + k;
                    let v: Vec<u8> = (0..24).map(|j| (i as u8).wrapping_add(j)).collect();
                    store.append(i as i32, &v, Some("n")).unwrap();
                    store.sync().unwrap();
                    if k % 17 == 0 {
                        store.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(tmp.path(), crashed.path());
    let reopened = ArtifactStore::open(crashed.path()).unwrap();
    assert_eq!(reopened.count(), 400);
    let mut nonces: Vec<i32> = (0..400)
        .map(|l| reopened.artifact(l).unwrap().nonce)
        .collect();
    nonces.sort_unstable();
    let mut want: Vec<i32> = (0..8)
        .flat_map(|t| (0..50).map(move |k| t * 1000 + k))
        .collect();
    want.sort_unstable();
    assert_eq!(nonces, want);
}

#[test]
fn sync_fsyncs_new_data_once_and_concurrent_syncs_share_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(ArtifactStore::open_or_create(tmp.path()).unwrap());
    assert_eq!(store.data_syncs(), 0);
    append_range(&store, 0..5);
    store.sync().unwrap();
    assert_eq!(store.data_syncs(), 1);
    store.sync().unwrap();
    assert_eq!(store.data_syncs(), 1, "nothing new: no fsync");
    let snap = store.flush().unwrap();
    assert_eq!(snap.count, 5);
    assert_eq!(
        store.data_syncs(),
        1,
        "the flush finds the data synced already"
    );
    append_range(&store, 5..6);
    store.flush().unwrap();
    assert_eq!(store.data_syncs(), 2, "a flush fsyncs what it reports");
    // Two writers append, then both sync: the first sync covers both, the second finds
    // its records durable and does not fsync again.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = [(6u64, 8u64), (8, 10)]
        .into_iter()
        .map(|(a, b)| {
            let (store, barrier) = (
                std::sync::Arc::clone(&store),
                std::sync::Arc::clone(&barrier),
            );
            std::thread::spawn(move || {
                append_range(&store, a..b);
                barrier.wait();
                store.sync().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.data_syncs(), 3, "one fsync for two concurrent syncs");
}
