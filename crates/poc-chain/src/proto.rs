//! Protobuf wire types (prost). The PoC messages use the reference's package
//! `inference.inference`, message names and field numbers; authz messages follow
//! `cosmos.authz.v1beta1`. `EpochParams` and `PocParams` keep the reference's field
//! numbers; the enclosing `Params`, `MsgSubmitSeed` and the transaction envelope are this
//! chain's own (documented in `docs/chain.md`).

use prost::Message;

use crate::decimal::Decimal;
use crate::epoch::EpochParams;
use crate::msgs::{MlNodeWeight, Msg, ValidationPayloadV2};
use crate::params::{AccessParams, ConfirmationPocParams, Params, PocParams, StatTestParams};

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    /// Type URL.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// Encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// The transaction envelope.
#[derive(Clone, PartialEq, Message)]
pub struct TxProto {
    /// Chain id.
    #[prost(string, tag = "1")]
    pub chain_id: String,
    /// 33-byte compressed secp256k1 public key of the signer.
    #[prost(bytes = "vec", tag = "2")]
    pub pub_key: Vec<u8>,
    /// Account sequence.
    #[prost(uint64, tag = "3")]
    pub sequence: u64,
    /// Messages.
    #[prost(message, repeated, tag = "4")]
    pub messages: Vec<Any>,
    /// 64-byte `r ‖ s` (low-S) over SHA-256 of the sign doc.
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
}

/// What is signed: the envelope without the signature.
#[derive(Clone, PartialEq, Message)]
pub struct SignDoc {
    /// Chain id.
    #[prost(string, tag = "1")]
    pub chain_id: String,
    /// Signer key.
    #[prost(bytes = "vec", tag = "2")]
    pub pub_key: Vec<u8>,
    /// Sequence.
    #[prost(uint64, tag = "3")]
    pub sequence: u64,
    /// Messages.
    #[prost(message, repeated, tag = "4")]
    pub messages: Vec<Any>,
}

macro_rules! pmsg {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty = $attr:tt),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Message)]
        #[allow(missing_docs)]
        pub struct $name { $( #[prost $attr] $(#[$fm])* pub $f: $t, )* }
    };
}

