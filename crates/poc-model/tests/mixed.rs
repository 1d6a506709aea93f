//! Mixed steps: PoC rows and chat rows in one forward. A nonce's artifact must not depend
//! on what shared its forward (validators recompute in other compositions), and a chat's
//! logits must not depend on the PoC rows beside it.

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use poc_core::InputRng;
use poc_model::generate::{Sampler, SamplingParams, generate};
use poc_model::presets::{Preset, write_preset};
use poc_model::{
    ChatRows, Checkpoint, KvCache, NonceVector, PocEngine, PocParams, PocRows, Qwen3Model,
};

use common::{dist, f32s};

fn engine(p: Preset) -> PocEngine {
    let d = tempfile::tempdir().unwrap();
    write_preset(p, d.path()).unwrap();
    let model = Qwen3Model::load(
        &Checkpoint::open(d.path()).unwrap(),
        DType::F32,
        &Device::Cpu,
    );
    PocEngine::new(Arc::new(model.unwrap()))
}

fn params(seq_len: usize) -> PocParams {
    PocParams {
        block_hash: "MIXED_BLOCK".into(),
        public_key: "mixed_pub_key".into(),
        seq_len,
        k_dim: 12,
        rng: InputRng::Standard,
    }
}

/// A chat sequence with a prompt already cached, and its next token.
fn primed(engine: &PocEngine, prompt: &[u32]) -> (KvCache, Vec<f32>) {
    let mut cache = KvCache::default();
    let logits = engine.model().forward_tokens(prompt, &mut cache).unwrap();
    (cache, logits.to_vec1().unwrap())
}

