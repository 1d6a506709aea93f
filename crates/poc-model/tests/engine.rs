//! The PoC engine: conformance through the model's code path, agreement with transformers,
//! determinism, batch invariance, seed sensitivity, honest-vs-cheaper-model separation,
//! FP8 loading, malformed checkpoints, and generation.

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use half::bf16;
use poc_core::InputRng;
use poc_core::artifact::{decode_vector_f32, encode_f16};
use poc_core::householder::{householder_vector, reflect_bf16};
use poc_core::inputs::generate_inputs;
use poc_model::generate::{FinishReason, SamplingParams, generate};
use poc_model::poc::{project_nonce, reflect};
use poc_model::presets::{Preset, write_preset};
use poc_model::quantize::{quantize_fp8, round_4bit};
use poc_model::{Checkpoint, KvCache, ModelError, NonceVector, PocEngine, PocParams, Qwen3Model};
use tempfile::TempDir;

use common::{dist, f32s};

fn preset(p: Preset) -> TempDir {
    let d = tempfile::tempdir().unwrap();
    write_preset(p, d.path()).unwrap();
    d
}

fn load(dir: &Path, dtype: DType) -> Arc<Qwen3Model> {
    Arc::new(Qwen3Model::load(&Checkpoint::open(dir).unwrap(), dtype, &Device::Cpu).unwrap())
}

fn params(seq_len: usize) -> PocParams {
    PocParams {
        block_hash: "TEST_BLOCK".into(),
        public_key: "test_pub_keys".into(),
        seq_len,
        k_dim: 12,
        rng: InputRng::Standard,
    }
}

fn mean_distance(a: &[NonceVector], b: &[NonceVector]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| dist(&f32s(x), &f32s(y)))
        .sum::<f32>()
        / a.len() as f32
}

#[test]
fn agrees_with_transformers_in_f32() {
    // Golden files from scripts/torch_reference.py (PyTorch + transformers' own Qwen3 and
    // Qwen3-MoE code, forward hooks for the reflections).
    for (p, file) in [
        (
            Preset::TinyMoe,
            include_str!("data/torch_tiny-moe_f32.json"),
        ),
        (
            Preset::TinyDense,
            include_str!("data/torch_tiny-dense_f32.json"),
        ),
    ] {
        let golden: serde_json::Value = serde_json::from_str(file).unwrap();
        let dir = preset(p);
        let engine = PocEngine::new(load(dir.path(), DType::F32));
        let nonces: Vec<i64> = (0..16).collect();
        let got = engine.compute(&params(64), &nonces, 8, |_| {}).unwrap();
        for (g, want) in got.iter().zip(golden["artifacts"].as_array().unwrap()) {
            assert_eq!(g.nonce, want["nonce"].as_i64().unwrap());
            let w = decode_vector_f32(want["vector_b64"].as_str().unwrap(), Some(12)).unwrap();
            let d = dist(&f32s(g), &w);
            assert!(d < 1e-3, "{}: nonce {} distance {d}", p.name(), g.nonce);
        }
    }
}

#[test]
fn inputs_and_projection_run_through_the_core() {
    let dir = preset(Preset::TinyDense);
    let engine = PocEngine::new(load(dir.path(), DType::F32));
    for rng in [InputRng::Standard, InputRng::Stronger] {
        let p = PocParams { rng, ..params(16) };
        let got = engine.inputs(&p, &[0, 5, -2]);
        let want: Vec<f32> = [0i64, 5, -2]
            .iter()
            .flat_map(|&n| generate_inputs("TEST_BLOCK", "test_pub_keys", n, rng, 16, 128))
            .collect();
        assert_eq!(got, want);
    }
    // docs/protocol/compute-v2.md §2.10: h[d] = d + 1 (H = 5120), nonce 0.
    let ramp: Vec<f32> = (0..5120).map(|d| (d + 1) as f32).collect();
    let v = project_nonce(&params(16), 0, &ramp).unwrap();
    assert_eq!(
        encode_f16(v.vector.as_ref().unwrap()),
        "kKyEuIe0YqdZNT+tezi3NPEyeqB0sFau"
    );
    let mut bad = ramp.clone();
    bad[7] = f32::NAN;
    assert_eq!(project_nonce(&params(16), 0, &bad).unwrap().vector, None);
}

