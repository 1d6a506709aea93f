//! Confirmation PoC events (`docs/protocol/chain-and-api.md` §1.6): a random mid-epoch re-run of PoC
//! keyed by its trigger height.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decimal::Dec;
use crate::epoch::{EpochContext, EpochParams, Phase, Window};

/// `ConfirmationPoCPhase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConfirmationPhase {
    /// 0.
    #[serde(rename = "CONFIRMATION_POC_INACTIVE")]
    Inactive,
    /// 1: triggered, generation not started yet.
    #[serde(rename = "CONFIRMATION_POC_GRACE_PERIOD")]
    GracePeriod,
    /// 2.
    #[serde(rename = "CONFIRMATION_POC_GENERATION")]
    Generation,
    /// 3.
    #[serde(rename = "CONFIRMATION_POC_VALIDATION")]
    Validation,
    /// 4.
    #[serde(rename = "CONFIRMATION_POC_COMPLETED")]
    Completed,
}

impl ConfirmationPhase {
    /// The proto enum number.
    pub fn number(self) -> i32 {
        match self {
            Self::Inactive => 0,
            Self::GracePeriod => 1,
            Self::Generation => 2,
            Self::Validation => 3,
            Self::Completed => 4,
        }
    }
}

/// `ConfirmationPoCEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmationEvent {
    /// Epoch it belongs to.
    #[serde(with = "crate::json::u64_string")]
    pub epoch_index: u64,
    /// 0, 1, 2, … within the epoch.
    #[serde(with = "crate::json::u64_string")]
    pub event_sequence: u64,
    /// Height it was triggered at (the `poc_stage_start_block_height` of its messages).
    #[serde(with = "crate::json::i64_string")]
    pub trigger_height: i64,
    /// G.
    #[serde(with = "crate::json::i64_string")]
    pub generation_start_height: i64,
    /// Current phase.
    pub phase: ConfirmationPhase,
    /// Seed block hash captured when generation starts (lowercase hex).
    pub poc_seed_block_hash: String,
}

impl ConfirmationEvent {
    /// G = trigger + max(inference_validation_cutoff, 1).
    pub fn generation_start(trigger: i64, p: &EpochParams) -> i64 {
        trigger + p.inference_validation_cutoff.max(1)
    }

    /// G + poc_stage_duration − 1.
    pub fn generation_end(&self, p: &EpochParams) -> i64 {
        self.generation_start_height + p.poc_stage_duration - 1
    }

    /// GenerationEnd + poc_exchange_duration.
    pub fn exchange_end(&self, p: &EpochParams) -> i64 {
        self.generation_end(p) + p.poc_exchange_duration
    }

    /// ExchangeEnd + poc_validation_delay.
    pub fn validation_start(&self, p: &EpochParams) -> i64 {
        self.exchange_end(p) + p.poc_validation_delay
    }

    /// ValidationStart + poc_validation_duration − 1.
    pub fn validation_end(&self, p: &EpochParams) -> i64 {
        self.validation_start(p) + p.poc_validation_duration - 1
    }

    /// The batch submission window [G, ExchangeEnd].
    pub fn batch_window(&self, p: &EpochParams) -> Window {
        Window {
            start: self.generation_start_height,
            end: self.exchange_end(p),
        }
    }

    /// The validation window [ValidationStart, ValidationEnd].
    pub fn validation_window(&self, p: &EpochParams) -> Window {
        Window {
            start: self.validation_start(p),
            end: self.validation_end(p),
        }
    }

    /// Whether `h` is in the batch submission window [G, ExchangeEnd].
    pub fn in_batch_window(&self, h: i64, p: &EpochParams) -> bool {
        self.batch_window(p).contains(h)
    }

    /// Whether `h` is in the validation window [ValidationStart, ValidationEnd].
    pub fn in_validation_window(&self, h: i64, p: &EpochParams) -> bool {
        self.validation_window(p).contains(h)
    }
}

/// `DeterministicFloat(seed, id)`: `uint64BE(SHA256(decimal(seed) + ":" + id)[0:8]) / MaxUint64`
/// as a shopspring decimal (16 fractional digits).
pub fn deterministic_float(seed: i64, identifier: &str) -> Dec {
    let digest = Sha256::digest(format!("{seed}:{identifier}").as_bytes());
    let v = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    Dec::from_u64(v)
        .div(&Dec::from_u64(u64::MAX))
        .expect("MaxUint64 is not zero")
}

/// The trigger's seed: the first 8 bytes of the block hash as a big-endian `int64`.
pub fn trigger_seed(block_hash: &[u8; 32]) -> i64 {
    i64::from_be_bytes(block_hash[..8].try_into().expect("8 bytes"))
}

/// The window of heights an epoch may trigger events in:
/// `[SetNewValidators(E), NextPoCStart − cutoff − (stage + exchange + delay + validation + set_new_validators_delay + 50)]`.
pub fn trigger_window(ctx: &EpochContext) -> (i64, i64) {
    let p = &ctx.params;
    let start = ctx.set_new_validators();
    let end = ctx.next_poc_start()
        - p.inference_validation_cutoff
        - (p.poc_stage_duration
            + p.poc_exchange_duration
            + p.poc_validation_delay
            + p.poc_validation_duration
            + p.set_new_validators_delay
            + 50);
    (start, end)
}