pmsg!(
    /// `inference.inference.MsgSubmitPocBatch`.
    MsgSubmitPocBatch {
        creator: String = (string, tag = "1"),
        poc_stage_start_block_height: i64 = (int64, tag = "2"),
        batch_id: String = (string, tag = "3"),
        nonces: Vec<i64> = (int64, repeated, tag = "4"),
        dist: Vec<f64> = (double, repeated, tag = "5"),
        node_id: String = (string, tag = "6"),
    }
);
pmsg!(
    /// `inference.inference.MsgSubmitPocValidation`.
    MsgSubmitPocValidation {
        creator: String = (string, tag = "1"),
        participant_address: String = (string, tag = "2"),
        poc_stage_start_block_height: i64 = (int64, tag = "3"),
        nonces: Vec<i64> = (int64, repeated, tag = "4"),
        dist: Vec<f64> = (double, repeated, tag = "5"),
        received_dist: Vec<f64> = (double, repeated, tag = "6"),
        r_target: f64 = (double, tag = "7"),
        fraud_threshold: f64 = (double, tag = "8"),
        n_invalid: i64 = (int64, tag = "9"),
        probability_honest: f64 = (double, tag = "10"),
        fraud_detected: bool = (bool, tag = "11"),
    }
);
pmsg!(
    /// `inference.inference.MsgPoCV2StoreCommit`.
    MsgPoCv2StoreCommit {
        creator: String = (string, tag = "1"),
        poc_stage_start_block_height: i64 = (int64, tag = "2"),
        count: u32 = (uint32, tag = "3"),
        root_hash: Vec<u8> = (bytes = "vec", tag = "4"),
    }
);
pmsg!(
    /// `inference.inference.MLNodeWeight`.
    MlNodeWeightProto {
        node_id: String = (string, tag = "1"),
        weight: u32 = (uint32, tag = "2"),
    }
);
pmsg!(
    /// `inference.inference.MsgMLNodeWeightDistribution`.
    MsgMlNodeWeightDistribution {
        creator: String = (string, tag = "1"),
        poc_stage_start_block_height: i64 = (int64, tag = "2"),
        weights: Vec<MlNodeWeightProto> = (message, repeated, tag = "3"),
    }
);
pmsg!(
    /// `inference.inference.PoCValidationPayloadV2`.
    PocValidationPayloadV2 {
        participant_address: String = (string, tag = "1"),
        validated_weight: i64 = (int64, tag = "2"),
    }
);
pmsg!(
    /// `inference.inference.MsgSubmitPocValidationsV2`.
    MsgSubmitPocValidationsV2 {
        creator: String = (string, tag = "1"),
        poc_stage_start_block_height: i64 = (int64, tag = "2"),
        validations: Vec<PocValidationPayloadV2> = (message, repeated, tag = "3"),
    }
);
pmsg!(
    /// `inference.inference.MsgSubmitNewParticipant` (`worker_key` = 4 is accepted and ignored).
    MsgSubmitNewParticipant {
        creator: String = (string, tag = "1"),
        url: String = (string, tag = "2"),
        validator_key: String = (string, tag = "3"),
        worker_key: String = (string, tag = "4"),
    }
);
pmsg!(
    /// `inference.inference.MsgSubmitSeed` (this chain's fields).
    MsgSubmitSeed {
        creator: String = (string, tag = "1"),
        epoch_index: u64 = (uint64, tag = "2"),
        signature: String = (string, tag = "3"),
    }
);
pmsg!(
    /// `cosmos.authz.v1beta1.GenericAuthorization`.
    GenericAuthorization {
        msg: String = (string, tag = "1"),
    }
);
pmsg!(
    /// `cosmos.authz.v1beta1.Grant` (expiration = 2 is not used).
    Grant {
        authorization: Option<Any> = (message, optional, tag = "1"),
    }
);
pmsg!(
    /// `cosmos.authz.v1beta1.MsgGrant`.
    MsgGrant {
        granter: String = (string, tag = "1"),
        grantee: String = (string, tag = "2"),
        grant: Option<Grant> = (message, optional, tag = "3"),
    }
);
pmsg!(
    /// `cosmos.authz.v1beta1.MsgRevoke`.
    MsgRevoke {
        granter: String = (string, tag = "1"),
        grantee: String = (string, tag = "2"),
        msg_type_url: String = (string, tag = "3"),
    }
);
pmsg!(
    /// `cosmos.authz.v1beta1.MsgExec`.
    MsgExec {
        grantee: String = (string, tag = "1"),
        msgs: Vec<Any> = (message, repeated, tag = "2"),
    }
);
pmsg!(
    /// `inference.inference.Decimal`.
    DecimalProto {
        value: i64 = (int64, tag = "1"),
        exponent: i32 = (int32, tag = "2"),
    }
);
pmsg!(
    /// `inference.inference.EpochParams` (reference field numbers).
    EpochParamsProto {
        epoch_length: i64 = (int64, tag = "1"),
        epoch_multiplier: i64 = (int64, tag = "2"),
        epoch_shift: i64 = (int64, tag = "3"),
        poc_stage_duration: i64 = (int64, tag = "5"),
        poc_exchange_duration: i64 = (int64, tag = "6"),
        poc_validation_delay: i64 = (int64, tag = "7"),
        poc_validation_duration: i64 = (int64, tag = "8"),
        set_new_validators_delay: i64 = (int64, tag = "9"),
        inference_validation_cutoff: i64 = (int64, tag = "10"),
        inference_pruning_epoch_threshold: u64 = (uint64, tag = "11"),
        inference_pruning_max: i64 = (int64, tag = "12"),
        poc_pruning_max: i64 = (int64, tag = "13"),
        poc_slot_allocation: Option<DecimalProto> = (message, optional, tag = "14"),
    }
);
pmsg!(
    /// `inference.inference.PoCStatTestParams`.
    StatTestProto {
        dist_threshold: Option<DecimalProto> = (message, optional, tag = "1"),
        p_mismatch: Option<DecimalProto> = (message, optional, tag = "2"),
        p_value_threshold: Option<DecimalProto> = (message, optional, tag = "3"),
    }
);
pmsg!(
    /// `inference.inference.PocParams` (reference field numbers; 5 `model_params` is
    /// deprecated and not carried).
    PocParamsProto {
        default_difficulty: i32 = (int32, tag = "1"),
        validation_sample_size: i32 = (int32, tag = "2"),
        poc_data_pruning_epoch_threshold: u64 = (uint64, tag = "3"),
        weight_scale_factor: Option<DecimalProto> = (message, optional, tag = "4"),
        model_id: String = (string, tag = "6"),
        seq_len: i64 = (int64, tag = "7"),
        poc_v2_enabled: bool = (bool, tag = "8"),
        confirmation_poc_v2_enabled: bool = (bool, tag = "9"),
        stat_test: Option<StatTestProto> = (message, optional, tag = "10"),
        validation_slots: u32 = (uint32, tag = "11"),
        poc_normalization_enabled: bool = (bool, tag = "12"),
    }
);
pmsg!(
    /// `inference.inference.ConfirmationPoCParams`.
    ConfirmationParamsProto {
        expected_confirmations_per_epoch: u64 = (uint64, tag = "1"),
        alpha_threshold: Option<DecimalProto> = (message, optional, tag = "2"),
        slash_fraction: Option<DecimalProto> = (message, optional, tag = "3"),
        upgrade_protection_window: i64 = (int64, tag = "4"),
    }
);
pmsg!(
    /// Participant access and guardians.
    AccessParamsProto {
        guardian_addresses: Vec<String> = (string, repeated, tag = "1"),
        genesis_guardian_enabled: bool = (bool, tag = "2"),
        blocked_participant_addresses: Vec<String> = (string, repeated, tag = "3"),
        use_participant_allowlist: bool = (bool, tag = "4"),
        allowed_participant_addresses: Vec<String> = (string, repeated, tag = "5"),
    }
);
pmsg!(
    /// The parameters this chain governs.
    ParamsProto {
        epoch_params: Option<EpochParamsProto> = (message, optional, tag = "1"),
        poc_params: Option<PocParamsProto> = (message, optional, tag = "3"),
        confirmation_poc_params: Option<ConfirmationParamsProto> = (message, optional, tag = "4"),
        access_params: Option<AccessParamsProto> = (message, optional, tag = "5"),
    }
);
pmsg!(
    /// `inference.inference.MsgUpdateParams`.
    MsgUpdateParams {
        authority: String = (string, tag = "1"),
        params: Option<ParamsProto> = (message, optional, tag = "2"),
    }
);

