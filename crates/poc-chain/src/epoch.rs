//! Epochs and the PoC stage timeline (`docs/protocol/chain-and-api.md` §1.1–§1.3).
//!
//! Every height of an epoch's PoC is derived from its start `S` and the **current**
//! epoch parameters. Wind-down offsets are computed like the reference: `float64(d) * 0.8`
//! truncated toward zero.

use serde::{Deserialize, Serialize};

use crate::decimal::Decimal;
use crate::error::InvalidParams;

/// `PoCGenerateWindDownFactor` and `PoCValidateWindDownFactor`.
pub const WIND_DOWN_FACTOR: f64 = 0.8;

/// `EpochParams` (heights in blocks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochParams {
    /// Blocks per epoch.
    #[serde(with = "crate::json::i64_string")]
    pub epoch_length: i64,
    /// Multiplier (kept for compatibility).
    #[serde(with = "crate::json::i64_string")]
    pub epoch_multiplier: i64,
    /// Shift of the first epoch.
    #[serde(with = "crate::json::i64_string")]
    pub epoch_shift: i64,
    /// Generation blocks.
    #[serde(with = "crate::json::i64_string")]
    pub poc_stage_duration: i64,
    /// Exchange blocks after generation (deprecated, 0 since v0.2.10).
    #[serde(with = "crate::json::i64_string")]
    pub poc_exchange_duration: i64,
    /// Blocks between generation end and validation start.
    #[serde(with = "crate::json::i64_string")]
    pub poc_validation_delay: i64,
    /// Validation blocks.
    #[serde(with = "crate::json::i64_string")]
    pub poc_validation_duration: i64,
    /// Blocks from validation end to the new validator set.
    #[serde(with = "crate::json::i64_string")]
    pub set_new_validators_delay: i64,
    /// Blocks before the next PoC when inference validation stops.
    #[serde(with = "crate::json::i64_string")]
    pub inference_validation_cutoff: i64,
    /// Inference pruning threshold (epochs).
    #[serde(with = "crate::json::u64_string")]
    pub inference_pruning_epoch_threshold: u64,
    /// Inference pruning cap.
    #[serde(with = "crate::json::i64_string")]
    pub inference_pruning_max: i64,
    /// PoC pruning cap.
    #[serde(with = "crate::json::i64_string")]
    pub poc_pruning_max: i64,
    /// Share of nodes that keep serving inference during PoC.
    pub poc_slot_allocation: Option<Decimal>,
    /// Inference price unit (carried for the reference; not read here).
    #[serde(default, with = "crate::json::i64_string")]
    pub default_unit_of_compute_price: i64,
    /// Confirmation PoC safety window (carried for the reference; not read here).
    #[serde(default, with = "crate::json::i64_string")]
    pub confirmation_poc_safety_window: i64,
}

impl Default for EpochParams {
    /// `DefaultEpochParams`.
    fn default() -> Self {
        Self {
            epoch_length: 40,
            epoch_multiplier: 1,
            epoch_shift: 0,
            poc_stage_duration: 10,
            poc_exchange_duration: 2,
            poc_validation_delay: 2,
            poc_validation_duration: 6,
            set_new_validators_delay: 1,
            inference_validation_cutoff: 0,
            inference_pruning_epoch_threshold: 2,
            inference_pruning_max: 0,
            poc_pruning_max: 0,
            poc_slot_allocation: Some(Decimal::new(5, -1)),
            default_unit_of_compute_price: 0,
            confirmation_poc_safety_window: 0,
        }
    }
}

