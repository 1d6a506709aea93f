//! `poc calibrate` end to end on `tiny-moe`: the report's structure, cheaters above the
//! honest mismatch rate, the plots, artifact files fed back in, and bad input.

use std::path::Path;

use serde_json::Value;

mod common;

use common::{poc, stderr};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn report(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()
}

#[test]
fn calibrate_reports_thresholds_power_and_plots_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-moe");
    let r = poc(&[
        "model",
        "init",
        "--preset",
        "tiny-moe",
        "--out",
        path(&model),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let out = dir.path().join("calib");
    let cheaters = [
        "int4",
        "perturb=3e-1",
        "swap-expert",
        "no-reflect",
        "random",
    ];
    let variants = format!("f32,bf16,f16,batch=1,{}", cheaters.join(","));
    let r = poc(&[
        "calibrate",
        "--model",
        path(&model),
        "--variants",
        &variants,
        "--nonces",
        "64",
        "--trials",
        "500",
        "--out",
        path(&out),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let j = report(&out);
    let a = &j["analysis"];
    assert_eq!(a["reference"], "f32");
    assert_eq!(a["nonces"], 64);
    let rows = a["variants"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "every variant but the reference");
    let rate = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {rows:?}"))["mismatch_rate"]
            .as_f64()
            .unwrap()
    };
    let honest = a["threshold"]["honest_rate"].as_f64().unwrap();
    for c in cheaters {
        assert!(rate(c) > honest, "{c}: {} vs honest {honest}", rate(c));
    }
    assert_eq!(rate("random"), 1.0);
    assert_eq!(
        rate("batch=1"),
        0.0,
        "batch composition does not move CPU f32 results"
    );
    let th = a["threshold"]["value"].as_f64().unwrap();
    assert!(th > 0.0 && th.is_finite());
    for key in ["p50", "p90", "p98", "p99_9", "max", "mean"] {
        assert!(rows[0]["summary"][key].is_number(), "{key}");
    }
    // Power: a row per cheater and fraction, one cell per sample size; the vote and the
    // phase length at the measured rate.
    let cheats = a["power"]["cheaters"].as_array().unwrap();
    assert_eq!(cheats.len(), cheaters.len() * 5);
    assert_eq!(cheats[0]["by_n"].as_array().unwrap().len(), 5);
    assert_eq!(a["votes"]["weight_sets"].as_array().unwrap().len(), 2);
    assert!(
        !a["votes"]["cheater_accepted"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(a["phase"]["min_stage_blocks"].as_u64().unwrap() >= 1);
    assert!(
        a["phase"]["rate_source"]
            .as_str()
            .unwrap()
            .starts_with("measured")
    );
    for p in j["plots"].as_array().unwrap() {
        let svg = std::fs::read_to_string(out.join(p.as_str().unwrap())).unwrap();
        assert!(svg.starts_with("<svg"), "{p}");
    }
    assert!(out.join("plots/hist-int4.svg").exists());
    assert!(out.join("plots/power-vs-stage-length.svg").exists());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for s in [
        "## Threshold",
        "## One validator",
        "## The weighted vote",
        "## Phase length",
        "0.1737",
    ] {
        assert!(md.contains(s), "{s}");
    }

    // The same sets fed back as files, with no model: the same threshold; no rate, so no
    // phase length unless one is given.
    let art = out.join("artifacts");
    let file = |n: &str| format!("{n}={}", art.join(format!("{n}.json")).display());
    let again = dir.path().join("again");
    let r = poc(&[
        "calibrate",
        "--variants",
        "",
        "--artifacts",
        &file("f32"),
        "--artifacts",
        &file("bf16"),
        "--artifacts",
        &file("f16"),
        "--cheater-artifacts",
        &file("int4"),
        "--trials",
        "100",
        "--out",
        path(&again),
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let b = report(&again);
    assert!(b["analysis"]["phase"].is_null());
    let int4 = b["analysis"]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "int4")
        .unwrap()["mismatch_rate"]
        .clone();
    assert!(int4.as_f64().unwrap() > b["analysis"]["threshold"]["honest_rate"].as_f64().unwrap());

    // Bad input, each with a clear error.
    let fail = |args: &[&str], want: &str| {
        let r = poc(args);
        assert!(!r.status.success(), "{args:?} succeeded");
        let e = stderr(&r);
        assert!(e.contains(want), "{args:?}: {e}");
    };
    let o = dir.path().join("bad");
    fail(
        &[
            "calibrate",
            "--model",
            path(&model),
            "--variants",
            "f32,int3",
            "--out",
            path(&o),
        ],
        "unknown variant",
    );
    // A set with one nonce missing.
    let mut short: Value =
        serde_json::from_str(&std::fs::read_to_string(art.join("bf16.json")).unwrap()).unwrap();
    short["artifacts"].as_array_mut().unwrap().pop();
    let short_path = dir.path().join("short.json");
    std::fs::write(&short_path, short.to_string()).unwrap();
    // Only files: the reference and one other set.
    let files_only = |other: &Path, want: &str| {
        let arg = format!("gpu={}", other.display());
        fail(
            &[
                "calibrate",
                "--variants",
                "",
                "--artifacts",
                &file("f32"),
                "--artifacts",
                &arg,
                "--out",
                path(&o),
            ],
            want,
        )
    };
    files_only(&short_path, "nonces differ");
    // A NaN vector (FP16 0x7e00 twelve times).
    let nan = serde_json::json!({"artifacts": [{"nonce": 0, "vector_b64": "AH4AfgB+AH4AfgB+AH4AfgB+AH4AfgB+"}]});
    let nan_path = dir.path().join("nan.json");
    std::fs::write(&nan_path, nan.to_string()).unwrap();
    files_only(&nan_path, "not finite");
    fail(
        &[
            "calibrate",
            "--variants",
            "int4",
            "--reference",
            "f32",
            "--out",
            path(&o),
        ],
        "not among the variants",
    );
}