/// The PoC rows' last hidden states with an identity hook: the model alone, without the
/// projection's FP16 rounding in between.
fn poc_last(
    e: &PocEngine,
    p: &PocParams,
    nonces: &[i64],
    chats: &mut [ChatRows<'_>],
) -> Vec<Vec<f32>> {
    let model = e.model();
    let h = model.config().hidden_size;
    let inputs = Tensor::from_vec(
        e.inputs(p, nonces),
        (nonces.len() * p.seq_len, h),
        &Device::Cpu,
    )
    .unwrap();
    let hook = |_: usize, h: Tensor, r: Tensor| Ok((h, r));
    let rows = PocRows {
        inputs,
        b: nonces.len(),
        l: p.seq_len,
        hook: &hook,
    };
    let out = model.forward_mixed(Some(rows), chats).unwrap();
    out.poc_last.unwrap().to_vec2().unwrap()
}

#[test]
fn a_nonce_gives_the_same_artifact_whatever_shares_its_forward() {
    let prompt: Vec<u32> = "hello there".bytes().map(u32::from).collect();
    let chunk: Vec<u32> = "a longer prompt of text".bytes().map(u32::from).collect();
    let mut worst = 0f32;
    for preset in [Preset::TinyMoe, Preset::TinyDense] {
        let e = engine(preset);
        let p = params(24);
        let alone = e.compute_batch(&p, &[5]).unwrap().remove(0);
        let (mut decoding, _) = primed(&e, &prompt);
        let mut prefilling = KvCache::default();
        let compositions: Vec<Vec<NonceVector>> = vec![
            e.compute_batch(&p, &[1, 2, 5, 9]).unwrap(),
            e.compute_batch(&p, &[10, 11, 5, 12, 13, 14, 15, 16])
                .unwrap(),
            e.compute_mixed(
                Some((&p, &[5, 3])),
                &mut [
                    ChatRows {
                        tokens: &[42],
                        cache: &mut decoding,
                    },
                    ChatRows {
                        tokens: &chunk,
                        cache: &mut prefilling,
                    },
                ],
            )
            .unwrap()
            .0,
            e.compute_mixed(
                Some((&p, &[7, 5])),
                &mut [ChatRows {
                    tokens: &[43],
                    cache: &mut decoding,
                }],
            )
            .unwrap()
            .0,
        ];
        for vectors in &compositions {
            let v = vectors
                .iter()
                .find(|v| v.nonce == 5)
                .expect("nonce 5 is in every batch");
            let d = dist(&f32s(v), &f32s(&alone));
            worst = worst.max(d);
            assert!(
                d <= 1e-5,
                "{preset:?}: nonce 5 moved by L2 {d} with its neighbours"
            );
        }
        // Below the FP16 rounding: the f32 hidden states themselves (identity hook).
        let solo = poc_last(&e, &p, &[5], &mut []);
        let (mut decoding, _) = primed(&e, &prompt);
        let beside = poc_last(
            &e,
            &p,
            &[2, 5],
            &mut [ChatRows {
                tokens: &chunk,
                cache: &mut decoding,
            }],
        );
        let d = dist(&solo[0], &beside[1]);
        worst = worst.max(d);
        assert!(
            d <= 1e-5,
            "{preset:?}: hidden state moved by L2 {d} beside chat rows"
        );
    }
    eprintln!("worst L2 of a nonce across compositions: {worst:e}");
}

#[test]
fn a_chat_generates_the_same_text_with_poc_rows_beside_it() {
    for preset in [Preset::TinyMoe, Preset::TinyDense] {
        let e = engine(preset);
        let model = e.model();
        let prompt: Vec<u32> = "tell me a story".bytes().map(u32::from).collect();
        let greedy = SamplingParams {
            max_tokens: 12,
            ..SamplingParams::default()
        };
        let alone = generate(model, &prompt, &greedy, |_| true).unwrap().tokens;
        // The same greedy decode, every step beside PoC rows (a different batch each step),
        // the prompt in two prefill chunks.
        let p = params(16);
        let mut cache = KvCache::default();
        let (first, rest) = prompt.split_at(6);
        e.compute_mixed(
            Some((&p, &[1])),
            &mut [ChatRows {
                tokens: first,
                cache: &mut cache,
            }],
        )
        .unwrap();
        let mut input = rest.to_vec();
        let mut tokens = Vec::new();
        let mut worst = 0f32;
        let mut solo_cache = KvCache::default();
        let mut solo_input = prompt.clone();
        for step in 0..12i64 {
            let nonces: Vec<i64> = (0..=(step % 3)).map(|i| 100 + step * 3 + i).collect();
            let (_, logits) = e
                .compute_mixed(
                    Some((&p, &nonces)),
                    &mut [ChatRows {
                        tokens: &input,
                        cache: &mut cache,
                    }],
                )
                .unwrap();
            let solo = model
                .forward_tokens(&solo_input, &mut solo_cache)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            worst = worst.max(dist(&logits[0], &solo));
            let next = Sampler::new(&greedy).sample(&logits[0]);
            tokens.push(next);
            input = vec![next];
            solo_input = vec![next];
        }
        assert_eq!(
            tokens, alone,
            "{preset:?}: greedy text changed beside PoC rows"
        );
        assert!(worst < 1e-3, "{preset:?}: logits moved by L2 {worst}");
        eprintln!("{preset:?}: worst logit L2 beside PoC rows {worst:e}");
    }
}

#[test]
fn mixed_steps_refuse_what_does_not_fit() {
    let e = engine(Preset::TinyMoe);
    let model = e.model();
    let mut cache = KvCache::default();
    let err = model.forward_mixed(
        None,
        &mut [ChatRows {
            tokens: &[],
            cache: &mut cache,
        }],
    );
    assert!(err.unwrap_err().to_string().contains("needs a token"));
    let long = vec![1u32; model.max_len() + 1];
    let err = model.forward_mixed(
        None,
        &mut [ChatRows {
            tokens: &long,
            cache: &mut cache,
        }],
    );
    assert!(err.unwrap_err().to_string().contains("outside 1..="));
    // Nothing at all is an empty step, not an error.
    let out = model.forward_mixed(None, &mut []).unwrap();
    assert!(out.poc_last.is_none() && out.chat_logits.is_none());
    // A failed step leaves the cache as it was.
    assert!(cache.is_empty());
}
