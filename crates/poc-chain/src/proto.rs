//! Protobuf wire types (prost). The PoC messages and `Params` use the reference's
//! package `inference.inference`, message names and field numbers; authz messages follow
//! `cosmos.authz.v1beta1`. `MsgSubmitSeed`, `Params` field 1000 and the transaction
//! envelope are this chain's own (documented in `docs/chain.md`).

use prost::Message;

mod codec;
mod params;

pub use codec::{DecodeError, from_any, to_any};

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// Encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// The transaction envelope.
#[derive(Clone, PartialEq, Message)]
pub struct TxProto {
    #[prost(string, tag = "1")]
    pub chain_id: String,
    /// 33-byte compressed secp256k1 public key of the signer.
    #[prost(bytes = "vec", tag = "2")]
    pub pub_key: Vec<u8>,
    /// Account sequence.
    #[prost(uint64, tag = "3")]
    pub sequence: u64,
    #[prost(message, repeated, tag = "4")]
    pub messages: Vec<Any>,
    /// 64-byte `r ‖ s` (low-S) over SHA-256 of the sign doc.
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
}

/// What is signed: the envelope without the signature.
#[derive(Clone, PartialEq, Message)]
pub struct SignDoc {
    #[prost(string, tag = "1")]
    pub chain_id: String,
    /// Signer key.
    #[prost(bytes = "vec", tag = "2")]
    pub pub_key: Vec<u8>,
    #[prost(uint64, tag = "3")]
    pub sequence: u64,
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
        default_unit_of_compute_price: i64 = (int64, tag = "4"),
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
        confirmation_poc_safety_window: i64 = (int64, tag = "15"),
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
    /// `inference.inference.PocParams` (reference field numbers; 5, the deprecated v1
    /// `model_params`, is carried as its bytes).
    PocParamsProto {
        default_difficulty: i32 = (int32, tag = "1"),
        validation_sample_size: i32 = (int32, tag = "2"),
        poc_data_pruning_epoch_threshold: u64 = (uint64, tag = "3"),
        weight_scale_factor: Option<DecimalProto> = (message, optional, tag = "4"),
        model_params: Option<Vec<u8>> = (bytes = "vec", optional, tag = "5"),
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
    /// `inference.inference.GenesisGuardianParams`.
    GenesisGuardianParamsProto {
        network_maturity_threshold: i64 = (int64, tag = "1"),
        network_maturity_min_height: i64 = (int64, tag = "2"),
        guardian_addresses: Vec<String> = (string, repeated, tag = "3"),
    }
);
pmsg!(
    /// `inference.inference.ParticipantAccessParams`.
    ParticipantAccessParamsProto {
        new_participant_registration_start_height: i64 = (int64, tag = "1"),
        blocked_participant_addresses: Vec<String> = (string, repeated, tag = "2"),
        use_participant_allowlist: bool = (bool, tag = "3"),
        participant_allowlist_until_block_height: i64 = (int64, tag = "4"),
    }
);
pmsg!(
    /// This chain's additions (`Params` field 1000, unused by the reference).
    ExtensionParamsProto {
        genesis_guardian_enabled: bool = (bool, tag = "1"),
        allowed_participant_addresses: Vec<String> = (string, repeated, tag = "2"),
    }
);
pmsg!(
    /// `inference.inference.Params`, with the reference's field numbers. Sections this
    /// chain does not interpret are declared as bytes: a length-delimited message reads
    /// and writes the same as bytes, so they pass through unchanged.
    ParamsProto {
        epoch_params: Option<EpochParamsProto> = (message, optional, tag = "1"),
        validation_params: Option<Vec<u8>> = (bytes = "vec", optional, tag = "2"),
        poc_params: Option<PocParamsProto> = (message, optional, tag = "3"),
        tokenomics_params: Option<Vec<u8>> = (bytes = "vec", optional, tag = "4"),
        collateral_params: Option<Vec<u8>> = (bytes = "vec", optional, tag = "5"),
        bitcoin_reward_params: Option<Vec<u8>> = (bytes = "vec", optional, tag = "6"),
        dynamic_pricing_params: Option<Vec<u8>> = (bytes = "vec", optional, tag = "7"),
        bandwidth_limits_params: Option<Vec<u8>> = (bytes = "vec", optional, tag = "8"),
        confirmation_poc_params: Option<ConfirmationParamsProto> = (message, optional, tag = "9"),
        genesis_guardian_params: Option<GenesisGuardianParamsProto> = (message, optional, tag = "10"),
        developer_access_params: Option<Vec<u8>> = (bytes = "vec", optional, tag = "11"),
        participant_access_params: Option<ParticipantAccessParamsProto> = (message, optional, tag = "12"),
        transfer_agent_access_params: Option<Vec<u8>> = (bytes = "vec", optional, tag = "13"),
        subnet_escrow_params: Option<Vec<u8>> = (bytes = "vec", optional, tag = "14"),
        extension_params: Option<ExtensionParamsProto> = (message, optional, tag = "1000"),
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
