//! The parameter set between its domain type and its wire form.

use std::collections::BTreeMap;

use super::{
    ConfirmationParamsProto, DecimalProto, EpochParamsProto, ExtensionParamsProto,
    GenesisGuardianParamsProto, ParamsProto, ParticipantAccessParamsProto, PocParamsProto,
    StatTestProto,
};
use crate::decimal::Decimal;
use crate::epoch::EpochParams;
use crate::error::InvalidParams;
use crate::params::{
    CarriedParams, ConfirmationPocParams, ExtensionParams, GenesisGuardianParams, Params,
    ParticipantAccessParams, PocParams, StatTestParams,
};

/// Name under which the deprecated `poc_params.model_params` is carried.
const MODEL_PARAMS: &str = "poc_params.model_params";

/// The uninterpreted sections of `ParamsProto`, by name, for carrying them both ways.
macro_rules! carried_sections {
    ($m:ident) => {
        $m!(
            validation_params,
            tokenomics_params,
            collateral_params,
            bitcoin_reward_params,
            dynamic_pricing_params,
            bandwidth_limits_params,
            developer_access_params,
            transfer_agent_access_params,
            subnet_escrow_params
        )
    };
}

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
        let g = &p.genesis_guardian_params;
        let a = &p.participant_access_params;
        let x = &p.extension_params;
        let carried = |name: &str| p.carried.0.get(name).cloned();
        macro_rules! to_proto {
            ($($f:ident),*) => {
                ParamsProto {
                    $($f: carried(stringify!($f)),)*
                    ..ParamsProto::default()
                }
            };
        }
        let sections = carried_sections!(to_proto);
        ParamsProto {
            epoch_params: Some(EpochParamsProto {
                epoch_length: e.epoch_length,
                epoch_multiplier: e.epoch_multiplier,
                epoch_shift: e.epoch_shift,
                default_unit_of_compute_price: e.default_unit_of_compute_price,
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
                confirmation_poc_safety_window: e.confirmation_poc_safety_window,
            }),
            poc_params: Some(PocParamsProto {
                default_difficulty: pp.default_difficulty,
                validation_sample_size: pp.validation_sample_size,
                poc_data_pruning_epoch_threshold: pp.poc_data_pruning_epoch_threshold,
                weight_scale_factor: dec_to(&pp.weight_scale_factor),
                model_params: carried(MODEL_PARAMS),
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
            genesis_guardian_params: Some(GenesisGuardianParamsProto {
                network_maturity_threshold: g.network_maturity_threshold,
                network_maturity_min_height: g.network_maturity_min_height,
                guardian_addresses: g.guardian_addresses.clone(),
            }),
            participant_access_params: Some(ParticipantAccessParamsProto {
                new_participant_registration_start_height: a
                    .new_participant_registration_start_height,
                blocked_participant_addresses: a.blocked_participant_addresses.clone(),
                use_participant_allowlist: a.use_participant_allowlist,
                participant_allowlist_until_block_height: a
                    .participant_allowlist_until_block_height,
            }),
            // Left out when empty, so a reference parameter set encodes as it came.
            extension_params: (*x != ExtensionParams::default()).then(|| ExtensionParamsProto {
                genesis_guardian_enabled: x.genesis_guardian_enabled,
                allowed_participant_addresses: x.allowed_participant_addresses.clone(),
            }),
            ..sections
        }
    }
}

impl ParamsProto {
    /// Back to the domain type. A missing epoch or PoC section is an error (a
    /// governance message carries the complete parameter set); the other sections
    /// default, and the ones this chain does not interpret are kept as bytes.
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
        let g = self.genesis_guardian_params.clone().unwrap_or_default();
        let a = self.participant_access_params.clone().unwrap_or_default();
        let x = self.extension_params.clone().unwrap_or_default();
        let mut carried = BTreeMap::new();
        macro_rules! from_proto {
            ($($f:ident),*) => {
                $(if let Some(b) = &self.$f {
                    carried.insert(stringify!($f).to_owned(), b.clone());
                })*
            };
        }
        carried_sections!(from_proto);
        if let Some(b) = &pp.model_params {
            carried.insert(MODEL_PARAMS.to_owned(), b.clone());
        }
        Ok(Params {
            epoch_params: EpochParams {
                epoch_length: e.epoch_length,
                epoch_multiplier: e.epoch_multiplier,
                epoch_shift: e.epoch_shift,
                default_unit_of_compute_price: e.default_unit_of_compute_price,
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
                confirmation_poc_safety_window: e.confirmation_poc_safety_window,
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
            genesis_guardian_params: GenesisGuardianParams {
                network_maturity_threshold: g.network_maturity_threshold,
                network_maturity_min_height: g.network_maturity_min_height,
                guardian_addresses: g.guardian_addresses,
            },
            participant_access_params: ParticipantAccessParams {
                new_participant_registration_start_height: a
                    .new_participant_registration_start_height,
                blocked_participant_addresses: a.blocked_participant_addresses,
                use_participant_allowlist: a.use_participant_allowlist,
                participant_allowlist_until_block_height: a
                    .participant_allowlist_until_block_height,
            },
            extension_params: ExtensionParams {
                genesis_guardian_enabled: x.genesis_guardian_enabled,
                allowed_participant_addresses: x.allowed_participant_addresses,
            },
            carried: CarriedParams(carried),
        })
    }
}
