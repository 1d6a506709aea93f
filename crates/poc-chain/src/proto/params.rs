//! The parameter set between its domain type and its wire form.

use super::{
    AccessParamsProto, ConfirmationParamsProto, DecimalProto, EpochParamsProto, ParamsProto,
    PocParamsProto, StatTestProto,
};
use crate::decimal::Decimal;
use crate::epoch::EpochParams;
use crate::error::InvalidParams;
use crate::params::{AccessParams, ConfirmationPocParams, Params, PocParams, StatTestParams};

fn dec_to(d: &Option<Decimal>) -> Option<DecimalProto> {
    d.map(|d| DecimalProto {
        value: d.value,
        exponent: d.exponent,
    })
}

fn dec_from(d: &Option<DecimalProto>) -> Option<Decimal> {
    d.as_ref().map(|d| Decimal::new(d.value, d.exponent))
}

impl From<&Params> for ParamsProto {
    fn from(p: &Params) -> Self {
        let e = &p.epoch_params;
        let pp = &p.poc_params;
        let c = &p.confirmation_poc_params;
        let a = &p.access_params;
        ParamsProto {
            epoch_params: Some(EpochParamsProto {
                epoch_length: e.epoch_length,
                epoch_multiplier: e.epoch_multiplier,
                epoch_shift: e.epoch_shift,
                poc_stage_duration: e.poc_stage_duration,
                poc_exchange_duration: e.poc_exchange_duration,
                poc_validation_delay: e.poc_validation_delay,
                poc_validation_duration: e.poc_validation_duration,
                set_new_validators_delay: e.set_new_validators_delay,
                inference_validation_cutoff: e.inference_validation_cutoff,
                inference_pruning_epoch_threshold: e.inference_pruning_epoch_threshold,
                inference_pruning_max: e.inference_pruning_max,
                poc_pruning_max: e.poc_pruning_max,
                poc_slot_allocation: dec_to(&e.poc_slot_allocation),
            }),
            poc_params: Some(PocParamsProto {
                default_difficulty: pp.default_difficulty,
                validation_sample_size: pp.validation_sample_size,
                poc_data_pruning_epoch_threshold: pp.poc_data_pruning_epoch_threshold,
                weight_scale_factor: dec_to(&pp.weight_scale_factor),
                model_id: pp.model_id.clone(),
                seq_len: pp.seq_len,
                poc_v2_enabled: pp.poc_v2_enabled,
                confirmation_poc_v2_enabled: pp.confirmation_poc_v2_enabled,
                stat_test: pp.stat_test.as_ref().map(|s| StatTestProto {
                    dist_threshold: dec_to(&s.dist_threshold),
                    p_mismatch: dec_to(&s.p_mismatch),
                    p_value_threshold: dec_to(&s.p_value_threshold),
                }),
                validation_slots: pp.validation_slots,
                poc_normalization_enabled: pp.poc_normalization_enabled,
            }),
            confirmation_poc_params: Some(ConfirmationParamsProto {
                expected_confirmations_per_epoch: c.expected_confirmations_per_epoch,
                alpha_threshold: dec_to(&c.alpha_threshold),
                slash_fraction: dec_to(&c.slash_fraction),
                upgrade_protection_window: c.upgrade_protection_window,
            }),
            access_params: Some(AccessParamsProto {
                guardian_addresses: a.guardian_addresses.clone(),
                genesis_guardian_enabled: a.genesis_guardian_enabled,
                blocked_participant_addresses: a.blocked_participant_addresses.clone(),
                use_participant_allowlist: a.use_participant_allowlist,
                allowed_participant_addresses: a.allowed_participant_addresses.clone(),
            }),
        }
    }
}

impl ParamsProto {
    /// Back to the domain type; missing sections are an error (a governance message
    /// always carries the complete parameter set).
    pub fn to_params(&self) -> Result<Params, InvalidParams> {
        let e = self
            .epoch_params
            .as_ref()
            .ok_or("params.epoch_params is missing")?;
        let pp = self
            .poc_params
            .as_ref()
            .ok_or("params.poc_params is missing")?;
        let c = self.confirmation_poc_params.clone().unwrap_or_default();
        let a = self.access_params.clone().unwrap_or_default();
        Ok(Params {
            epoch_params: EpochParams {
                epoch_length: e.epoch_length,
                epoch_multiplier: e.epoch_multiplier,
                epoch_shift: e.epoch_shift,
                poc_stage_duration: e.poc_stage_duration,
                poc_exchange_duration: e.poc_exchange_duration,
                poc_validation_delay: e.poc_validation_delay,
                poc_validation_duration: e.poc_validation_duration,
                set_new_validators_delay: e.set_new_validators_delay,
                inference_validation_cutoff: e.inference_validation_cutoff,
                inference_pruning_epoch_threshold: e.inference_pruning_epoch_threshold,
                inference_pruning_max: e.inference_pruning_max,
                poc_pruning_max: e.poc_pruning_max,
                poc_slot_allocation: dec_from(&e.poc_slot_allocation),
            },
            poc_params: PocParams {
                default_difficulty: pp.default_difficulty,
                validation_sample_size: pp.validation_sample_size,
                poc_data_pruning_epoch_threshold: pp.poc_data_pruning_epoch_threshold,
                weight_scale_factor: dec_from(&pp.weight_scale_factor),
                model_id: pp.model_id.clone(),
                seq_len: pp.seq_len,
                poc_v2_enabled: pp.poc_v2_enabled,
                confirmation_poc_v2_enabled: pp.confirmation_poc_v2_enabled,
                stat_test: pp.stat_test.as_ref().map(|s| StatTestParams {
                    dist_threshold: dec_from(&s.dist_threshold),
                    p_mismatch: dec_from(&s.p_mismatch),
                    p_value_threshold: dec_from(&s.p_value_threshold),
                }),
                validation_slots: pp.validation_slots,
                poc_normalization_enabled: pp.poc_normalization_enabled,
            },
            confirmation_poc_params: ConfirmationPocParams {
                expected_confirmations_per_epoch: c.expected_confirmations_per_epoch,
                alpha_threshold: dec_from(&c.alpha_threshold),
                slash_fraction: dec_from(&c.slash_fraction),
                upgrade_protection_window: c.upgrade_protection_window,
            },
            access_params: AccessParams {
                guardian_addresses: a.guardian_addresses,
                genesis_guardian_enabled: a.genesis_guardian_enabled,
                blocked_participant_addresses: a.blocked_participant_addresses,
                use_participant_allowlist: a.use_participant_allowlist,
                allowed_participant_addresses: a.allowed_participant_addresses,
            },
        })
    }
}