/// Whether a confirmation event triggers at `h` (everything but the parameter, upgrade and
/// active-event checks, which the caller makes): epoch index > 1, Inference phase, `h` in
/// the trigger window, and `DeterministicFloat(seed, "confirmation_poc_trigger_<h>") < N / L`.
pub fn should_trigger(
    ctx: &EpochContext,
    h: i64,
    block_hash: &[u8; 32],
    expected_per_epoch: u64,
) -> bool {
    if expected_per_epoch == 0 || ctx.epoch.index <= 1 || ctx.phase(h) != Phase::Inference {
        return false;
    }
    let (start, end) = trigger_window(ctx);
    let len = end - start + 1;
    if len <= 0 || h < start || h > end {
        return false;
    }
    let r = deterministic_float(
        trigger_seed(block_hash),
        &format!("confirmation_poc_trigger_{h}"),
    );
    let p = Dec::from_u64(expected_per_epoch)
        .div(&Dec::from_i128(len as i128))
        .expect("positive length");
    r < p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epoch::Epoch;

    fn params() -> EpochParams {
        EpochParams {
            epoch_length: 80,
            poc_stage_duration: 5,
            poc_exchange_duration: 2,
            poc_validation_delay: 1,
            poc_validation_duration: 4,
            set_new_validators_delay: 1,
            inference_validation_cutoff: 0,
            ..EpochParams::default()
        }
    }

    #[test]
    fn heights_have_the_minus_one_asymmetry() {
        let p = params();
        let g = ConfirmationEvent::generation_start(100, &p);
        assert_eq!(g, 101); // max(cutoff 0, 1)
        let e = ConfirmationEvent {
            epoch_index: 3,
            event_sequence: 0,
            trigger_height: 100,
            generation_start_height: g,
            phase: ConfirmationPhase::GracePeriod,
            poc_seed_block_hash: String::new(),
        };
        assert_eq!(e.generation_end(&p), 105);
        assert_eq!(e.exchange_end(&p), 107);
        assert_eq!(e.validation_start(&p), 108);
        assert_eq!(e.validation_end(&p), 111);
        assert!(e.in_batch_window(101, &p) && e.in_batch_window(107, &p));
        assert!(!e.in_batch_window(100, &p) && !e.in_batch_window(108, &p));
        assert!(
            e.in_validation_window(108, &p)
                && e.in_validation_window(111, &p)
                && !e.in_validation_window(112, &p)
        );
        let p2 = EpochParams {
            inference_validation_cutoff: 2,
            ..p
        };
        assert_eq!(ConfirmationEvent::generation_start(100, &p2), 102);
    }

    #[test]
    fn deterministic_float_is_stable_and_in_range() {
        let a = deterministic_float(42, "confirmation_poc_trigger_100");
        assert_eq!(a, deterministic_float(42, "confirmation_poc_trigger_100"));
        assert_ne!(a, deterministic_float(43, "confirmation_poc_trigger_100"));
        assert!(a >= Dec::from_u64(0) && a <= Dec::from_u64(1));
        // By hand: SHA256("42:x")[0..8] / (2^64 - 1), rounded to 16 places.
        let d = Sha256::digest(b"42:x");
        let v = u64::from_be_bytes(d[..8].try_into().unwrap()) as f64 / u64::MAX as f64;
        let got: f64 = deterministic_float(42, "x")
            .to_plain_string()
            .parse()
            .unwrap();
        assert!((got - v).abs() < 1e-15);
    }

    #[test]
    fn trigger_is_deterministic_and_respects_its_window() {
        let ctx = EpochContext::new(
            Epoch {
                index: 3,
                poc_start_block_height: 160,
            },
            params(),
        );
        let (start, end) = trigger_window(&ctx);
        // [SetNewValidators = 160+5+1+4+1 = 171, 240 - 0 - (5+2+1+4+1+50) = 177]
        assert_eq!((start, end), (171, 177));
        let hash = [7u8; 32];
        // With N large enough every height in the window triggers; none outside.
        for h in 150..250 {
            assert_eq!(
                should_trigger(&ctx, h, &hash, 1000),
                (start..=end).contains(&h),
                "h {h}"
            );
        }
        assert!(!should_trigger(&ctx, 172, &hash, 0));
        let early = EpochContext::new(
            Epoch {
                index: 1,
                poc_start_block_height: 80,
            },
            params(),
        );
        assert!(!should_trigger(&early, 95, &hash, 1000));
        // Determinism: the decision is a function of (height, hash).
        let decisions: Vec<bool> = (171..=177)
            .map(|h| should_trigger(&ctx, h, &[h as u8; 32], 1))
            .collect();
        assert_eq!(
            decisions,
            (171..=177)
                .map(|h| should_trigger(&ctx, h, &[h as u8; 32], 1))
                .collect::<Vec<_>>()
        );
    }
}
