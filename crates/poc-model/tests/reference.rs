//! The batched candle engine against a straightforward f32 reference written here with
//! plain loops (unbatched, unfused, no candle), on the tiny presets.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use half::{bf16, f16};
use poc_core::InputRng;
use poc_core::householder::householder_vector;
use poc_core::inputs::generate_inputs;
use poc_core::projection::project_hidden;
use poc_model::presets::{Preset, write_preset};
use poc_model::{Checkpoint, ModelConfig, PocEngine, PocParams, Qwen3Model};

struct RefModel {
    cfg: ModelConfig,
    w: HashMap<String, Vec<f32>>,
}

impl RefModel {
    fn load(dir: &Path) -> Self {
        let cfg = ModelConfig::from_dir(dir).unwrap();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut w = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let v: Vec<f32> = match view.dtype() {
                safetensors::Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                safetensors::Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                other => panic!("{other:?}"),
            };
            w.insert(name, v);
        }
        Self { cfg, w }
    }

    fn t(&self, name: &str) -> &[f32] {
        &self.w[name]
    }

    /// y[o] = sum_i W[o][i] x[i]
    fn matvec(&self, name: &str, x: &[f32]) -> Vec<f32> {
        let w = self.t(name);
        let n = x.len();
        (0..w.len() / n)
            .map(|o| {
                w[o * n..(o + 1) * n]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    }

    fn rms(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        let inv = 1.0 / (ms + eps as f32).sqrt();
        x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
    }

    fn mlp(&self, p: &str, x: &[f32]) -> Vec<f32> {
        let g = self.matvec(&format!("{p}.gate_proj.weight"), x);
        let u = self.matvec(&format!("{p}.up_proj.weight"), x);
        let a: Vec<f32> = g
            .iter()
            .zip(&u)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        self.matvec(&format!("{p}.down_proj.weight"), &a)
    }

    fn rope(&self, v: &mut [f32], pos: usize) {
        let d = v.len();
        let half = d / 2;
        for i in 0..half {
            let inv = 1.0 / (self.cfg.rope_theta as f32).powf((2 * i) as f32 / d as f32);
            let a = pos as f32 * inv;
            let (s, c) = (a.sin(), a.cos());
            let (x1, x2) = (v[i], v[i + half]);
            v[i] = x1 * c - x2 * s;
            v[i + half] = x2 * c + x1 * s;
        }
    }

    /// The last hidden state (after the final norm) of one sequence of input embeddings,
    /// reflecting each layer's total output with `vs[layer]`.
    fn last_hidden(&self, x: Vec<Vec<f32>>, vs: &[Vec<f32>]) -> Vec<f32> {
        let c = &self.cfg;
        let (nh, nkv, hd, eps) = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            c.rms_norm_eps,
        );
        let l = x.len();
        let mut state = x;
        for (layer, refl) in vs.iter().enumerate() {
            let p = format!("model.layers.{layer}");
            let normed: Vec<Vec<f32>> = state
                .iter()
                .map(|r| Self::rms(r, self.t(&format!("{p}.input_layernorm.weight")), eps))
                .collect();
            let mut qs = vec![];
            let mut ks = vec![];
            let mut vs_ = vec![];
            for (pos, r) in normed.iter().enumerate() {
                let q = self.matvec(&format!("{p}.self_attn.q_proj.weight"), r);
                let k = self.matvec(&format!("{p}.self_attn.k_proj.weight"), r);
                let v = self.matvec(&format!("{p}.self_attn.v_proj.weight"), r);
                let norm_heads = |t: &[f32], n: usize, w: &str| -> Vec<Vec<f32>> {
                    (0..n)
                        .map(|h| {
                            let mut hv = Self::rms(&t[h * hd..(h + 1) * hd], self.t(w), eps);
                            self.rope(&mut hv, pos);
                            hv
                        })
                        .collect()
                };
                qs.push(norm_heads(&q, nh, &format!("{p}.self_attn.q_norm.weight")));
                ks.push(norm_heads(&k, nkv, &format!("{p}.self_attn.k_norm.weight")));
                vs_.push(
                    (0..nkv)
                        .map(|h| v[h * hd..(h + 1) * hd].to_vec())
                        .collect::<Vec<_>>(),
                );
            }
            let scale = 1.0 / (hd as f32).sqrt();
            let mut new_state = vec![];
            for i in 0..l {
                let mut attn = vec![0f32; nh * hd];
                for h in 0..nh {
                    let kvh = h / (nh / nkv);
                    let scores: Vec<f32> = (0..=i)
                        .map(|j| {
                            qs[i][h]
                                .iter()
                                .zip(&ks[j][kvh])
                                .map(|(a, b)| a * b)
                                .sum::<f32>()
                                * scale
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
                    let z: f32 = e.iter().sum();
                    for (j, ej) in e.iter().enumerate() {
                        for d in 0..hd {
                            attn[h * hd + d] += ej / z * vs_[j][kvh][d];
                        }
                    }
                }
                let o = self.matvec(&format!("{p}.self_attn.o_proj.weight"), &attn);
                let mid: Vec<f32> = state[i].iter().zip(&o).map(|(a, b)| a + b).collect();
                let n2 = Self::rms(
                    &mid,
                    self.t(&format!("{p}.post_attention_layernorm.weight")),
                    eps,
                );
                let ff = if c.is_moe_layer(layer) {
                    let m = c.moe.as_ref().unwrap();
                    let logits = self.matvec(&format!("{p}.mlp.gate.weight"), &n2);
                    let mx = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = logits.iter().map(|v| (v - mx).exp()).collect();
                    let z: f32 = e.iter().sum();
                    let probs: Vec<f32> = e.iter().map(|v| v / z).collect();
                    let mut order: Vec<usize> = (0..probs.len()).collect();
                    order
                        .sort_by(|&a, &b| probs[b].partial_cmp(&probs[a]).unwrap().then(a.cmp(&b)));
                    let top = &order[..m.experts_per_token];
                    let norm: f32 = if m.norm_topk_prob {
                        top.iter().map(|&e| probs[e]).sum()
                    } else {
                        1.0
                    };
                    let mut acc = vec![0f32; n2.len()];
                    for &ex in top {
                        let y = self.mlp(&format!("{p}.mlp.experts.{ex}"), &n2);
                        for (a, v) in acc.iter_mut().zip(y) {
                            *a += probs[ex] / norm * v;
                        }
                    }
                    acc
                } else {
                    self.mlp(&format!("{p}.mlp"), &n2)
                };
                let mut out: Vec<f32> = mid.iter().zip(&ff).map(|(a, b)| a + b).collect();
                // Reflect the layer's total output.
                let dot: f32 = out.iter().zip(refl).map(|(a, b)| a * b).sum();
                for (o, v) in out.iter_mut().zip(refl) {
                    *o -= 2.0 * dot * v;
                }
                new_state.push(out);
            }
            state = new_state;
        }
        Self::rms(&state[l - 1], self.t("model.norm.weight"), eps)
    }
}

fn l2(a: &[f16], b: &[f16]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.to_f32() - y.to_f32()).powi(2))
        .sum::<f32>()
        .sqrt()
}

