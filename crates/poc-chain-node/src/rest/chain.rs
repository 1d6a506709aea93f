//! Chain state queries: epoch, parameters, participants, grants, accounts, status.

use axum::extract::{Path, State};
use poc_chain::api::*;
use poc_chain::records::ParticipantStatus;
use poc_chain::state::ChainState;

use super::{R, S, addr, bad, keys, not_found, ok};
use crate::status::NodeStatus;

pub(super) async fn epoch_info(State(s): S) -> R<EpochInfoResponse> {
    let head = s.head();
    let st = &head.state;
    ok(EpochInfoResponse {
        block_height: st.height,
        params: st.params.clone(),
        latest_epoch: st.latest_epoch,
        effective_epoch: st.effective_epoch,
        is_confirmation_poc_active: st.active_event.is_some(),
        active_confirmation_poc_event: st.active_event.clone(),
        latest_stages: st.latest_ctx().stages(),
    })
}

pub(super) async fn params(State(s): S) -> R<ParamsResponse> {
    ok(ParamsResponse {
        params: s.head().state.params.clone(),
    })
}

fn participant_info(st: &ChainState, a: &str) -> Option<ParticipantInfo> {
    let p = st.participants.get(a)?;
    let (b64, hex) = keys(st, a);
    Some(ParticipantInfo {
        index: a.to_owned(),
        address: a.to_owned(),
        pubkey: b64,
        hex_pub_key: hex,
        inference_url: p.inference_url.clone(),
        validator_key: p.validator_key.clone(),
        status: match p.status {
            ParticipantStatus::Active => "ACTIVE".into(),
            ParticipantStatus::Inactive => "INACTIVE".into(),
        },
        confirmation_poc_ratio: p.confirmation_poc_ratio.clone(),
    })
}

pub(super) async fn participant(State(s): S, Path(a): Path<String>) -> R<ParticipantResponse> {
    let a = addr(&a)?;
    let head = s.head();
    let info = participant_info(&head.state, &a)
        .ok_or_else(|| not_found(format!("participant {a} is not registered")))?;
    ok(ParticipantResponse { participant: info })
}

pub(super) async fn participants(State(s): S) -> R<ParticipantsResponse> {
    let head = s.head();
    let st = &head.state;
    let participant: Vec<_> = st
        .participants
        .keys()
        .filter_map(|a| participant_info(st, a))
        .collect();
    ok(ParticipantsResponse {
        pagination: Some(PageResponse {
            next_key: None,
            total: participant.len() as u64,
        }),
        participant,
        block_height: st.height,
    })
}

pub(super) async fn grantees(
    State(s): S,
    Path((granter, type_url)): Path<(String, String)>,
) -> R<GranteesResponse> {
    let granter = addr(&granter)?;
    let type_url = if type_url.starts_with('/') {
        type_url
    } else {
        format!("/{type_url}")
    };
    let head = s.head();
    let st = &head.state;
    let grantees = st
        .grants
        .keys()
        .filter(|(g, _, t)| *g == granter && *t == type_url)
        .map(|(_, e, _)| Grantee {
            address: e.clone(),
            pub_key: keys(st, e).0,
        })
        .collect();
    ok(GranteesResponse { grantees })
}

pub(super) async fn epoch_group(State(s): S, Path(epoch): Path<String>) -> R<EpochGroupResponse> {
    let e: u64 = epoch
        .parse()
        .map_err(|_| bad(format!("{epoch:?} is not an epoch index (uint64)")))?;
    let head = s.head();
    let g = head
        .state
        .epoch_groups
        .get(&e)
        .ok_or_else(|| not_found(format!("no group for epoch {e}")))?;
    let vw = |m: &std::collections::BTreeMap<String, i64>| {
        m.iter()
            .map(|(a, w)| ValidatorWeight {
                address: a.clone(),
                weight: *w,
            })
            .collect()
    };
    ok(EpochGroupResponse {
        epoch_index: e,
        validator_weights: vw(&g.members),
        active_participants: g.participants.clone(),
        confirmation_weights: vw(&g.confirmation_weights),
    })
}

/// `GET /cosmos/auth/v1beta1/accounts/{address}`: 404 (gRPC `NotFound`, 5) for an
/// address without an account, as the SDK answers.
pub(super) async fn account(State(s): S, Path(a): Path<String>) -> R<AccountResponse> {
    let a = addr(&a)?;
    let head = s.head();
    let st = &head.state;
    let Some(number) = st.account_number(&a) else {
        return Err(not_found(format!(
            "rpc error: code = NotFound desc = account {a} not found: key not found"
        )));
    };
    let (b64, _) = keys(st, &a);
    ok(AccountResponse {
        account: BaseAccount {
            type_url: BASE_ACCOUNT.into(),
            pub_key: (!b64.is_empty()).then(|| PubKeyJson {
                type_url: poc_chain::tx::SECP256K1_PUBKEY.into(),
                key: b64,
            }),
            account_number: number,
            sequence: st.sequences.get(&a).copied().unwrap_or(0),
            address: a,
        },
    })
}

pub(super) async fn status(State(s): S) -> R<NodeStatus> {
    let head = s.head();
    ok(NodeStatus {
        chain: StatusResponse {
            chain_id: head.state.chain_id.clone(),
            height: head.state.height,
            hash: hex::encode_upper(head.hash),
            time: head.state.time,
            app_hash: head.state.app_hash,
            mempool_size: s.mempool.lock().expect("mempool lock").len(),
        },
        consensus: s.consensus.read().expect("consensus lock").clone(),
    })
}
