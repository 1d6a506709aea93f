//! Chain parameters that drive PoC (`docs/protocol/chain-and-api.md` §4).

use serde::{Deserialize, Serialize};

use crate::decimal::Decimal;
use crate::epoch::EpochParams;
pub use crate::error::InvalidParams;

/// `PoCStatTestParams`: forwarded to ML nodes as `stat_test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatTestParams {
    /// L2 distance above which a nonce mismatches.
    pub dist_threshold: Option<Decimal>,
    /// Honest mismatch probability.
    pub p_mismatch: Option<Decimal>,
    /// p-value cutoff.
    pub p_value_threshold: Option<Decimal>,
}

impl Default for StatTestParams {
    /// `{0.4, 0.1, 0.05}`.
    fn default() -> Self {
        Self {
            dist_threshold: Some(Decimal::new(4, -1)),
            p_mismatch: Some(Decimal::new(1, -1)),
            p_value_threshold: Some(Decimal::new(5, -2)),
        }
    }
}

/// `PocParams` (field numbers in `params.proto` are wire-relevant; names match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PocParams {
    /// v1 difficulty.
    pub default_difficulty: i32,
    /// Leaves (v2) / nonces (v1) sampled per validated participant.
    pub validation_sample_size: i32,
    /// v1 pruning threshold (epochs).
    #[serde(with = "crate::json::u64_string")]
    pub poc_data_pruning_epoch_threshold: u64,
    /// weight = count × factor; unset means 1.
    pub weight_scale_factor: Option<Decimal>,
    /// Served model id sent to ML nodes.
    pub model_id: String,
    /// Sequence length sent to ML nodes.
    #[serde(with = "crate::json::i64_string")]
    pub seq_len: i64,
    /// V1/V2 switch.
    pub poc_v2_enabled: bool,
    /// Migration-mode enabler (V2 tracking on confirmation event 0).
    pub confirmation_poc_v2_enabled: bool,
    /// Thresholds forwarded to ML nodes.
    pub stat_test: Option<StatTestParams>,
    /// Validators assigned per participant (0 = everyone validates everyone).
    pub validation_slots: u32,
    /// Time normalisation of weights.
    pub poc_normalization_enabled: bool,
}

impl Default for PocParams {
    /// `DefaultPocParams` (note: `poc_v2_enabled` defaults to false in the Go code).
    fn default() -> Self {
        Self {
            default_difficulty: 5,
            validation_sample_size: 200,
            poc_data_pruning_epoch_threshold: 1,
            weight_scale_factor: Some(Decimal::new(1, 0)),
            model_id: String::new(),
            seq_len: 256,
            poc_v2_enabled: false,
            confirmation_poc_v2_enabled: false,
            stat_test: Some(StatTestParams::default()),
            validation_slots: 0,
            poc_normalization_enabled: false,
        }
    }
}

impl PocParams {
    /// Checks what the reference validates.
    pub fn validate(&self) -> Result<(), InvalidParams> {
        if self.seq_len < 0 {
            return Err(InvalidParams("seq_len must not be negative".into()));
        }
        if self.validation_sample_size < 0 {
            return Err(InvalidParams(
                "validation_sample_size must not be negative".into(),
            ));
        }
        Ok(())
    }

    /// The weight scale factor, with nil or `{0,0}` meaning 1.
    pub fn weight_scale(&self) -> Decimal {
        match self.weight_scale_factor {
            None => Decimal::new(1, 0),
            Some(d) if d.is_unset() => Decimal::new(1, 0),
            Some(d) => d,
        }
    }
}

/// `ConfirmationPoCParams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmationPocParams {
    /// Expected events per epoch (0 disables).
    #[serde(with = "crate::json::u64_string")]
    pub expected_confirmations_per_epoch: u64,
    /// Ratio below which a participant is deactivated (0 disables).
    pub alpha_threshold: Option<Decimal>,
    /// Present but unused by PoC.
    pub slash_fraction: Option<Decimal>,
    /// No trigger this close to an upgrade (≤ 0 means 500).
    #[serde(with = "crate::json::i64_string")]
    pub upgrade_protection_window: i64,
}

impl Default for ConfirmationPocParams {
    fn default() -> Self {
        Self {
            expected_confirmations_per_epoch: 0,
            alpha_threshold: Some(Decimal::new(0, 0)),
            slash_fraction: Some(Decimal::new(0, 0)),
            upgrade_protection_window: 500,
        }
    }
}

/// `GenesisGuardianParams`: the guardians that break vote ties (§5.2). The two
/// network-maturity fields are carried for the reference; this chain does not read them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisGuardianParams {
    /// Total network power from which the network counts as mature.
    #[serde(default, with = "crate::json::i64_string")]
    pub network_maturity_threshold: i64,
    /// Height from which the network counts as mature.
    #[serde(default, with = "crate::json::i64_string")]
    pub network_maturity_min_height: i64,
    /// Guardian validator-operator (or account) addresses.
    #[serde(default)]
    pub guardian_addresses: Vec<String>,
}