#[test]
fn deterministic_batch_invariant_and_seed_sensitive() {
    let dir = preset(Preset::TinyMoe);
    let model = load(dir.path(), DType::F32);
    let engine = PocEngine::new(Arc::clone(&model));
    let p = params(32);
    let a = engine.compute_batch(&p, &[1, 2, 5, 9]).unwrap();
    assert_eq!(a, engine.compute_batch(&p, &[1, 2, 5, 9]).unwrap());
    // A fresh load gives the same bits.
    assert_eq!(
        a,
        PocEngine::new(load(dir.path(), DType::F32))
            .compute_batch(&p, &[1, 2, 5, 9])
            .unwrap()
    );
    // Nonce 5 alone, and among 8 others.
    let alone = engine.compute_batch(&p, &[5]).unwrap();
    let wide = engine
        .compute_batch(&p, &[10, 11, 5, 12, 13, 14, 15, 16])
        .unwrap();
    assert!(dist(&f32s(&alone[0]), &f32s(&a[2])) < 1e-3);
    assert!(dist(&f32s(&wide[2]), &f32s(&a[2])) < 1e-3);
    // Different block hash, public key or nonce: different vectors.
    let other_block = engine
        .compute_batch(
            &PocParams {
                block_hash: "OTHER".into(),
                ..p.clone()
            },
            &[5],
        )
        .unwrap();
    let other_key = engine
        .compute_batch(
            &PocParams {
                public_key: "other".into(),
                ..p.clone()
            },
            &[5],
        )
        .unwrap();
    for other in [&other_block[0], &other_key[0], &a[3]] {
        assert!(dist(&f32s(other), &f32s(&alone[0])) > 0.05);
    }
}

#[test]
fn a_cheaper_model_is_measurably_farther_than_a_different_dtype() {
    let dir = preset(Preset::TinyMoe);
    let cheap = tempfile::tempdir().unwrap();
    round_4bit(dir.path(), cheap.path()).unwrap();
    let nonces: Vec<i64> = (0..48).collect();
    let p = params(32);
    let run = |d: &Path, dt: DType| {
        PocEngine::new(load(d, dt))
            .compute(&p, &nonces, 16, |_| {})
            .unwrap()
    };
    let f32_ = run(dir.path(), DType::F32);
    let bf16_ = run(dir.path(), DType::BF16);
    let cheap_ = run(cheap.path(), DType::F32);
    let honest = mean_distance(&f32_, &bf16_);
    let fraud = mean_distance(&f32_, &cheap_);
    eprintln!("mean L2: f32 vs bf16 {honest:.4}, f32 vs 4-bit-rounded {fraud:.4}");
    assert!(honest < 0.1, "bf16 vs f32 drifted: {honest}");
    assert!(
        fraud > 2.0 * honest,
        "4-bit rounding ({fraud}) is not separated from bf16 ({honest})"
    );
}

