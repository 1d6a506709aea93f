//! `poc store ...`: operator tools for one stage's artifact store.

use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poc_mmr::{Hash, verify_artifact};
use poc_store::{ArtifactStore, Snapshot, verify_store};
use serde::Deserialize;
use serde_json::{Value, json};

use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Append artifacts read as JSON lines from stdin, flush, print the snapshot.
    ///
    /// Each line is `{"nonce": n, "vector_b64": "..."}` (nonce a 32-bit integer, vector
    /// standard base64); blank lines are skipped. The store is created if needed. On the
    /// first bad line (malformed JSON, bad base64, duplicate nonce, ...) appending stops:
    /// everything before it is flushed, the error is printed with its line number and
    /// the exit status is 2. Prints `{"count": n, "root": "<base64>"}` of the flushed
    /// snapshot.
    Append {
        /// The stage directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// ML node id the artifacts are attributed to (per-node counts).
        #[arg(long, value_name = "ID")]
        node_id: Option<String>,
    },
    /// Print `{count, flushed_count, root, per_node_counts, ...}` of a store (read-only).
    ///
    /// `count` includes complete artifacts written after the last flush; `root` and
    /// `per_node_counts` are those of the flushed snapshot, the only state ever reported.
    Info {
        /// The stage directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the base64 root of the snapshot of the first N artifacts (N ≤ flushed count).
    Root {
        /// The stage directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Snapshot size (a count committed earlier, for example).
        #[arg(long, value_name = "N")]
        count: u64,
    },
    /// Print one artifact with its inclusion proof against the snapshot of N artifacts,
    /// as an item of the proof API: `{leaf_index, nonce_value, vector_bytes, proof}`.
    Proof {
        /// The stage directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Leaf index (0-based order of appends).
        #[arg(long, value_name = "I")]
        leaf: u64,
        /// Snapshot size.
        #[arg(long, value_name = "N")]
        count: u64,
    },
    /// Check a store (fsck): re-read every record, verify checksums and record rules,
    /// rebuild the tree and compare the root with the metadata. Prints a JSON report.
    /// Exit status 0 when sound, 1 when not. Changes nothing.
    Verify {
        /// The stage directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Measure ingest, recovery, proof and memory figures on this machine.
    ///
    /// Creates a store of N artifacts (24-byte vectors) in a temporary directory (or
    /// --dir, which must not exist), then reports: ingest rate including hashing and the
    /// final fsync, reopen (recovery) time and resident memory of a fresh process holding
    /// the reopened store, single proof generate+verify time, and 200-leaf batch proof time.
    Bench {
        /// Number of artifacts.
        #[arg(long, default_value_t = 1_000_000, value_name = "N")]
        artifacts: u64,
        /// Where to build the store (default: a temporary directory, removed afterwards).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Internal: open a store and print the open time and resident memory (used by bench).
    #[command(hide = true)]
    OpenStats {
        #[arg(long)]
        dir: PathBuf,
    },
}

pub fn run(cmd: StoreCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StoreCommand::Append { dir, node_id } => append(&dir, node_id.as_deref()),
        StoreCommand::Info { dir } => info(&dir).map(|()| ExitCode::SUCCESS),
        StoreCommand::Root { dir, count } => {
            let store = open_read_only(&dir)?;
            let root = store.root_at(count)?;
            println!(
                "{}",
                json!({ "count": count, "root": root.map(|r| b64(&r)) })
            );
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Proof { dir, leaf, count } => {
            let store = open_read_only(&dir)?;
            let p = store.proof(leaf, count)?;
            println!(
                "{}",
                json!({
                    "leaf_index": p.leaf_index,
                    "nonce_value": p.nonce,
                    "vector_bytes": b64(&p.vector),
                    "proof": p.proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Verify { dir } => verify(&dir),
        StoreCommand::Bench { artifacts, dir } => {
            bench(artifacts, dir.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        StoreCommand::OpenStats { dir } => {
            let t = Instant::now();
            let store = ArtifactStore::open(&dir)?;
            let open_seconds = t.elapsed().as_secs_f64();
            crate::release_free_memory();
            println!(
                "{}",
                json!({ "open_seconds": open_seconds, "count": store.count(), "rss_bytes": rss_bytes() })
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn snapshot_json(s: Snapshot) -> Value {
    json!({ "count": s.count, "root": s.root.map(|r| b64(&r)) })
}

fn open_read_only(dir: &Path) -> anyhow::Result<ArtifactStore> {
    ArtifactStore::open_read_only(dir)
        .with_context(|| format!("cannot open the artifact store {}", dir.display()))
}

/// One input line of `poc store append`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    nonce: i64,
    vector_b64: String,
}

fn append(dir: &Path, node_id: Option<&str>) -> anyhow::Result<ExitCode> {
    let store = ArtifactStore::open_or_create(dir)
        .with_context(|| format!("cannot open the artifact store {}", dir.display()))?;
    let rec = store.recovery();
    if rec.truncated_bytes > 0 {
        eprintln!(
            "recovered: cut off a torn tail of {} bytes written after the last flush",
            rec.truncated_bytes
        );
    }
    let stdin = std::io::stdin();
    let mut appended = 0u64;
    let mut failure: Option<anyhow::Error> = None;
    for (i, line) in stdin.lock().lines().enumerate() {
        let number = i + 1;
        let result = line
            .context("cannot read stdin")
            .and_then(|line| append_line(&store, &line, node_id))
            .with_context(|| format!("line {number}"));
        match result {
            Ok(true) => appended += 1,
            Ok(false) => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let snap = store.flush().context("flush failed")?;
    println!("{}", snapshot_json(snap));
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e.context(format!(
            "stopped; the {appended} artifacts appended before that line are flushed"
        ))),
    }
}

/// Appends one JSON line; `Ok(false)` for a blank line.
fn append_line(store: &ArtifactStore, line: &str, node_id: Option<&str>) -> anyhow::Result<bool> {
    if line.trim().is_empty() {
        return Ok(false);
    }
    let l: Line = serde_json::from_str(line)
        .context(r#"expected a JSON object {"nonce": <int32>, "vector_b64": "<base64>"}"#)?;
    let nonce = i32::try_from(l.nonce)
        .with_context(|| format!("nonce {} does not fit in 32 bits", l.nonce))?;
    let vector = STANDARD
        .decode(&l.vector_b64)
        .with_context(|| format!("vector_b64 of nonce {nonce} is not valid standard base64"))?;
    store.append(nonce, &vector, node_id)?;
    Ok(true)
}

fn info(dir: &Path) -> anyhow::Result<()> {
    let r = verify_store(dir)
        .with_context(|| format!("cannot read the artifact store {}", dir.display()))?;
    if let Some(problem) = r.problems.first() {
        bail!(
            "{problem} (run `poc store verify --dir {}` for the full report)",
            dir.display()
        );
    }
    let meta = r.meta.expect("a sound store has metadata");
    println!(
        "{}",
        json!({
            "count": r.artifacts,
            "flushed_count": meta.flushed_count,
            "root": meta.root.map(|h| b64(&h)),
            "per_node_counts": r.flushed_node_counts,
            "log_bytes": r.log_bytes,
            "unflushed_tail": r.tail,
        })
    );
    Ok(())
}

fn verify(dir: &Path) -> anyhow::Result<ExitCode> {
    let r = verify_store(dir)
        .with_context(|| format!("cannot read the artifact store {}", dir.display()))?;
    let out = json!({
        "sound": r.is_sound(),
        "dir": r.dir,
        "log_bytes": r.log_bytes,
        "valid_bytes": r.valid_bytes,
        "artifacts": r.artifacts,
        "flushed_count": r.meta.map(|m| m.flushed_count),
        "flushed_bytes": r.meta.map(|m| m.flushed_bytes),
        "recorded_root": r.meta.and_then(|m| m.root).map(|h| b64(&h)),
        "rebuilt_root": r.rebuilt_root.map(|h| b64(&h)),
        "unflushed_artifacts": r.unflushed_artifacts,
        "unflushed_tail": r.tail,
        "per_node_counts": r.flushed_node_counts,
        "problems": r.problems,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if r.is_sound() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Resident set size of this process (Linux), in bytes.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn bench_vector(i: u64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v[8..16].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    v
}

fn bench(n: u64, dir: Option<&Path>) -> anyhow::Result<()> {
    if n == 0 || n > poc_mmr::MAX_LEAF_COUNT {
        bail!(
            "--artifacts must be between 1 and {}",
            poc_mmr::MAX_LEAF_COUNT
        );
    }
    let (dir, temporary) = match dir {
        Some(d) => {
            if d.exists() {
                bail!(
                    "{} exists; give a new directory (the bench creates it)",
                    d.display()
                );
            }
            (d.to_owned(), false)
        }
        None => (
            std::env::temp_dir().join(format!("poc-store-bench-{}", std::process::id())),
            true,
        ),
    };
    let result = bench_in(n, &dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn bench_in(n: u64, dir: &Path) -> anyhow::Result<()> {
    eprintln!("building a store of {n} artifacts in {} ...", dir.display());
    let vectors: Vec<[u8; 24]> = (0..n).map(bench_vector).collect();
    let store = ArtifactStore::open_or_create(dir)?;
    let t = Instant::now();
    const BATCH: u64 = 1000;
    for start in (0..n).step_by(BATCH as usize) {
        let items: Vec<(i32, &[u8])> = (start..(start + BATCH).min(n))
            .map(|i| (i as i32, &vectors[i as usize][..]))
            .collect();
        for r in store.append_batch(&items, Some("bench-node")) {
            r?;
        }
    }
    let appended = t.elapsed().as_secs_f64();
    let snap = store.flush()?;
    let ingest = t.elapsed().as_secs_f64();
    drop(store);
    drop(vectors);

    eprintln!("reopening in a fresh process ...");
    let exe = std::env::current_exe().context("cannot find the poc executable")?;
    let out = std::process::Command::new(exe)
        .args(["store", "open-stats", "--dir"])
        .arg(dir)
        .output()
        .context("cannot run the reopen measurement")?;
    if !out.status.success() {
        bail!("reopen failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let reopen: Value = serde_json::from_slice(&out.stdout)?;

    eprintln!("measuring proofs ...");
    let store = ArtifactStore::open_read_only(dir)?;
    let root: Hash = snap.root.expect("n > 0");
    // Warm pass over the same leaves first (page cache and memory map faulted in), then
    // the median of five timed passes.
    let rounds = 20_000u64;
    let mut passes = Vec::new();
    for pass in 0..6 {
        let mut leaf = 0u64;
        let t = Instant::now();
        for _ in 0..rounds {
            leaf = (leaf + 7919) % n;
            let p = store.proof(leaf, n)?;
            verify_artifact(&root, n, leaf, p.nonce, &p.vector, &p.proof)?;
        }
        if pass > 0 {
            passes.push(t.elapsed().as_secs_f64() / rounds as f64);
        }
    }
    passes.sort_by(f64::total_cmp);
    let per_proof = passes[passes.len() / 2];
    let batches = 200u64;
    let t = Instant::now();
    for b in 0..batches {
        let leaves: Vec<u64> = (0..200u64).map(|k| (k * 4_999 + b * 17) % n).collect();
        std::hint::black_box(store.proofs(&leaves, n)?);
    }
    let per_batch = t.elapsed().as_secs_f64() / batches as f64;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "artifacts": n,
            "vector_bytes": 24,
            "ingest_artifacts_per_second": (n as f64 / ingest).round(),
            "ingest_seconds": ingest,
            "flush_seconds": ingest - appended,
            "reopen_seconds": reopen["open_seconds"],
            "reopen_rss_bytes": reopen["rss_bytes"],
            "proof_generate_verify_microseconds": per_proof * 1e6,
            "batch_200_proofs_milliseconds": per_batch * 1e3,
            "root": b64(&root),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        }))?
    );
    Ok(())
}
