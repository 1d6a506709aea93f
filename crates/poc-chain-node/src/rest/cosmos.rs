//! The Cosmos SDK's own REST queries (its gRPC gateway's paths and JSON), for clients
//! written against a Cosmos chain: authz grants and blocks. Bytes are base64, integers
//! strings, as the gateway writes them (`docs/chain.md`, "REST").

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poc_chain::proto::GENERIC_AUTHORIZATION;
use poc_chain::state::ChainState;
use serde_json::{Value, json};

use super::blocks::db;
use super::{ApiError, S, addr, bad, height, internal, not_found};

fn authorization(msg_type_url: &str) -> Value {
    json!({"@type": GENERIC_AUTHORIZATION, "msg": msg_type_url})
}

/// Grants matching the filters, as `(granter, grantee, msg type url)`.
fn grants<'a>(
    st: &'a ChainState,
    granter: Option<&'a str>,
    grantee: Option<&'a str>,
    msg: Option<&'a str>,
) -> impl Iterator<Item = &'a (String, String, String)> {
    st.grants.keys().filter(move |(g, e, t)| {
        granter.is_none_or(|x| x == g)
            && grantee.is_none_or(|x| x == e)
            && msg.is_none_or(|x| x == t)
    })
}

fn page(list: Vec<Value>, key: &str) -> Response {
    let total = list.len().to_string();
    axum::Json(json!({key: list, "pagination": {"next_key": null, "total": total}})).into_response()
}

/// `GET /cosmos/authz/v1beta1/grants?granter=&grantee=&msg_type_url=`: both addresses
/// are required, the message type is optional (as in the SDK).
pub(super) async fn grants_query(
    State(s): S,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (Some(granter), Some(grantee)) = (q.get("granter"), q.get("grantee")) else {
        return Err(bad("granter and grantee are required"));
    };
    let (granter, grantee) = (addr(granter)?, addr(grantee)?);
    let head = s.head();
    let msg = q
        .get("msg_type_url")
        .map(String::as_str)
        .filter(|m| !m.is_empty());
    let list: Vec<Value> = grants(&head.state, Some(&granter), Some(&grantee), msg)
        .map(|(_, _, t)| json!({"authorization": authorization(t), "expiration": null}))
        .collect();
    if list.is_empty() && msg.is_some() {
        return Err(not_found(format!(
            "authorization not found for {} type",
            msg.unwrap_or_default()
        )));
    }
    Ok(page(list, "grants"))
}

/// `GET /cosmos/authz/v1beta1/grants/granter/{granter}` and `…/grantee/{grantee}`.
pub(super) async fn grants_by(
    State(s): S,
    Path((side, a)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let a = addr(&a)?;
    let head = s.head();
    let (granter, grantee) = match side.as_str() {
        "granter" => (Some(a.as_str()), None),
        "grantee" => (None, Some(a.as_str())),
        _ => {
            return Err(not_found(
                "use grants/granter/{address} or grants/grantee/{address}",
            ));
        }
    };
    let list = grants(&head.state, granter, grantee, None)
        .map(|(g, e, t)| {
            json!({"granter": g, "grantee": e, "authorization": authorization(t), "expiration": null})
        })
        .collect();
    Ok(page(list, "grants"))
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A block as `cosmos.base.tendermint.v1beta1.GetBlockByHeightResponse` has it: the
/// fields this chain's header carries, under CometBFT's names.
async fn block_json(s: &crate::ChainServices, h: i64) -> Result<Response, ApiError> {
    let block = db(s)?.block(h).map_err(internal)?;
    let Some(b) = block else {
        return Err(not_found(format!(
            "requested block height {h} is not available"
        )));
    };
    let hd = &b.header;
    let b64 = |x: &[u8]| STANDARD.encode(x);
    let block_id = json!({"hash": b64(&hd.hash()), "part_set_header": {"total": 0, "hash": ""}});
    let header = json!({
        "chain_id": hd.chain_id,
        "height": hd.height.to_string(),
        "time": rfc3339(hd.time),
        "last_block_id": {"hash": b64(&hd.prev_hash), "part_set_header": {"total": 0, "hash": ""}},
        "data_hash": b64(&hd.tx_root),
        "app_hash": b64(&hd.app_hash),
    });
    let txs: Vec<String> = b.txs.iter().map(|t| b64(t)).collect();
    Ok(axum::Json(json!({
        "block_id": block_id,
        "block": {"header": header, "data": {"txs": txs}},
    }))
    .into_response())
}

/// `GET /cosmos/base/tendermint/v1beta1/blocks/{height}`.
pub(super) async fn block(State(s): S, Path(h): Path<String>) -> Result<Response, ApiError> {
    let h = height(&h)?;
    block_json(&s, h).await
}

/// `GET /cosmos/base/tendermint/v1beta1/blocks/latest`.
pub(super) async fn latest_block(State(s): S) -> Result<Response, ApiError> {
    let h = s.head().state.height;
    block_json(&s, h).await
}