impl EpochParams {
    /// The reference's `Validate`.
    pub fn validate(&self) -> Result<(), InvalidParams> {
        let checks: [(bool, &str); 9] = [
            (self.epoch_length > 0, "epoch_length must be positive"),
            (
                self.epoch_multiplier > 0,
                "epoch_multiplier must be positive",
            ),
            (
                self.poc_stage_duration > 0,
                "poc_stage_duration must be positive",
            ),
            (
                self.poc_exchange_duration >= 0,
                "poc_exchange_duration must not be negative",
            ),
            (
                self.poc_validation_delay >= 0,
                "poc_validation_delay must not be negative",
            ),
            (
                self.poc_validation_duration > 0,
                "poc_validation_duration must be positive",
            ),
            (
                self.set_new_validators_delay >= 0,
                "set_new_validators_delay must not be negative",
            ),
            (
                self.inference_validation_cutoff >= 0,
                "inference_validation_cutoff must not be negative",
            ),
            (
                self.inference_pruning_epoch_threshold >= 1,
                "inference_pruning_epoch_threshold must be at least 1",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(InvalidParams((*msg).to_owned())),
            None => Ok(()),
        }
    }
}

/// `trunc(float64(d) * 0.8)`.
pub fn wind_down_offset(d: i64) -> i64 {
    (d as f64 * WIND_DOWN_FACTOR).trunc() as i64
}

/// `Epoch{index, poc_start_block_height}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epoch {
    /// Epoch number (0 = genesis, which runs no PoC).
    #[serde(with = "crate::json::u64_string")]
    pub index: u64,
    /// S: the height its PoC starts.
    #[serde(with = "crate::json::i64_string")]
    pub poc_start_block_height: i64,
}

/// The phase of the PoC timeline at a height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Nonce generation.
    PoCGenerate,
    /// The last 20 % of generation plus the validation delay.
    PoCGenerateWindDown,
    /// Validation.
    PoCValidate,
    /// The last 20 % of validation.
    PoCValidateWindDown,
    /// Everything else.
    Inference,
}

impl Phase {
    /// The reference's string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PoCGenerate => "PoCGenerate",
            Self::PoCGenerateWindDown => "PoCGenerateWindDown",
            Self::PoCValidate => "PoCValidate",
            Self::PoCValidateWindDown => "PoCValidateWindDown",
            Self::Inference => "Inference",
        }
    }
}

/// An epoch with the parameters its heights derive from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochContext {
    /// The epoch.
    pub epoch: Epoch,
    /// Current parameters.
    pub params: EpochParams,
}

/// An inclusive height window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// First height.
    #[serde(with = "crate::json::i64_string")]
    pub start: i64,
    /// Last height.
    #[serde(with = "crate::json::i64_string")]
    pub end: i64,
}

impl Window {
    /// Whether `h` is inside.
    pub fn contains(&self, h: i64) -> bool {
        self.start <= h && h <= self.end
    }
}

impl EpochContext {
    /// A context.
    pub fn new(epoch: Epoch, params: EpochParams) -> Self {
        Self { epoch, params }
    }

    fn zero(&self) -> bool {
        self.epoch.index == 0
    }

    fn s(&self) -> i64 {
        self.epoch.poc_start_block_height
    }

    /// S (0 for epoch 0).
    pub fn start_of_poc(&self) -> i64 {
        if self.zero() { 0 } else { self.s() }
    }

    /// S + trunc(0.8 · poc_stage_duration).
    pub fn poc_generation_wind_down(&self) -> i64 {
        if self.zero() {
            0
        } else {
            self.s() + wind_down_offset(self.params.poc_stage_duration)
        }
    }

    /// S + poc_stage_duration.
    pub fn end_of_poc_generation(&self) -> i64 {
        if self.zero() {
            0
        } else {
            self.s() + self.params.poc_stage_duration
        }
    }

    /// EndOfPoCGeneration + poc_exchange_duration.
    pub fn poc_exchange_deadline(&self) -> i64 {
        if self.zero() {
            0
        } else {
            self.end_of_poc_generation() + self.params.poc_exchange_duration
        }
    }

    /// EndOfPoCGeneration + poc_validation_delay.
    pub fn start_of_poc_validation(&self) -> i64 {
        if self.zero() {
            0
        } else {
            self.end_of_poc_generation() + self.params.poc_validation_delay
        }
    }

    /// StartOfPoCValidation + trunc(0.8 · poc_validation_duration).
    pub fn poc_validation_wind_down(&self) -> i64 {
        if self.zero() {
            0
        } else {
            self.start_of_poc_validation() + wind_down_offset(self.params.poc_validation_duration)
        }
    }

    /// StartOfPoCValidation + poc_validation_duration.
    pub fn end_of_poc_validation(&self) -> i64 {
        if self.zero() {
            0
        } else {
            self.start_of_poc_validation() + self.params.poc_validation_duration
        }
    }

