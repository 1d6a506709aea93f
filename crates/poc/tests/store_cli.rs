//! `poc store ...` end to end.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poc_mmr::{Mmr, hash_leaf, verify_artifact};
use serde_json::Value;

mod common;

use common::{json_out, poc_stdin as poc, stderr};

fn vector(i: u8) -> Vec<u8> {
    (0..24)
        .map(|j| i.wrapping_mul(13).wrapping_add(j))
        .collect()
}

fn line(nonce: i64, v: &[u8]) -> String {
    format!(
        "{{\"nonce\": {nonce}, \"vector_b64\": \"{}\"}}\n",
        STANDARD.encode(v)
    )
}

fn dir_arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn append_info_root_proof_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stage-1");
    let d = dir_arg(&dir);
    let input: String = (0..5u8)
        .map(|i| line(i as i64 * 3 - 4, &vector(i)))
        .collect::<String>()
        + "\n";
    let v = json_out(&poc(
        &["store", "append", "--dir", d, "--node-id", "gpu-0"],
        &input,
    ));
    let leaves: Vec<_> = (0..5u8)
        .map(|i| hash_leaf(i as i32 * 3 - 4, &vector(i)))
        .collect();
    let mmr = Mmr::from_leaf_hashes(&leaves);
    assert_eq!(v["count"], 5);
    assert_eq!(v["root"], STANDARD.encode(mmr.root().unwrap()));

    // More artifacts from another node.
    let more: String = (5..8u8)
        .map(|i| line(i as i64 * 3 - 4, &vector(i)))
        .collect();
    let v = json_out(&poc(
        &["store", "append", "--dir", d, "--node-id", "gpu-1"],
        &more,
    ));
    assert_eq!(v["count"], 8);

    let info = json_out(&poc(&["store", "info", "--dir", d], ""));
    assert_eq!(info["count"], 8);
    assert_eq!(info["flushed_count"], 8);
    assert_eq!(
        info["per_node_counts"],
        serde_json::json!({"gpu-0": 5, "gpu-1": 3})
    );

    // Historical root.
    let r = json_out(&poc(&["store", "root", "--dir", d, "--count", "5"], ""));
    assert_eq!(r["root"], STANDARD.encode(mmr.root_at(5).unwrap().unwrap()));

    // A proof item in the proof API's shape verifies against the snapshot.
    let p = json_out(&poc(
        &["store", "proof", "--dir", d, "--leaf", "3", "--count", "5"],
        "",
    ));
    assert_eq!(p["leaf_index"], 3);
    assert_eq!(p["nonce_value"], 5);
    let vec_bytes = STANDARD
        .decode(p["vector_bytes"].as_str().unwrap())
        .unwrap();
    assert_eq!(vec_bytes, vector(3));
    let proof: Vec<[u8; 32]> = p["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            STANDARD
                .decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    let root = mmr.root_at(5).unwrap().unwrap();
    verify_artifact(&root, 5, 3, 5, &vec_bytes, &proof).unwrap();

    let report = json_out(&poc(&["store", "verify", "--dir", d], ""));
    assert_eq!(report["sound"], true);
    assert_eq!(report["artifacts"], 8);
    assert_eq!(report["problems"], serde_json::json!([]));

    // Queries beyond the flushed state are refused.
    let out = poc(&["store", "root", "--dir", d, "--count", "9"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("count 9 exceeds the 8 flushed artifacts"),
        "{}",
        stderr(&out)
    );
    let out = poc(
        &["store", "proof", "--dir", d, "--leaf", "5", "--count", "5"],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("leaf index 5 is not below 5"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_lines_are_reported_with_their_number_and_nothing_before_is_lost() {
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "expected a JSON object"),
        (
            r#"{"nonce": 9, "vector_b64": "%%%"}"#.into(),
            "not valid standard base64",
        ),
        (
            r#"{"nonce": 0, "vector_b64": "AAAA"}"#.into(),
            "nonce 0 is already stored",
        ),
        (
            r#"{"nonce": 4294967296, "vector_b64": "AAAA"}"#.into(),
            "does not fit in 32 bits",
        ),
        (
            r#"{"nonce": 9, "vector_b64": ""}"#.into(),
            "vector is empty",
        ),
        (
            r#"{"nonce": 9, "vector_b64": "AAAA", "extra": 1}"#.into(),
            "unknown field",
        ),
    ];
    for (bad, needle) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let d = dir_arg(tmp.path());
        let input = format!("{}{}\n{}", line(0, &vector(0)), bad, line(7, &vector(7)));
        let out = poc(&["store", "append", "--dir", d], &input);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = stderr(&out);
        assert!(err.contains("line 2"), "{bad}: {err}");
        assert!(err.contains(needle), "{bad}: {err}");
        assert!(
            err.contains("the 1 artifacts appended before that line are flushed"),
            "{err}"
        );
        // The first line was flushed and reported; the third was not appended.
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["count"], 1);
        let info = json_out(&poc(&["store", "info", "--dir", d], ""));
        assert_eq!(info["count"], 1);
    }
}

#[test]
fn verify_finds_corruption_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dir_arg(tmp.path());
    let input: String = (0..20u8).map(|i| line(i as i64, &vector(i))).collect();
    json_out(&poc(&["store", "append", "--dir", d], &input));
    let log = tmp.path().join("artifacts.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[300] ^= 0xff;
    std::fs::write(&log, &bytes).unwrap();
    let out = poc(&["store", "verify", "--dir", d], "");
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sound"], false);
    let problem = report["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("corrupt record at byte offset 289"),
        "{problem}"
    );
    // Commands that open the store refuse it with the offset.
    let out = poc(&["store", "root", "--dir", d, "--count", "1"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("corrupt at byte offset 289"),
        "{}",
        stderr(&out)
    );
    let out = poc(&["store", "info", "--dir", d], "");
    assert_eq!(out.status.code(), Some(2));
    // A missing store is a clear error.
    let out = poc(
        &["store", "info", "--dir", dir_arg(&tmp.path().join("nope"))],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no artifact store at"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bench_prints_every_figure() {
    let out = poc(&["store", "bench", "--artifacts", "3000"], "");
    let v = json_out(&out);
    for key in [
        "ingest_artifacts_per_second",
        "reopen_seconds",
        "reopen_rss_bytes",
        "proof_generate_verify_microseconds",
        "batch_200_proofs_milliseconds",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    assert_eq!(v["artifacts"], 3000);
}