/// Type URL of `MsgExec`.
pub const MSG_EXEC: &str = "/cosmos.authz.v1beta1.MsgExec";
/// Type URL of `GenericAuthorization`.
pub const GENERIC_AUTHORIZATION: &str = "/cosmos.authz.v1beta1.GenericAuthorization";

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
    pub fn to_params(&self) -> Result<Params, String> {
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

/// Encodes a message as `Any`.
pub fn to_any(m: &Msg) -> Any {
    let value = match m.clone() {
        Msg::SubmitPocBatch {
            creator,
            poc_stage_start_block_height,
            batch_id,
            nonces,
            dist,
            node_id,
        } => MsgSubmitPocBatch {
            creator,
            poc_stage_start_block_height,
            batch_id,
            nonces,
            dist,
            node_id,
        }
        .encode_to_vec(),
        Msg::SubmitPocValidation {
            creator,
            participant_address,
            poc_stage_start_block_height,
            fraud_detected,
        } => MsgSubmitPocValidation {
            creator,
            participant_address,
            poc_stage_start_block_height,
            fraud_detected,
            ..Default::default()
        }
        .encode_to_vec(),
        Msg::PocV2StoreCommit {
            creator,
            poc_stage_start_block_height,
            count,
            root_hash,
        } => MsgPoCv2StoreCommit {
            creator,
            poc_stage_start_block_height,
            count,
            root_hash,
        }
        .encode_to_vec(),
        Msg::MlNodeWeightDistribution {
            creator,
            poc_stage_start_block_height,
            weights,
        } => MsgMlNodeWeightDistribution {
            creator,
            poc_stage_start_block_height,
            weights: weights
                .into_iter()
                .map(|w| MlNodeWeightProto {
                    node_id: w.node_id,
                    weight: w.weight,
                })
                .collect(),
        }
        .encode_to_vec(),
        Msg::SubmitPocValidationsV2 {
            creator,
            poc_stage_start_block_height,
            validations,
        } => MsgSubmitPocValidationsV2 {
            creator,
            poc_stage_start_block_height,
            validations: validations
                .into_iter()
                .map(|v| PocValidationPayloadV2 {
                    participant_address: v.participant_address,
                    validated_weight: v.validated_weight,
                })
                .collect(),
        }
        .encode_to_vec(),
        Msg::SubmitNewParticipant {
            creator,
            url,
            validator_key,
        } => MsgSubmitNewParticipant {
            creator,
            url,
            validator_key,
            worker_key: String::new(),
        }
        .encode_to_vec(),
        Msg::SubmitSeed {
            creator,
            epoch_index,
            signature,
        } => MsgSubmitSeed {
            creator,
            epoch_index,
            signature,
        }
        .encode_to_vec(),
        Msg::Grant {
            granter,
            grantee,
            msg_type_url,
        } => MsgGrant {
            granter,
            grantee,
            grant: Some(Grant {
                authorization: Some(Any {
                    type_url: GENERIC_AUTHORIZATION.into(),
                    value: GenericAuthorization { msg: msg_type_url }.encode_to_vec(),
                }),
            }),
        }
        .encode_to_vec(),
        Msg::Revoke {
            granter,
            grantee,
            msg_type_url,
        } => MsgRevoke {
            granter,
            grantee,
            msg_type_url,
        }
        .encode_to_vec(),
        Msg::UpdateParams { authority, params } => MsgUpdateParams {
            authority,
            params: Some(ParamsProto::from(&*params)),
        }
        .encode_to_vec(),
    };
    Any {
        type_url: m.type_url().into(),
        value,
    }
}

/// Why an `Any` does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Type URL not known to this chain.
    Unknown(String),
    /// Bytes malformed.
    Malformed(String),
}

