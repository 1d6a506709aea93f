//! End-to-end tests of the `poc` command line.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

mod common;

use common::{json_out, poc, stderr};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn example(name: &str) -> String {
    examples().join(name).to_str().unwrap().to_owned()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

fn compare(computed: &str, received: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "artifacts",
        "compare",
        "--computed",
        computed,
        "--received",
        received,
    ];
    args.extend_from_slice(extra);
    poc(&args)
}

#[test]
fn honest_participant_passes() {
    let out = compare(
        &example("computed.json"),
        &example("received_honest.json"),
        &[],
    );
    let v = json_out(&out);
    assert_eq!(v["n_total"], 16);
    assert_eq!(v["n_mismatch"], 0);
    assert_eq!(v["mismatch_nonces"], serde_json::json!([]));
    assert_eq!(v["p_value"], 1.0);
    assert_eq!(v["fraud_detected"], false);
    // Exactly the ML node's validation fields, in its order.
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "n_total",
            "n_mismatch",
            "mismatch_nonces",
            "p_value",
            "fraud_detected"
        ]
    );
}

#[test]
fn cheater_is_detected_and_exit_status_follows_the_flag() {
    let out = compare(
        &example("computed.json"),
        &example("received_cheater.json"),
        &[],
    );
    let v = json_out(&out);
    assert_eq!(v["n_mismatch"], 3);
    assert_eq!(v["mismatch_nonces"], serde_json::json!([3, 8, 13]));
    assert_eq!(v["fraud_detected"], true);
    let p = v["p_value"].as_f64().unwrap();
    assert!(p < 1e-6 && p > 0.0, "{p}");

    let out = compare(
        &example("computed.json"),
        &example("received_cheater.json"),
        &["--fail-on-fraud"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout_json_any(&out)["fraud_detected"], true);
}

fn stdout_json_any(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn thresholds_change_the_verdict() {
    // With a huge distance threshold nothing mismatches.
    let out = compare(
        &example("computed.json"),
        &example("received_cheater.json"),
        &["--dist-threshold", "10"],
    );
    assert_eq!(json_out(&out)["n_mismatch"], 0);
    // With p_mismatch 0.5 three mismatches of 16 are not fraud.
    let out = compare(
        &example("computed.json"),
        &example("received_cheater.json"),
        &["--p-mismatch", "0.5"],
    );
    let v = json_out(&out);
    assert_eq!(v["n_mismatch"], 3);
    assert_eq!(v["fraud_detected"], false);
    // The chain's name for the cutoff is accepted as an alias.
    let out = compare(
        &example("computed.json"),
        &example("received_cheater.json"),
        &["--p-value-threshold", "1e-9"],
    );
    assert_eq!(json_out(&out)["fraud_detected"], false);
}

#[test]
fn received_defects_count_as_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let computed = write(
        &dir,
        "c.json",
        r#"{"artifacts": [{"nonce": 1, "vector_b64": "ADwAPA=="}, {"nonce": 2, "vector_b64": "ADwAPA=="},
                          {"nonce": 3, "vector_b64": "ADwAPA=="}, {"nonce": 4, "vector_b64": "ADwAPA=="}]}"#,
    );
    // 1: fine; 2: not base64; 3: +Inf; 4: wrong length; 5: never recomputed.
    let received = write(
        &dir,
        "r.json",
        r#"{"artifacts": [{"nonce": 1, "vector_b64": "ADwAPA=="}, {"nonce": 2, "vector_b64": "%%%"},
                          {"nonce": 3, "vector_b64": "AHwAPA=="}, {"nonce": 4, "vector_b64": "ADw="},
                          {"nonce": 5, "vector_b64": "ADwAPA=="}]}"#,
    );
    let v = json_out(&compare(&computed, &received, &[]));
    assert_eq!(v["n_total"], 5);
    assert_eq!(v["mismatch_nonces"], serde_json::json!([2, 3, 4]));
}