    /// Whether, after block `height`, this (the latest) epoch is still the upcoming one:
    /// its PoC has begun and its weights are not yet effective (they are from the end of
    /// block SetNewValidators on). A Gonka node's `epoch_info` names only the latest
    /// epoch, so a client derives the effective one by this rule.
    pub fn is_upcoming_at(&self, height: i64) -> bool {
        !self.zero() && height < self.set_new_validators()
    }

    /// EndOfPoCValidation + set_new_validators_delay.
    pub fn set_new_validators(&self) -> i64 {
        if self.zero() {
            0
        } else {
            self.end_of_poc_validation() + self.params.set_new_validators_delay
        }
    }

    /// SetNewValidators + 1.
    pub fn claim_money(&self) -> i64 {
        if self.zero() {
            0
        } else {
            self.set_new_validators() + 1
        }
    }

    /// S + epoch_length (epoch 0: epoch_length − epoch_shift).
    pub fn next_poc_start(&self) -> i64 {
        if self.zero() {
            self.params.epoch_length - self.params.epoch_shift
        } else {
            self.s() + self.params.epoch_length
        }
    }

    /// NextPoCStart − inference_validation_cutoff.
    pub fn inference_validation_cutoff(&self) -> i64 {
        self.next_poc_start() - self.params.inference_validation_cutoff
    }

    /// [S + 1, PoCExchangeDeadline].
    pub fn poc_exchange_window(&self) -> Window {
        Window {
            start: self.start_of_poc() + 1,
            end: self.poc_exchange_deadline(),
        }
    }

    /// [StartOfPoCValidation + 1, EndOfPoCValidation].
    pub fn validation_exchange_window(&self) -> Window {
        Window {
            start: self.start_of_poc_validation() + 1,
            end: self.end_of_poc_validation(),
        }
    }

    /// The phase at height `h` (Inference for epoch 0 and before S).
    pub fn phase(&self, h: i64) -> Phase {
        if self.zero() || h < self.s() {
            return Phase::Inference;
        }
        if h < self.poc_generation_wind_down() {
            Phase::PoCGenerate
        } else if h < self.start_of_poc_validation() {
            Phase::PoCGenerateWindDown
        } else if h < self.poc_validation_wind_down() {
            Phase::PoCValidate
        } else if h < self.end_of_poc_validation() {
            Phase::PoCValidateWindDown
        } else {
            Phase::Inference
        }
    }

    /// Whether `h` is where this epoch's successor starts its PoC.
    pub fn is_start_of_next_poc(&self, h: i64) -> bool {
        h == self.next_poc_start()
    }

    /// Whether this epoch's validation starts at `h` (never for epoch 0).
    pub fn is_start_of_poc_validation(&self, h: i64) -> bool {
        !self.zero() && h == self.start_of_poc_validation()
    }

    /// Whether this epoch's validation ends at `h`.
    pub fn is_end_of_poc_validation(&self, h: i64) -> bool {
        !self.zero() && h == self.end_of_poc_validation()
    }

    /// Whether this epoch's validators take over at `h`.
    pub fn is_set_new_validators(&self, h: i64) -> bool {
        !self.zero() && h == self.set_new_validators()
    }

    /// The `EpochStages` JSON of the reference's APIs.
    pub fn stages(&self) -> EpochStages {
        EpochStages {
            epoch_index: self.epoch.index,
            poc_start: self.start_of_poc(),
            poc_generation_wind_down: self.poc_generation_wind_down(),
            poc_generation_end: self.end_of_poc_generation(),
            poc_validation_start: self.start_of_poc_validation(),
            poc_validation_wind_down: self.poc_validation_wind_down(),
            poc_validation_end: self.end_of_poc_validation(),
            set_new_validators: self.set_new_validators(),
            claim_money: self.claim_money(),
            inference_validation_cutoff: self.inference_validation_cutoff(),
            next_poc_start: self.next_poc_start(),
            poc_exchange_window: self.poc_exchange_window(),
            poc_validation_exchange_window: self.validation_exchange_window(),
        }
    }
}

