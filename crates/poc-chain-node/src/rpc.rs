//! A CometBFT RPC subset (`docs/chain.md`, "RPC"): `status`, `block` and `abci_info`,
//! over HTTP GET (`/status`, `/block?height=5`, `/abci_info`) and JSON-RPC 2.0 POST
//! (`{"jsonrpc": "2.0", "id": 1, "method": "block", "params": {"height": "5"}}`), with
//! CometBFT's JSON: hashes uppercase hex, heights strings, times RFC 3339. Clients written
//! for a CometBFT node (the reference's API node reads the PoC seed as `Block(h).Hash()`)
//! work against it unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use poc_chain::block::Block;

use crate::ChainServices;

type S = State<Arc<ChainServices>>;

/// JSON-RPC 2.0 error codes, as CometBFT answers them.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL: i64 = -32603;

/// The standard message of a JSON-RPC error code (the details go in `data`).
fn message(code: i64) -> &'static str {
    match code {
        PARSE_ERROR => "Parse error",
        INVALID_REQUEST => "Invalid Request",
        METHOD_NOT_FOUND => "Method not found",
        INVALID_PARAMS => "Invalid params",
        _ => "Internal error",
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-12-01T22:42:03Z`).
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

type RpcResult = Result<Value, (i64, String)>;

fn reply(id: Value, r: RpcResult) -> Response {
    let body = match r {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, data)) => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": code, "message": message(code), "data": data},
        }),
    };
    axum::Json(body).into_response()
}

fn status(s: &ChainServices) -> RpcResult {
    let head = s.head();
    let st = &head.state;
    Ok(json!({
        "node_info": {
            "network": st.chain_id,
            "moniker": "poc-chain",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "sync_info": {
            "latest_block_hash": hex::encode_upper(head.hash),
            "latest_app_hash": hex::encode_upper(st.app_hash),
            "latest_block_height": st.height.to_string(),
            "latest_block_time": rfc3339(st.time),
            "catching_up": false,
        },
    }))
}

fn abci_info(s: &ChainServices) -> RpcResult {
    let head = s.head();
    Ok(json!({
        "response": {
            "data": "poc-chain",
            "version": env!("CARGO_PKG_VERSION"),
            "last_block_height": head.state.height.to_string(),
            "last_block_app_hash": STANDARD.encode(head.state.app_hash),
        }
    }))
}

/// `block` at `height` (a string or number; absent or 0: the latest).
fn block(s: &ChainServices, height: Option<&Value>) -> RpcResult {
    let latest = s.head().state.height;
    let h = match height {
        None | Some(Value::Null) => latest,
        Some(Value::String(x)) if x.is_empty() => latest,
        Some(Value::String(x)) => x
            .parse::<i64>()
            .map_err(|_| (INVALID_PARAMS, format!("height {x:?} is not an integer")))?,
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| (INVALID_PARAMS, format!("height {n} is not an integer")))?,
        Some(v) => return Err((INVALID_PARAMS, format!("height {v} is not an integer"))),
    };
    let h = if h == 0 { latest } else { h };
    if h < 1 || h > latest {
        return Err((
            INTERNAL,
            format!("height {h} must be between 1 and the current blockchain height {latest}"),
        ));
    }
    let db = s
        .db()
        .ok_or_else(|| (INTERNAL, "the node is shutting down".to_owned()))?;
    let b = db
        .block(h)
        .map_err(|e| (INTERNAL, e.to_string()))?
        .ok_or_else(|| (INTERNAL, format!("block {h} is not stored")))?;
    Ok(block_json(&b, |x| hex::encode_upper(x), "parts"))
}

/// `{block_id, block}` in CometBFT's layout with the fields this chain's header has:
/// hashes written by `enc` (uppercase hex in the RPC, base64 in the SDK gateway), the
/// part-set header under `parts` (`parts` / `part_set_header`), transactions base64.
pub(crate) fn block_json(b: &Block, enc: fn(&[u8]) -> String, parts: &str) -> Value {
    let hd = &b.header;
    let id = |h: &[u8]| json!({"hash": enc(h), parts: {"total": 0, "hash": ""}});
    json!({
        "block_id": id(&hd.hash()),
        "block": {
            "header": {
                "chain_id": hd.chain_id,
                "height": hd.height.to_string(),
                "time": rfc3339(hd.time),
                "last_block_id": id(&hd.prev_hash),
                "data_hash": enc(&hd.tx_root),
                "app_hash": enc(&hd.app_hash),
            },
            "data": {"txs": b.txs.iter().map(|t| STANDARD.encode(t)).collect::<Vec<_>>()},
        },
    })
}

fn call(s: &ChainServices, method: &str, params: &Value) -> RpcResult {
    match method {
        "status" => status(s),
        "abci_info" => abci_info(s),
        "block" => block(s, params.get("height")),
        other => Err((
            METHOD_NOT_FOUND,
            format!(
                "method {other:?} is not served; this node answers status, block and abci_info"
            ),
        )),
    }
}

async fn get_status(State(s): S) -> Response {
    reply(json!(-1), status(&s))
}

async fn get_abci_info(State(s): S) -> Response {
    reply(json!(-1), abci_info(&s))
}

async fn get_block(State(s): S, Query(q): Query<HashMap<String, String>>) -> Response {
    // URI form: `height=5` or `height="5"`.
    let h = q
        .get("height")
        .map(|x| Value::String(x.trim_matches('"').to_owned()));
    reply(json!(-1), block(&s, h.as_ref()))
}

async fn post_rpc(State(s): S, body: axum::body::Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return reply(
            Value::Null,
            Err((PARSE_ERROR, "the body is not JSON".into())),
        );
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = req.get("method").and_then(Value::as_str) else {
        return reply(
            id,
            Err((INVALID_REQUEST, "a JSON-RPC request needs a method".into())),
        );
    };
    let params = req.get("params").cloned().unwrap_or(Value::Null);
    reply(id, call(&s, method, &params))
}

/// The RPC router.
pub fn router(services: Arc<ChainServices>) -> Router {
    Router::new()
        .route("/", axum::routing::post(post_rpc))
        .route("/status", get(get_status))
        .route("/abci_info", get(get_abci_info))
        .route("/block", get(get_block))
        .with_state(services)
}
