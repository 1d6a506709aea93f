//! Ordinary text generation on the served weights: prefill, then token-by-token decode with
//! a KV cache; greedy or temperature / top-p sampling from a seeded generator. The PoC
//! transforms are never applied here.

use crate::error::{ModelError, Result};
use crate::model::{KvCache, Qwen3Model};

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// 0 = greedy; otherwise logits are divided by it before the softmax.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    pub top_p: f32,
    /// Seed of the sampler (the same seed and prompt give the same text).
    pub seed: u64,
    /// Tokens that end generation (not included in the output).
    pub stop_tokens: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_tokens: 16,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_tokens: vec![],
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was produced (or the callback asked to stop).
    Stop,
    /// `max_tokens` were produced, or the context is full.
    Length,
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Generated tokens (stop token excluded).
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish: FinishReason,
}

/// SplitMix64: a small, well-mixed seeded generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform number in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Picks the next token from logits.
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: SplitMix64,
    temperature: f32,
    top_p: f32,
}

impl Sampler {
    /// A sampler for the given parameters.
    pub fn new(p: &SamplingParams) -> Self {
        Self {
            rng: SplitMix64::new(p.seed),
            temperature: p.temperature,
            top_p: p.top_p,
        }
    }

    /// The next token. Greedy when the temperature is 0 (ties: the lowest token id).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature <= 0.0 || logits.len() == 1 {
            let mut best = 0;
            for (i, &l) in logits.iter().enumerate() {
                if l > logits[best] {
                    best = i;
                }
            }
            return best as u32;
        }
        let t = f64::from(self.temperature);
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((f64::from(l) - max) / t).exp()))
            .collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let top_p = f64::from(self.top_p.clamp(f32::MIN_POSITIVE, 1.0));
        let mut kept = 0.0;
        let mut n = 0;
        for p in &probs {
            kept += p.1 / total;
            n += 1;
            if kept >= top_p {
                break;
            }
        }
        let nucleus = &probs[..n];
        let mass: f64 = nucleus.iter().map(|p| p.1).sum();
        let mut u = self.rng.next_f64() * mass;
        for p in nucleus {
            if u < p.1 {
                return p.0;
            }
            u -= p.1;
        }
        nucleus[n - 1].0
    }
}

/// Generates from `prompt`. `on_token` sees each token as it is produced and may return
/// `false` to stop early.
pub fn generate(
    model: &Qwen3Model,
    prompt: &[u32],
    params: &SamplingParams,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(ModelError::Request("the prompt has no tokens".into()));
    }
    let vocab = model.config().vocab_size as u32;
    if let Some(t) = prompt.iter().find(|&&t| t >= vocab) {
        return Err(ModelError::Request(format!(
            "token id {t} is outside the vocabulary of {vocab}"
        )));
    }
    if prompt.len() >= model.max_len() {
        return Err(ModelError::Request(format!(
            "the prompt has {} tokens; the model's context is {}",
            prompt.len(),
            model.max_len()
        )));
    }
    let mut cache = KvCache::default();
    let mut sampler = Sampler::new(params);
    let mut logits = model.forward_tokens(prompt, &mut cache)?;
    let mut tokens = Vec::new();
    loop {
        if tokens.len() >= params.max_tokens || cache.len() >= model.max_len() {
            return Ok(Generation {
                tokens,
                finish: FinishReason::Length,
            });
        }
        let next = sampler.sample(&logits.to_vec1::<f32>()?);
        if params.stop_tokens.contains(&next) {
            return Ok(Generation {
                tokens,
                finish: FinishReason::Stop,
            });
        }
        tokens.push(next);
        if !on_token(next) {
            return Ok(Generation {
                tokens,
                finish: FinishReason::Stop,
            });
        }
        logits = model.forward_tokens(&[next], &mut cache)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(&SamplingParams::default());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_p() {
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: 7,
            ..SamplingParams::default()
        };
        let logits = [5.0f32, 4.9, 0.0, 0.0, 0.0];
        let a: Vec<u32> = {
            let mut s = Sampler::new(&p);
            (0..200).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(&p);
            (0..200).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
        // Token 0 alone has ~51 % of the mass: top_p 0.5 keeps only it.
        assert!(a.iter().all(|&t| t == 0));
        let wide = SamplingParams { top_p: 1.0, ..p };
        let mut s = Sampler::new(&wide);
        let draws: Vec<u32> = (0..400).map(|_| s.sample(&logits)).collect();
        assert!(draws.contains(&0) && draws.contains(&1));
    }

    #[test]
    fn uniform_is_in_range() {
        let mut r = SplitMix64::new(1);
        for _ in 0..1000 {
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