/// All derived heights of an epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStages {
    pub epoch_index: u64,
    /// S.
    pub poc_start: i64,
    /// Generation wind-down.
    pub poc_generation_wind_down: i64,
    /// Generation end.
    pub poc_generation_end: i64,
    /// Validation start.
    pub poc_validation_start: i64,
    /// Validation wind-down.
    pub poc_validation_wind_down: i64,
    /// Validation end.
    pub poc_validation_end: i64,
    /// New validators.
    pub set_new_validators: i64,
    /// Reward claim.
    pub claim_money: i64,
    pub inference_validation_cutoff: i64,
    pub next_poc_start: i64,
    pub poc_exchange_window: Window,
    /// Validation exchange window.
    pub poc_validation_exchange_window: Window,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mainnet_v0_2_10() -> EpochParams {
        EpochParams {
            epoch_length: 17280,
            poc_stage_duration: 35,
            poc_exchange_duration: 0,
            poc_validation_delay: 5,
            poc_validation_duration: 240,
            set_new_validators_delay: 120,
            inference_validation_cutoff: 2,
            ..EpochParams::default()
        }
    }

    #[test]
    fn worked_example_from_the_spec() {
        let s = 1_000_000;
        let c = EpochContext::new(
            Epoch {
                index: 5,
                poc_start_block_height: s,
            },
            mainnet_v0_2_10(),
        );
        assert_eq!(c.poc_generation_wind_down(), s + 28);
        assert_eq!(c.end_of_poc_generation(), s + 35);
        assert_eq!(
            c.poc_exchange_window(),
            Window {
                start: s + 1,
                end: s + 35
            }
        );
        assert_eq!(c.start_of_poc_validation(), s + 40);
        assert_eq!(c.poc_validation_wind_down(), s + 232);
        assert_eq!(c.end_of_poc_validation(), s + 280);
        assert_eq!(
            c.validation_exchange_window(),
            Window {
                start: s + 41,
                end: s + 280
            }
        );
        assert_eq!(c.set_new_validators(), s + 400);
        assert_eq!(c.claim_money(), s + 401);
        assert_eq!(c.next_poc_start(), s + 17280);
        assert_eq!(c.inference_validation_cutoff(), s + 17278);
    }

    #[test]
    fn phases_and_boundaries() {
        let p = EpochParams::default(); // stage 10, exchange 2, delay 2, validation 6
        let c = EpochContext::new(
            Epoch {
                index: 1,
                poc_start_block_height: 40,
            },
            p,
        );
        let phases: Vec<(i64, Phase)> = (38..62).map(|h| (h, c.phase(h))).collect();
        for (h, ph) in phases {
            let want = match h {
                ..40 => Phase::Inference,
                40..48 => Phase::PoCGenerate, // wind-down at 40 + trunc(8.0)
                48..52 => Phase::PoCGenerateWindDown, // validation starts at 50 + 2
                52..56 => Phase::PoCValidate, // 52 + trunc(4.8) = 56
                56..58 => Phase::PoCValidateWindDown,
                _ => Phase::Inference,
            };
            assert_eq!(ph, want, "height {h}");
        }
        assert!(c.is_start_of_poc_validation(52));
        assert!(c.is_end_of_poc_validation(58));
        assert!(c.is_set_new_validators(59));
        assert_eq!(c.phase(58).as_str(), "Inference");
    }

    #[test]
    fn epoch_zero_has_no_poc() {
        let p = EpochParams {
            epoch_shift: 3,
            ..EpochParams::default()
        };
        let c = EpochContext::new(
            Epoch {
                index: 0,
                poc_start_block_height: 0,
            },
            p,
        );
        assert_eq!(c.next_poc_start(), 37);
        assert_eq!(c.end_of_poc_validation(), 0);
        assert!(!c.is_end_of_poc_validation(0));
        assert!(!c.is_start_of_poc_validation(0));
        assert_eq!(c.phase(5), Phase::Inference);
        assert!(c.is_start_of_next_poc(37));
    }

    #[test]
    fn float_truncation_of_wind_down() {
        assert_eq!(wind_down_offset(35), 28);
        assert_eq!(wind_down_offset(240), 192);
        assert_eq!(wind_down_offset(3), 2); // 2.4000000000000004
        assert_eq!(wind_down_offset(1), 0);
        assert_eq!(wind_down_offset(5), 4);
        assert_eq!(wind_down_offset(-5), -4);
    }

    #[test]
    fn params_validation() {
        assert!(EpochParams::default().validate().is_ok());
        let bad = EpochParams {
            poc_validation_duration: 0,
            ..EpochParams::default()
        };
        assert_eq!(
            bad.validate(),
            Err("poc_validation_duration must be positive".into())
        );
    }
}