#[test]
fn reflection_rounds_like_the_reference_op_sequence() {
    let h = 256;
    let v = householder_vector("B", 3, h);
    let x: Vec<f32> = generate_inputs("B", "K", 1, InputRng::Standard, 4, h);
    let xt = Tensor::from_vec(x.clone(), (4, h), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    let vt = Tensor::from_vec(v.clone(), (1, h), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    let got = reflect(&xt, &vt).unwrap().to_vec2::<bf16>().unwrap();
    let mut differing = 0;
    for (r, row) in got.iter().enumerate() {
        let mut want: Vec<bf16> = x[r * h..(r + 1) * h]
            .iter()
            .map(|&e| bf16::from_f32(e))
            .collect();
        reflect_bf16(&mut want, &v);
        differing += row.iter().zip(&want).filter(|(a, b)| a != b).count();
    }
    // Only the f32 summation order of the dot product may differ (then by one bf16 step).
    assert!(
        differing <= 4 * h / 50,
        "{differing} of {} values differ",
        4 * h
    );
    // f32 reflection is an involution up to rounding.
    let xf = Tensor::from_vec(x[..h].to_vec(), (1, h), &Device::Cpu).unwrap();
    let vf = Tensor::from_vec(v, (1, h), &Device::Cpu).unwrap();
    let back = reflect(&reflect(&xf, &vf).unwrap(), &vf)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert!(dist(&back[0], &x[..h]) < 1e-4);
}

#[test]
fn fp8_copy_loads_within_fp8_precision() {
    let dir = preset(Preset::TinyMoe);
    let q = tempfile::tempdir().unwrap();
    let s = quantize_fp8(dir.path(), q.path(), [128, 128]).unwrap();
    assert!(s.quantized > 0);
    let (orig, fp8) = (
        Checkpoint::open(dir.path()).unwrap(),
        Checkpoint::open(q.path()).unwrap(),
    );
    assert_eq!(fp8.config().fp8.unwrap().block, [128, 128]);
    let mut checked = 0;
    for (name, dtype, shape) in fp8.tensors() {
        if name.ends_with("_scale_inv") {
            continue;
        }
        let a = orig
            .tensor(&name, &shape, DType::F32, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = fp8
            .tensor(&name, &shape, DType::F32, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        if dtype == "F8_E4M3" {
            let max = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (x, y) in a.iter().zip(&b) {
                // 3 mantissa bits: relative 2^-4, plus the subnormal step near zero.
                assert!(
                    (x - y).abs() <= x.abs() / 16.0 + max / 448.0 * 2f32.powi(-9) + 1e-9,
                    "{name}: {x} vs {y}"
                );
            }
            checked += 1;
        } else {
            assert_eq!(a, b, "{name} must be copied unchanged");
        }
    }
    assert!(checked >= 16 * 3);
    // The quantized model still computes close artifacts.
    let p = params(32);
    let nonces: Vec<i64> = (0..8).collect();
    let a = PocEngine::new(load(dir.path(), DType::F32))
        .compute(&p, &nonces, 8, |_| {})
        .unwrap();
    let b = PocEngine::new(load(q.path(), DType::F32))
        .compute(&p, &nonces, 8, |_| {})
        .unwrap();
    assert!(mean_distance(&a, &b) < 0.5);
}

fn rewrite_without(dir: &Path, drop: &str) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != drop)
        .collect();
    let out = safetensors::tensor::serialize(kept, None).unwrap();
    std::fs::write(dir.join("model.safetensors"), out).unwrap();
}

#[test]
fn malformed_checkpoints_give_clear_errors() {
    let dir = preset(Preset::TinyDense);
    let msg = |e: ModelError| e.to_string();
    // Missing tensor.
    rewrite_without(dir.path(), "model.layers.2.mlp.up_proj.weight");
    let e = Qwen3Model::load(
        &Checkpoint::open(dir.path()).unwrap(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert_eq!(
        msg(e),
        "tensor model.layers.2.mlp.up_proj.weight is missing from the checkpoint"
    );
    // Wrong shape: the config says otherwise.
    let dir = preset(Preset::TinyDense);
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        cfg.replace("\"intermediate_size\": 384", "\"intermediate_size\": 300"),
    )
    .unwrap();
    let e = Qwen3Model::load(
        &Checkpoint::open(dir.path()).unwrap(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    let text = msg(e);
    assert!(
        text.contains("mlp.gate_proj.weight has shape [384, 128], expected [300, 128]"),
        "{text}"
    );
    // Bad config.
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": ").unwrap();
    let text = msg(Checkpoint::open(dir.path()).unwrap_err());
    assert!(
        text.contains("config.json") && text.contains("not a valid model config"),
        "{text}"
    );
    std::fs::write(
        dir.path().join("config.json"),
        cfg.replace("Qwen3ForCausalLM", "GPT2LMHeadModel"),
    )
    .unwrap();
    let text = msg(Checkpoint::open(dir.path()).unwrap_err());
    assert!(
        text.contains("unsupported architecture \"GPT2LMHeadModel\""),
        "{text}"
    );
    // No weights.
    std::fs::write(dir.path().join("config.json"), &cfg).unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let text = msg(Checkpoint::open(dir.path()).unwrap_err());
    assert!(text.contains("no .safetensors files"), "{text}");
    // A request the model cannot serve.
    let d2 = preset(Preset::TinyDense);
    let engine = PocEngine::new(load(d2.path(), DType::F32));
    let e = engine
        .compute_batch(
            &PocParams {
                k_dim: 129,
                ..params(8)
            },
            &[0],
        )
        .unwrap_err();
    assert!(msg(e).contains("k_dim 129"));
    let e = engine.compute_batch(&params(100_000), &[0]).unwrap_err();
    assert!(msg(e).contains("seq_len 100000"));
}

#[test]
fn generation_is_deterministic_cached_and_untouched_by_poc() {
    let dir = preset(Preset::TinyMoe);
    let model = load(dir.path(), DType::F32);
    let prompt: Vec<u32> = "hello world".bytes().map(u32::from).collect();
    let greedy = SamplingParams {
        max_tokens: 12,
        ..SamplingParams::default()
    };
    let a = generate(&model, &prompt, &greedy, |_| true).unwrap();
    assert_eq!(a.tokens.len(), 12);
    assert_eq!(a.finish, FinishReason::Length);
    // A PoC forward in between changes nothing.
    PocEngine::new(Arc::clone(&model))
        .compute_batch(&params(16), &[0, 1])
        .unwrap();
    assert_eq!(generate(&model, &prompt, &greedy, |_| true).unwrap(), a);
    // Decoding with the cache equals a full prefill of the same tokens.
    let mut all = prompt.clone();
    all.extend_from_slice(&a.tokens[..5]);
    let full = model
        .forward_tokens(&all, &mut KvCache::default())
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut cache = KvCache::default();
    model.forward_tokens(&prompt, &mut cache).unwrap();
    let mut last = None;
    for t in &a.tokens[..5] {
        last = Some(
            model
                .forward_tokens(&[*t], &mut cache)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), all.len());
    assert!(dist(&full, &last.unwrap()) < 1e-3);
    // Seeded sampling reproduces; a stop token ends generation.
    let sampled = SamplingParams {
        max_tokens: 20,
        temperature: 0.8,
        top_p: 0.9,
        seed: 42,
        stop_tokens: vec![],
    };
    let s1 = generate(&model, &prompt, &sampled, |_| true).unwrap();
    assert_eq!(s1, generate(&model, &prompt, &sampled, |_| true).unwrap());
    let stop = SamplingParams {
        stop_tokens: vec![s1.tokens[3]],
        ..sampled.clone()
    };
    let s2 = generate(&model, &prompt, &stop, |_| true).unwrap();
    assert_eq!(s2.finish, FinishReason::Stop);
    assert_eq!(
        s2.tokens,
        s1.tokens[..s1.tokens.iter().position(|t| *t == s1.tokens[3]).unwrap()]
    );
    // The callback can stop early; bad prompts are refused.
    let early = generate(&model, &prompt, &greedy, |_| false).unwrap();
    assert_eq!(early.tokens.len(), 1);
    assert!(generate(&model, &[], &greedy, |_| true).is_err());
    assert!(generate(&model, &[9999], &greedy, |_| true).is_err());
}

#[test]
fn stronger_rng_changes_the_artifacts() {
    let dir = preset(Preset::TinyDense);
    let engine = PocEngine::new(load(dir.path(), DType::F32));
    let a = engine.compute_batch(&params(16), &[3]).unwrap();
    let b = engine
        .compute_batch(
            &PocParams {
                rng: InputRng::Stronger,
                ..params(16)
            },
            &[3],
        )
        .unwrap();
    assert!(dist(&f32s(&a[0]), &f32s(&b[0])) > 0.05);
}

#[test]
fn sharded_checkpoints_load_like_single_files() {
    let dir = preset(Preset::TinyDense);
    let single = PocEngine::new(load(dir.path(), DType::F32))
        .compute_batch(&params(16), &[4, 5])
        .unwrap();
    // Split the weights over two shards with an index, as large checkpoints are published.
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let views: Vec<_> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        std::fs::write(
            dir.path().join(file),
            safetensors::tensor::serialize(views, None).unwrap(),
        )
        .unwrap();
        for n in part {
            map.insert(n.clone(), serde_json::json!(file));
        }
    }
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let sharded = PocEngine::new(load(dir.path(), DType::F32))
        .compute_batch(&params(16), &[4, 5])
        .unwrap();
    assert_eq!(single, sharded);
    // A shard named by the index but missing is reported.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("does not exist"),
        "{e}"
    );
}