/// `ParticipantAccessParams`: the blocklist and whether the allowlist applies. The two
/// height fields are carried for the reference; this chain does not read them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantAccessParams {
    /// No new participants below this height (0: none).
    #[serde(default, with = "crate::json::i64_string")]
    pub new_participant_registration_start_height: i64,
    /// Participants whose votes and v1 batches are refused.
    #[serde(default)]
    pub blocked_participant_addresses: Vec<String>,
    /// When set, only allowlisted participants get PoC weight.
    #[serde(default)]
    pub use_participant_allowlist: bool,
    /// The allowlist applies below this height (0: always).
    #[serde(default, with = "crate::json::i64_string")]
    pub participant_allowlist_until_block_height: i64,
}

/// What this chain governs in its parameters that the reference keeps elsewhere: the
/// guardian switch (a genesis-only parameter there) and the allowlist itself (a store
/// of its own there, with messages to edit it). Proto field 1000 of `Params`, which the
/// reference does not use (`docs/chain.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionParams {
    /// Whether the guardian tie-break is enabled.
    #[serde(default)]
    pub genesis_guardian_enabled: bool,
    /// The allowlist.
    #[serde(default)]
    pub allowed_participant_addresses: Vec<String>,
}

/// Sections of the reference's parameter set this chain does not interpret
/// (`validation_params`, `tokenomics_params`, ...), kept as their encoded protobuf by
/// section name, so that an update carries them through unchanged. Base64 in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CarriedParams(
    #[serde(with = "crate::json::base64_map")] pub std::collections::BTreeMap<String, Vec<u8>>,
);

impl CarriedParams {
    /// Whether nothing is carried.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Everything `MsgUpdateParams` can set, under the reference's section names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Epoch timeline.
    pub epoch_params: EpochParams,
    pub poc_params: PocParams,
    /// Confirmation PoC.
    pub confirmation_poc_params: ConfirmationPocParams,
    /// Guardians.
    #[serde(default)]
    pub genesis_guardian_params: GenesisGuardianParams,
    /// Blocklist and allowlist switch.
    #[serde(default)]
    pub participant_access_params: ParticipantAccessParams,
    /// This chain's own additions.
    #[serde(default)]
    pub extension_params: ExtensionParams,
    /// The reference's sections this chain does not interpret.
    #[serde(default, skip_serializing_if = "CarriedParams::is_empty")]
    pub carried: CarriedParams,
}

impl Params {
    /// Validates every part.
    pub fn validate(&self) -> Result<(), InvalidParams> {
        self.epoch_params.validate()?;
        self.poc_params.validate()
    }
}

/// Which PoC the chain runs (`module/poc_migration.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PocMode {
    /// Everything v1.
    FullV1,
    /// Regular PoC v1; confirmation event 0 also tracked with v2 (dry run).
    Migration,
    /// Everything v2.
    FullV2,
}

impl PocMode {
    /// `ModeFullV2` if `poc_v2_enabled` (whatever the other flag), `ModeMigration` if only
    /// `confirmation_poc_v2_enabled`, else `ModeFullV1`.
    pub fn of(p: &PocParams) -> Self {
        if p.poc_v2_enabled {
            Self::FullV2
        } else if p.confirmation_poc_v2_enabled {
            Self::Migration
        } else {
            Self::FullV1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_modes() {
        let p = PocParams::default();
        assert!(!p.poc_v2_enabled);
        assert_eq!(p.seq_len, 256);
        assert_eq!(PocMode::of(&p), PocMode::FullV1);
        assert_eq!(
            PocMode::of(&PocParams {
                confirmation_poc_v2_enabled: true,
                ..p.clone()
            }),
            PocMode::Migration
        );
        assert_eq!(
            PocMode::of(&PocParams {
                poc_v2_enabled: true,
                ..p.clone()
            }),
            PocMode::FullV2
        );
        assert_eq!(
            PocMode::of(&PocParams {
                poc_v2_enabled: true,
                confirmation_poc_v2_enabled: false,
                ..p.clone()
            }),
            PocMode::FullV2
        );
        assert_eq!(
            PocParams {
                weight_scale_factor: Some(Decimal::new(0, 0)),
                ..p.clone()
            }
            .weight_scale(),
            Decimal::new(1, 0)
        );
        assert_eq!(
            PocParams {
                weight_scale_factor: None,
                ..p.clone()
            }
            .weight_scale(),
            Decimal::new(1, 0)
        );
        assert_eq!(
            ConfirmationPocParams::default().upgrade_protection_window,
            500
        );
        let json = serde_json::to_value(PocParams::default()).unwrap();
        assert_eq!(json["seq_len"], "256");
        assert_eq!(
            json["weight_scale_factor"],
            serde_json::json!({"value": "1", "exponent": 0})
        );
    }
}
