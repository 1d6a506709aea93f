//! Messages to and from `Any`: the type URL picks the wire message.

use prost::Message;

use super::{
    Any, GENERIC_AUTHORIZATION, GenericAuthorization, Grant, MlNodeWeightProto, MsgGrant,
    MsgMlNodeWeightDistribution, MsgPoCv2StoreCommit, MsgRevoke, MsgSubmitNewParticipant,
    MsgSubmitPocBatch, MsgSubmitPocValidation, MsgSubmitPocValidationsV2, MsgSubmitSeed,
    MsgUpdateParams, ParamsProto, PocValidationPayloadV2,
};
use crate::msgs::{MlNodeWeight, Msg, ValidationPayloadV2};

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
                .map_err(|e| DecodeError::Malformed(e.0))?;
            Msg::UpdateParams {
                authority: m.authority,
                params: Box::new(params),
            }
        }
        other => return Err(DecodeError::Unknown(other.to_owned())),
    })
}