fn check_preset(preset: Preset) {
    let tmp = tempfile::tempdir().unwrap();
    write_preset(preset, tmp.path()).unwrap();
    let reference = RefModel::load(tmp.path());
    let ck = Checkpoint::open(tmp.path()).unwrap();
    let model = Arc::new(Qwen3Model::load(&ck, DType::F32, &Device::Cpu).unwrap());
    let engine = PocEngine::new(model);
    let (bh, pk, l, k) = ("TEST_BLOCK", "test_pub_keys", 24usize, 12usize);
    let params = PocParams {
        block_hash: bh.into(),
        public_key: pk.into(),
        seq_len: l,
        k_dim: k,
        rng: InputRng::Standard,
    };
    let nonces = [0i64, 1, 2, 7, -3];
    let got = engine.compute_batch(&params, &nonces).unwrap();
    let h = reference.cfg.hidden_size;
    let vs: Vec<Vec<f32>> = (0..reference.cfg.num_hidden_layers)
        .map(|i| householder_vector(bh, i, h))
        .collect();
    for (n, g) in nonces.iter().zip(&got) {
        let x = generate_inputs(bh, pk, *n, InputRng::Standard, l, h);
        let rows: Vec<Vec<f32>> = x.chunks(h).map(<[f32]>::to_vec).collect();
        let last = reference.last_hidden(rows, &vs);
        let want = project_hidden(bh, pk, *n, &last, k).unwrap();
        let d = l2(g.vector.as_ref().unwrap(), &want);
        assert!(d < 1e-3, "{}: nonce {n}: distance {d}", preset.name());
    }
}

#[test]
fn dense_engine_matches_the_plain_reference() {
    check_preset(Preset::TinyDense);
}

#[test]
fn moe_engine_matches_the_plain_reference() {
    check_preset(Preset::TinyMoe);
}