/// Decodes one `Any` into a message (not `MsgExec`).
pub fn from_any(a: &Any) -> Result<Msg, DecodeError> {
    let bad = |e: prost::DecodeError| DecodeError::Malformed(format!("{}: {e}", a.type_url));
    let v = a.value.as_slice();
    Ok(match a.type_url.as_str() {
        "/inference.inference.MsgSubmitPocBatch" => {
            let m = MsgSubmitPocBatch::decode(v).map_err(bad)?;
            Msg::SubmitPocBatch {
                creator: m.creator,
                poc_stage_start_block_height: m.poc_stage_start_block_height,
                batch_id: m.batch_id,
                nonces: m.nonces,
                dist: m.dist,
                node_id: m.node_id,
            }
        }
        "/inference.inference.MsgSubmitPocValidation" => {
            let m = MsgSubmitPocValidation::decode(v).map_err(bad)?;
            Msg::SubmitPocValidation {
                creator: m.creator,
                participant_address: m.participant_address,
                poc_stage_start_block_height: m.poc_stage_start_block_height,
                fraud_detected: m.fraud_detected,
            }
        }
        "/inference.inference.MsgPoCV2StoreCommit" => {
            let m = MsgPoCv2StoreCommit::decode(v).map_err(bad)?;
            Msg::PocV2StoreCommit {
                creator: m.creator,
                poc_stage_start_block_height: m.poc_stage_start_block_height,
                count: m.count,
                root_hash: m.root_hash,
            }
        }
        "/inference.inference.MsgMLNodeWeightDistribution" => {
            let m = MsgMlNodeWeightDistribution::decode(v).map_err(bad)?;
            Msg::MlNodeWeightDistribution {
                creator: m.creator,
                poc_stage_start_block_height: m.poc_stage_start_block_height,
                weights: m
                    .weights
                    .into_iter()
                    .map(|w| MlNodeWeight {
                        node_id: w.node_id,
                        weight: w.weight,
                    })
                    .collect(),
            }
        }
        "/inference.inference.MsgSubmitPocValidationsV2" => {
            let m = MsgSubmitPocValidationsV2::decode(v).map_err(bad)?;
            Msg::SubmitPocValidationsV2 {
                creator: m.creator,
                poc_stage_start_block_height: m.poc_stage_start_block_height,
                validations: m
                    .validations
                    .into_iter()
                    .map(|p| ValidationPayloadV2 {
                        participant_address: p.participant_address,
                        validated_weight: p.validated_weight,
                    })
                    .collect(),
            }
        }
        "/inference.inference.MsgSubmitNewParticipant" => {
            let m = MsgSubmitNewParticipant::decode(v).map_err(bad)?;
            Msg::SubmitNewParticipant {
                creator: m.creator,
                url: m.url,
                validator_key: m.validator_key,
            }
        }
        "/inference.inference.MsgSubmitSeed" => {
            let m = MsgSubmitSeed::decode(v).map_err(bad)?;
            Msg::SubmitSeed {
                creator: m.creator,
                epoch_index: m.epoch_index,
                signature: m.signature,
            }
        }
        "/cosmos.authz.v1beta1.MsgGrant" => {
            let m = MsgGrant::decode(v).map_err(bad)?;
            let auth = m.grant.and_then(|g| g.authorization).ok_or_else(|| {
                DecodeError::Malformed("MsgGrant without an authorization".into())
            })?;
            if auth.type_url != GENERIC_AUTHORIZATION {
                return Err(DecodeError::Unknown(auth.type_url));
            }
            let g = GenericAuthorization::decode(auth.value.as_slice()).map_err(bad)?;
            Msg::Grant {
                granter: m.granter,
                grantee: m.grantee,
                msg_type_url: g.msg,
            }
        }
        "/cosmos.authz.v1beta1.MsgRevoke" => {
            let m = MsgRevoke::decode(v).map_err(bad)?;
            Msg::Revoke {
                granter: m.granter,
                grantee: m.grantee,
                msg_type_url: m.msg_type_url,
            }
        }
        "/inference.inference.MsgUpdateParams" => {
            let m = MsgUpdateParams::decode(v).map_err(bad)?;
            let params = m
                .params
                .ok_or_else(|| DecodeError::Malformed("MsgUpdateParams without params".into()))?
                .to_params()
                .map_err(DecodeError::Malformed)?;
            Msg::UpdateParams {
                authority: m.authority,
                params: Box::new(params),
            }
        }
        other => return Err(DecodeError::Unknown(other.to_owned())),
    })
}