#[test]
fn malformed_inputs_exit_with_status_2_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let good = example("computed.json");
    let cases: Vec<(String, &str)> = vec![
        (
            write(&dir, "a.json", "{not json"),
            "is not an artifact file",
        ),
        (
            write(&dir, "b.json", r#"{"artefacts": []}"#),
            "missing field `artifacts`",
        ),
        (
            write(
                &dir,
                "c.json",
                r#"{"artifacts": [{"nonce": "x", "vector_b64": "ADw="}]}"#,
            ),
            "is not an artifact file",
        ),
        (
            write(&dir, "d.json", r#"{"artifacts": [{"nonce": 1}]}"#),
            "vector_b64",
        ),
        (
            dir.path().join("missing.json").to_str().unwrap().to_owned(),
            "cannot read artifact file",
        ),
    ];
    for (bad, needle) in &cases {
        for (computed, received) in [(bad.as_str(), good.as_str()), (good.as_str(), bad.as_str())] {
            let out = compare(computed, received, &[]);
            assert_eq!(out.status.code(), Some(2), "{bad}");
            assert!(out.stdout.is_empty());
            assert!(stderr(&out).contains(needle), "{bad}: {}", stderr(&out));
        }
    }
    // The validator's own vectors must be valid.
    let c = write(
        &dir,
        "e.json",
        r#"{"artifacts": [{"nonce": 7, "vector_b64": "AHw="}]}"#,
    );
    let out = compare(&c, &good, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nonce 7") && stderr(&out).contains("not finite"),
        "{}",
        stderr(&out)
    );
    // Duplicate nonces are ambiguous on either side.
    let d = write(
        &dir,
        "f.json",
        r#"{"artifacts": [{"nonce": 1, "vector_b64": "ADw="}, {"nonce": 1, "vector_b64": "ADw="}]}"#,
    );
    for (computed, received) in [(d.as_str(), good.as_str()), (good.as_str(), d.as_str())] {
        let out = compare(computed, received, &[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("nonce 1 appears more than once"),
            "{}",
            stderr(&out)
        );
    }
    // Only f16 little-endian exists.
    let e = write(
        &dir,
        "g.json",
        r#"{"artifacts": [], "encoding": {"dtype": "bf16", "k_dim": 12, "endian": "le"}}"#,
    );
    let out = compare(&e, &good, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unsupported encoding"),
        "{}",
        stderr(&out)
    );
    // Out-of-range statistics options.
    let out = compare(&good, &good, &["--p-mismatch", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("p_mismatch"), "{}", stderr(&out));
    let out = compare(&good, &good, &["--dist-threshold", "abc"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn project_reproduces_the_example_artifacts() {
    let out = poc(&[
        "artifacts",
        "project",
        "--block-hash",
        "TEST_BLOCK",
        "--public-key",
        "test_pub_keys",
        "--hidden",
        &example("hidden_states.json"),
    ]);
    let got = json_out(&out);
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(example("computed.json")).unwrap()).unwrap();
    assert_eq!(got, want);
    assert_eq!(
        got["encoding"],
        serde_json::json!({"dtype": "f16", "k_dim": 12, "endian": "le"})
    );
}

#[test]
fn project_matches_the_spec_end_to_end_vector() {
    let dir = tempfile::tempdir().unwrap();
    let ramp: Vec<String> = (1..=5120).map(|d| d.to_string()).collect();
    let hidden = write(
        &dir,
        "h.json",
        &format!(
            r#"{{"hidden_states": [{{"nonce": 0, "values": [{}]}}]}}"#,
            ramp.join(",")
        ),
    );
    let out = poc(&[
        "artifacts",
        "project",
        "--block-hash",
        "TEST_BLOCK",
        "--public-key",
        "test_pub_keys",
        "--hidden",
        &hidden,
    ]);
    let v = json_out(&out);
    assert_eq!(
        v["artifacts"][0]["vector_b64"],
        "kKyEuIe0YqdZNT+tezi3NPEyeqB0sFau"
    );
}

#[test]
fn project_rejects_bad_hidden_states() {
    let dir = tempfile::tempdir().unwrap();
    let ragged = write(
        &dir,
        "r.json",
        r#"{"hidden_states": [{"nonce": 0, "values": [1,2,3,4]}, {"nonce": 1, "values": [1,2,3]}]}"#,
    );
    let out = poc(&[
        "artifacts",
        "project",
        "--block-hash",
        "b",
        "--public-key",
        "k",
        "--hidden",
        &ragged,
        "--k-dim",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nonce 1 has 3 values"),
        "{}",
        stderr(&out)
    );
    let small = write(
        &dir,
        "s.json",
        r#"{"hidden_states": [{"nonce": 0, "values": [1,2,3]}]}"#,
    );
    let out = poc(&[
        "artifacts",
        "project",
        "--block-hash",
        "b",
        "--public-key",
        "k",
        "--hidden",
        &small,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("k_dim 12 exceeds the hidden size 3"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rng_commands_print_the_spec_values() {
    let v = json_out(&poc(&["rng", "seed", "TEST_BLOCK_test_pub_keys_nonce0"]));
    assert_eq!(v["seed"], 1_589_641_989u32);
    let v = json_out(&poc(&[
        "rng",
        "pick",
        "--block-hash",
        "TEST_BLOCK",
        "--public-key",
        "test_pub_keys",
        "--nonce",
        "0",
        "--hidden",
        "5120",
    ]));
    assert_eq!(
        v["indices"],
        serde_json::json!([
            58, 609, 1639, 2112, 2529, 3159, 3879, 4280, 4315, 4717, 5021, 427
        ])
    );
    let v = json_out(&poc(&[
        "rng",
        "inputs",
        "--block-hash",
        "TEST_BLOCK",
        "--public-key",
        "test_pub_keys",
        "--nonce",
        "0",
        "--seq-len",
        "128",
        "--hidden",
        "5120",
        "--offset",
        "327680",
        "--count",
        "1",
    ]));
    assert_eq!(v["seed"], 1_589_641_989u32);
    let x = v["values"][0].as_f64().unwrap();
    assert!((x - 1.204_049_7).abs() < 1e-6, "{x}");
    let v = json_out(&poc(&[
        "rng",
        "householder",
        "--block-hash",
        "TEST_BLOCK",
        "--layer",
        "0",
        "--hidden",
        "5120",
        "--count",
        "1",
    ]));
    assert!((v["values"][0].as_f64().unwrap() - 0.010_735_31).abs() < 1e-8);
    let out = poc(&[
        "rng",
        "inputs",
        "--block-hash",
        "b",
        "--public-key",
        "k",
        "--nonce",
        "0",
        "--seq-len",
        "4",
        "--hidden",
        "4",
        "--offset",
        "10",
        "--count",
        "8",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("runs past the 16 input values"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_explains_the_commands() {
    let out = poc(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["artifacts", "rng"] {
        assert!(text.contains(word), "{text}");
    }
    let out = poc(&["artifacts", "compare", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--computed",
        "--received",
        "--dist-threshold",
        "--p-mismatch",
        "--fraud-threshold",
        "Exit status",
    ] {
        assert!(text.contains(word), "{word}: {text}");
    }
    // A usage error is status 2 as well.
    assert_eq!(poc(&["artifacts", "compare"]).status.code(), Some(2));
}
