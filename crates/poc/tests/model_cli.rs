//! `poc model ...` and `poc artifacts compute|bench` end to end on the tiny presets.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

mod common;

use common::{json_out, poc, stderr};

/// Writes a preset checkpoint into `dir`.
fn init(preset: &str, dir: &Path) {
    json_out(&poc(&[
        "model",
        "init",
        "--preset",
        preset,
        "--out",
        s(dir),
    ]));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn compute(model: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "artifacts",
        "compute",
        "--model",
        s(model),
        "--block-hash",
        "TEST_BLOCK",
        "--public-key",
        "test_pub_keys",
        "--seq-len",
        "16",
    ];
    args.extend_from_slice(extra);
    poc(&args)
}

#[test]
fn init_info_compute_compare_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("tiny-moe");
    let v = json_out(&poc(&[
        "model",
        "init",
        "--preset",
        "tiny-moe",
        "--out",
        s(&m),
    ]));
    assert_eq!(v["parameters"], 1_119_616);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(m.join(f).exists(), "{f}");
    }
    let info = json_out(&poc(&["model", "info", s(&m)]));
    assert_eq!(info["architecture"], "Qwen3MoeForCausalLM");
    assert_eq!(info["experts"]["count"], 8);
    assert_eq!(info["dtype"], "bfloat16");

    // Compute: explicit list and range give the same vectors for the same nonces.
    let a = json_out(&compute(&m, &["--nonces", "0,1,2,3"]));
    assert_eq!(
        a["encoding"],
        serde_json::json!({"dtype": "f16", "k_dim": 12, "endian": "le"})
    );
    assert_eq!(a["artifacts"].as_array().unwrap().len(), 4);
    let b = json_out(&compute(
        &m,
        &["--nonce-range", "0..4", "--batch-size", "3"],
    ));
    let computed = tmp.path().join("a.json");
    let received = tmp.path().join("b.json");
    std::fs::write(&computed, a.to_string()).unwrap();
    std::fs::write(&received, b.to_string()).unwrap();
    // Different batch composition: the same within bf16 noise.
    let v = json_out(&poc(&[
        "artifacts",
        "compare",
        "--computed",
        s(&computed),
        "--received",
        s(&received),
        "--dist-threshold",
        "0.05",
    ]));
    assert_eq!(v["n_mismatch"], 0);

    // The 4-bit-rounded copy is caught by the validator's test; the FP8 copy loads.
    let cheap = tmp.path().join("cheap");
    json_out(&poc(&[
        "model",
        "quantize",
        "--int4-rounded",
        s(&m),
        s(&cheap),
    ]));
    let c = json_out(&compute(&cheap, &["--nonce-range", "0..32"]));
    let honest = json_out(&compute(&m, &["--nonce-range", "0..32"]));
    std::fs::write(&computed, honest.to_string()).unwrap();
    std::fs::write(&received, c.to_string()).unwrap();
    let v = json_out(&poc(&[
        "artifacts",
        "compare",
        "--computed",
        s(&computed),
        "--received",
        s(&received),
        "--dist-threshold",
        "0.1",
        "--p-mismatch",
        "0.1",
        "--fraud-threshold",
        "0.05",
    ]));
    assert_eq!(v["fraud_detected"], true, "{v}");
    let fp8 = tmp.path().join("fp8");
    let q = json_out(&poc(&["model", "quantize", "--fp8", s(&m), s(&fp8)]));
    assert_eq!(q["format"], "fp8");
    let info = json_out(&poc(&["model", "info", s(&fp8)]));
    assert_eq!(info["fp8_block"], serde_json::json!([128, 128]));
    assert!(
        info["stored_dtypes"]["F8_E4M3"]["tensors"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        json_out(&compute(&fp8, &["--nonces", "1"]))["artifacts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Bench prints its figures.
    let v = json_out(&poc(&[
        "artifacts",
        "bench",
        "--model",
        s(&m),
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--nonces",
        "4",
        "--json",
    ]));
    assert!(v["nonces_per_second"].as_f64().unwrap() > 0.0);
    assert!(v["tokens_per_second"].as_f64().unwrap() > 0.0);
    let nps = v["nonces_per_second"].as_f64().unwrap();
    assert!((v["nonces_per_minute"].as_f64().unwrap() - 60.0 * nps).abs() < 1e-6 * nps);
    assert_eq!(
        v["layer_tokens_per_second"].as_f64().unwrap(),
        v["tokens_per_second"].as_f64().unwrap() * 4.0
    );
    assert!(v["flops_per_token"].as_f64().unwrap() > 0.0);
    assert!(v["peak_share"].is_null(), "no peak known for a CPU");
    // Without --json: a readable summary.
    let text = poc(&[
        "artifacts",
        "bench",
        "--model",
        s(&m),
        "--seq-len",
        "8",
        "--batch-size",
        "2",
        "--nonces",
        "2",
        "--peak-tflops",
        "1",
    ]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("layer-tokens/s") && text.contains("% of 1 peak"),
        "{text}"
    );
}

#[test]
fn devices_presets_in_memory_and_the_memory_planner() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("moe");
    init("tiny-moe", &m);
    let compute = |extra: &[&str]| {
        let mut args = vec![
            "artifacts",
            "compute",
            "--block-hash",
            "B",
            "--public-key",
            "K",
            "--seq-len",
            "16",
            "--nonce-range",
            "0..6",
            "--batch-size",
            "2",
            "--dtype",
            "f32",
        ];
        args.extend_from_slice(extra);
        json_out(&poc(&args))["artifacts"].clone()
    };
    // The same artifacts from the files, from the preset generated in memory, and over a
    // two-stage CPU pipeline.
    let files = compute(&["--model", s(&m)]);
    assert_eq!(files.as_array().unwrap().len(), 6);
    assert_eq!(compute(&["--preset", "tiny-moe"]), files);
    assert_eq!(compute(&["--model", s(&m), "--devices", "cpu,cpu"]), files);
    // A GPU in a CPU build, or a bad device name, is explained.
    for (dev, msg) in [
        ("cuda:1", "no CUDA support"),
        ("tpu", "unknown device \"tpu\""),
    ] {
        let out = poc(&[
            "artifacts",
            "compute",
            "--model",
            s(&m),
            "--block-hash",
            "B",
            "--public-key",
            "K",
            "--seq-len",
            "8",
            "--nonces",
            "1",
            "--devices",
            dev,
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{dev}: {err}");
    }

    // The planner at production size: the 235B FP8 model fits two H200s, not one.
    let plan = |n: &str| {
        json_out(&poc(&[
            "model",
            "plan",
            "--preset",
            "qwen3-235b-a22b-fp8",
            "--devices",
            n,
            "--device-memory",
            "141GiB",
            "--json",
        ]))
    };
    let two = plan("2");
    assert_eq!(two["fits"], true, "{two}");
    let per = two["per_device"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    assert_eq!(per[0]["layers"][0], 0);
    assert_eq!(per[0]["layers"][1], per[1]["layers"][0]);
    assert_eq!(per[1]["layers"][1], 94);
    assert!(per[0]["weight_bytes"].as_u64().unwrap() > 100 << 30);
    let one = plan("1");
    assert_eq!(one["fits"], false);
    assert!(one["reason"].as_str().unwrap().contains("device 0 needs"));
    // From a model directory too, with a readable summary by default.
    let out = poc(&["model", "plan", "--model", s(&m), "--devices", "2"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("fits on 2"), "{text}");
    assert!(text.contains("device 1: layers"), "{text}");
}

#[test]
fn bad_requests_and_models_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("d");
    init("tiny-dense", &m);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--nonces", "1", "--k-dim", "0"],
            "k_dim 0 must be between 1 and the hidden size 128",
        ),
        (vec!["--nonce-range", "5..2"], "END is below START"),
        (vec!["--nonce-range", "abc"], "START..END"),
        (vec!["--nonces", "1,1"], "nonce 1 is listed twice"),
    ];
    for (extra, needle) in cases {
        let out = compute(&m, &extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
    }
    // Neither --nonces nor --nonce-range.
    assert_eq!(compute(&m, &[]).status.code(), Some(2));
    let out = poc(&[
        "artifacts",
        "compute",
        "--model",
        s(&tmp.path().join("nope")),
        "--block-hash",
        "b",
        "--public-key",
        "k",
        "--seq-len",
        "4",
        "--nonces",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot open the checkpoint"),
        "{}",
        stderr(&out)
    );
    let out = poc(&["model", "quantize", s(&m), s(&tmp.path().join("x"))]);
    assert_eq!(out.status.code(), Some(2), "a format is required");
}

#[test]
fn mlnode_bench_measures_chat_load_under_both_policies() {
    let dir = tempfile::tempdir().unwrap();
    init("tiny-moe", dir.path());
    let out = poc(&[
        "mlnode",
        "--model",
        s(dir.path()),
        "--bench",
        "--bench-seq-len",
        "16",
        "--bench-batch-size",
        "4",
        "--bench-seconds",
        "0.5",
        "--bench-chats",
        "0,2",
        "--bench-chat-tokens",
        "4",
    ]);
    let v = json_out(&out);
    let rows = v["load"].as_array().unwrap();
    // Per policy: PoC alone, two chats beside PoC, the same two chats alone.
    let key = |r: &Value| {
        (
            r["policy"].as_str().unwrap().to_owned(),
            r["chats"].as_u64().unwrap(),
            r["poc"].as_bool().unwrap(),
        )
    };
    let keys: Vec<_> = rows.iter().map(key).collect();
    let want: Vec<_> = ["mixed", "chat-priority"]
        .iter()
        .flat_map(|p| {
            [
                (p.to_string(), 0, true),
                (p.to_string(), 2, true),
                (p.to_string(), 2, false),
            ]
        })
        .collect();
    assert_eq!(keys, want);
    for r in rows {
        let (policy, chats, poc) = key(r);
        if poc && (chats == 0 || policy == "mixed") {
            assert!(r["nonces_per_second"].as_f64().unwrap() > 0.0, "{r}");
        }
        if chats > 0 {
            assert!(r["chat_tokens_per_second"].as_f64().unwrap() > 0.0, "{r}");
        }
        if !poc {
            assert_eq!(r["nonces_per_second"].as_f64().unwrap(), 0.0, "{r}");
        }
    }
    // Under mixed, PoC and chat shared forwards.
    assert!(
        rows[1]["mixed_step_share"].as_f64().unwrap() > 0.0,
        "{}",
        rows[1]
    );
    assert!(
        stderr(&out).contains("| policy | chats | PoC | nonces/s |"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn mlnode_refuses_a_poc_share_outside_zero_to_one() {
    // Checked before anything is loaded.
    let out = poc(&["mlnode", "--model", "/nonexistent", "--poc-share", "1.5"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--poc-share 1.5 must be a fraction between 0 and 1"),
        "{}",
        stderr(&out)
    );
}
