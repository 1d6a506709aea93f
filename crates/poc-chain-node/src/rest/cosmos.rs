//! The Cosmos SDK's own REST queries (its gRPC gateway's paths and JSON), for clients
//! written against a Cosmos chain: authz grants, blocks and node info. Bytes are base64, integers
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

/// A block as `cosmos.base.tendermint.v1beta1.GetBlockByHeightResponse` has it: the
/// fields this chain's header carries, under CometBFT's names.
async fn gateway_block(s: &crate::ChainServices, h: i64) -> Result<Response, ApiError> {
    let block = db(s)?.block(h).map_err(internal)?;
    let Some(b) = block else {
        return Err(not_found(format!(
            "requested block height {h} is not available"
        )));
    };
    Ok(axum::Json(crate::rpc::block_json(
        &b,
        |x| STANDARD.encode(x),
        "part_set_header",
    ))
    .into_response())
}

/// `GET /cosmos/base/tendermint/v1beta1/blocks/{height}`.
pub(super) async fn block(State(s): S, Path(h): Path<String>) -> Result<Response, ApiError> {
    let h = height(&h)?;
    gateway_block(&s, h).await
}

/// `GET /cosmos/base/tendermint/v1beta1/blocks/latest`.
pub(super) async fn latest_block(State(s): S) -> Result<Response, ApiError> {
    let h = s.head().state.height;
    gateway_block(&s, h).await
}

/// `GET /cosmos/base/tendermint/v1beta1/node_info`: the chain id under
/// `default_node_info.network`, as CometBFT's node info carries it.
pub(super) async fn node_info(State(s): S) -> axum::Json<Value> {
    let chain_id = s.head().state.chain_id.clone();
    let version = env!("CARGO_PKG_VERSION");
    axum::Json(json!({
        "default_node_info": {
            "network": chain_id,
            "moniker": "poc-chain",
            "version": version,
        },
        "application_version": {
            "name": "poc-chain",
            "app_name": "poc",
            "version": version,
        },
    }))
}
