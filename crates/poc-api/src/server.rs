//! The two HTTP servers: public (proof API, artifact state, health, metrics) and the ML
//! callback server (generated artifacts, validation verdicts).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poc_store::AppendError;
use serde::Deserialize;
use serde_json::json;

use crate::Shared;
use crate::callbacks::Grant;
use crate::http::{grant_for, now_ns, refused, reply};
use crate::phase::ChainView;
use crate::proofs::{
    MAX_CLOCK_SKEW_NS, MAX_INDICES, ProofItem, ProofRequest, ProofResponse, VECTOR_BYTES,
    check_vector, response_digest, sign_payload, verify_payload,
};
use poc_chain::keys::address_of_hex;

type S = State<Arc<Shared>>;

/// Largest proof request body.
pub const MAX_PROOF_REQUEST_BYTES: usize = 256 * 1024;
/// Largest callback body.
pub const MAX_CALLBACK_BYTES: usize = 64 * 1024 * 1024;
/// How long a validator's signer set is cached.
pub const AUTHZ_TTL: Duration = Duration::from_secs(120);

/// The public router.
pub fn public_router(st: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/v1/poc/proofs",
            post(proofs).layer(DefaultBodyLimit::max(MAX_PROOF_REQUEST_BYTES)),
        )
        .route("/v1/poc/artifacts/state", get(artifacts_state))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(st)
}

/// The ML callback router: every route sits under `/cb/{token}/` (a token this node
/// issued, `crate::callbacks`). Source addresses are checked when a connection is
/// accepted (`start`).
pub fn callback_router(st: Arc<Shared>) -> Router {
    let routes = Router::new()
        .route("/v2/poc-batches/generated", post(generated))
        .route("/v2/poc-batches/validated", post(validated))
        .merge(crate::v1flow::callback_routes());
    Router::new()
        .nest("/cb/{token}", routes)
        .layer(DefaultBodyLimit::max(MAX_CALLBACK_BYTES))
        .with_state(st)
}

/// The chain view when the v2 callbacks are served and `accepting` holds now; otherwise
/// the 503 to answer (`what` names the data refused).
#[allow(clippy::result_large_err)]
fn v2_callback_view(
    st: &Shared,
    accepting: fn(&ChainView) -> bool,
    what: &str,
) -> Result<ChainView, Response> {
    let Some(view) = st.view() else {
        return Err(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "not synced with the chain yet",
        ));
    };
    if !view.v2_endpoints_enabled() {
        return Err(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "PoC v2 endpoints are disabled on the chain",
        ));
    }
    if !accepting(&view) {
        return Err(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not accepting {what} at height {} (phase {})",
                view.height,
                view.phase().as_str()
            ),
        ));
    }
    Ok(view)
}

#[derive(Deserialize)]
struct GeneratedBody {
    block_height: i64,
    node_id: u64,
    #[serde(default)]
    artifacts: Vec<ArtifactIn>,
    #[serde(default)]
    encoding: Option<EncodingIn>,
}

#[derive(Deserialize)]
struct ArtifactIn {
    nonce: i64,
    vector_b64: String,
}

#[derive(Deserialize)]
struct EncodingIn {
    dtype: String,
    k_dim: usize,
    endian: String,
}

/// Checks a batch exactly as validators will check what it becomes (24-byte vectors of
/// twelve finite FP16 values, nonces that fit the store's int32 and are not negative):
/// every item decoded, or the first bad one named.
fn check_batch(b: &GeneratedBody) -> Result<Vec<(i32, Vec<u8>)>, String> {
    if let Some(e) = &b.encoding
        && (e.dtype != "f16" || e.k_dim != VECTOR_BYTES / 2 || e.endian != "le")
    {
        return Err(format!(
            "encoding {{dtype {:?}, k_dim {}, endian {:?}}} is not {{f16, {}, le}}",
            e.dtype,
            e.k_dim,
            e.endian,
            VECTOR_BYTES / 2
        ));
    }
    let mut items = Vec::with_capacity(b.artifacts.len());
    for (i, a) in b.artifacts.iter().enumerate() {
        let nonce = i32::try_from(a.nonce)
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                format!(
                    "artifacts[{i}]: nonce {} is outside 0..=2147483647",
                    a.nonce
                )
            })?;
        let v = STANDARD.decode(&a.vector_b64).map_err(|e| {
            format!("artifacts[{i}] (nonce {nonce}): vector_b64 is not base64: {e}")
        })?;
        check_vector(&v).map_err(|why| format!("artifacts[{i}] (nonce {nonce}): vector {why}"))?;
        items.push((nonce, v));
    }
    Ok(items)
}

/// `POST /cb/{token}/v2/poc-batches/generated`: validates the whole batch, stores it and
/// answers 200 only once it is on stable storage (so an acknowledged artifact survives a
/// crash; the ML node resends what was not acknowledged and the store drops duplicates).
async fn generated(State(st): S, Path(token): Path<String>, body: Bytes) -> Response {
    let (stage, node_number) = match grant_for(&st, &token, |g| match g {
        Grant::Generation { stage, node } => Some((*stage, *node)),
        _ => None,
    }) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let view = match v2_callback_view(&st, ChainView::accept_generated, "artifacts") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let b: GeneratedBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("malformed artifact batch: {e}"),
            );
        }
    };
    let current = view.current_stage().height();
    if b.block_height != stage || stage != current {
        return reply(
            StatusCode::BAD_REQUEST,
            format!(
                "block_height {} is not the stage this callback URL was issued for ({stage}) or not the current stage ({current})",
                b.block_height
            ),
        );
    }
    if b.node_id != node_number {
        return reply(
            StatusCode::BAD_REQUEST,
            format!(
                "node_id {} is not the ML node this callback URL was issued to ({node_number})",
                b.node_id
            ),
        );
    }
    let Some(node) = st.broker.by_number(b.node_id) else {
        return reply(
            StatusCode::BAD_REQUEST,
            format!("unknown node_id {}", b.node_id),
        );
    };
    let items = match check_batch(&b) {
        Ok(items) => items,
        Err(e) => {
            st.metrics.add("poc_artifact_batches_refused_total", 1);
            tracing::warn!(stage, node = %node.id, "artifact batch refused: {e}");
            return reply(
                StatusCode::BAD_REQUEST,
                format!("batch refused, nothing stored: {e}"),
            );
        }
    };
    // Where this node's stream got to (only nonces of its stream: node_id mod node_count).
    let node_count = st.broker.node_count().max(1);
    let max_nonce = items
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n as u64 % node_count == node_number)
        .max();
    let st2 = Arc::clone(&st);
    let node_id = node.id.clone();
    let res = tokio::task::spawn_blocking(move || -> Result<(u64, u64), String> {
        let store = st2
            .stores
            .get_or_create(stage as u64)
            .map_err(|e| e.to_string())?;
        let refs: Vec<(i32, &[u8])> = items.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let (mut added, mut dup) = (0, 0);
        let mut failure = None;
        for r in store.append_batch(&refs, Some(&node_id)) {
            match r {
                Ok(_) => added += 1,
                Err(AppendError::DuplicateNonce { .. }) => dup += 1,
                Err(e) => failure = Some(e.to_string()),
            }
        }
        // Make what was appended durable before answering, even when part failed.
        store.sync().map_err(|e| e.to_string())?;
        match failure {
            Some(e) => Err(e),
            None => Ok((added, dup)),
        }
    })
    .await
    .unwrap_or_else(|e| Err(format!("ingestion task failed: {e}")));
    match res {
        Ok((added, dup)) => {
            st.metrics.add("poc_artifacts_received_total", added);
            st.metrics.add("poc_artifacts_duplicate_total", dup);
            if let Some(m) = max_nonce {
                st.note_progress(stage, node_number, m);
            }
            axum::Json(json!({})).into_response()
        }
        Err(e) => {
            tracing::error!(stage, "cannot store artifacts: {e}");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot store artifacts: {e}"),
            )
        }
    }
}

#[derive(Deserialize)]
struct ValidatedBody {
    block_height: i64,
    public_key: String,
    #[serde(default)]
    n_total: i64,
    #[serde(default)]
    fraud_detected: bool,
}

/// `POST /cb/{token}/v2/poc-batches/validated`: the verdict of a validation this node
/// requested (the token names the stage and participant) becomes a vote, once.
async fn validated(State(st): S, Path(token): Path<String>, body: Bytes) -> Response {
    // Which verdict the token is for is checked with the body, below.
    if let Err(r) = grant_for(&st, &token, |_| Some(())) {
        return r;
    }
    let view = match v2_callback_view(&st, ChainView::accept_validated, "verdicts") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let b: ValidatedBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("malformed verdict: {e}")),
    };
    let Some(participant) = address_of_hex(&b.public_key) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "public_key must be a hex compressed secp256k1 key",
        );
    };
    let Some(window) = view.vote_window(b.block_height) else {
        return reply(
            StatusCode::BAD_REQUEST,
            format!("stage {} takes no votes now", b.block_height),
        );
    };
    match st
        .tokens
        .answer_validation(&token, b.block_height, &b.public_key)
    {
        Ok(true) => {}
        Ok(false) => {
            return axum::Json(json!({"duplicate": true})).into_response();
        }
        Err(e) => return refused(&st, e),
    }
    let weight = if b.fraud_detected || b.n_total <= 0 {
        -1
    } else {
        b.n_total
    };
    tracing::info!(stage = b.block_height, %participant, weight, "verdict from the ML node");
    st.vote(b.block_height, window, participant, weight);
    axum::Json(json!({})).into_response()
}

#[derive(Deserialize)]
struct StateQuery {
    height: Option<String>,
}

async fn artifacts_state(State(st): S, Query(q): Query<StateQuery>) -> Response {
    if !st.view().is_some_and(|v| v.should_use_v2()) {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "proof API requires V2 mode",
        );
    }
    let Some(h) = q
        .height
        .as_deref()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|h| *h > 0)
    else {
        return reply(StatusCode::BAD_REQUEST, "height must be a positive integer");
    };
    match st.stores.get(h as u64) {
        Ok(store) => {
            let snap = store.flushed();
            axum::Json(json!({
                "poc_stage_start_block_height": h,
                "count": snap.count,
                "root_hash": snap.root.map(|r| STANDARD.encode(r)).unwrap_or_default(),
            }))
            .into_response()
        }
        Err(_) => reply(
            StatusCode::NOT_FOUND,
            format!("store not found for height {h} (may be pruned or not yet created)"),
        ),
    }
}

impl Shared {
    /// Token bucket per client IP.
    fn allow(&self, ip: IpAddr) -> bool {
        let mut m = self.limiter.lock().expect("limiter lock");
        let now = Instant::now();
        if m.len() > 100_000 {
            m.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(180));
        }
        let (rate, burst) = (
            self.cfg.proof_rate_per_sec,
            self.cfg.proof_rate_burst.max(1.0),
        );
        let (tokens, last) = m.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The keys allowed to sign for `validator`: itself (a registered participant) and its
    /// grantees for `MsgSubmitPocValidationsV2`. Cached for two minutes.
    pub(crate) async fn signer_set(
        &self,
        validator: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        if let Some((at, set)) = self.authz.lock().expect("authz lock").get(validator)
            && at.elapsed() < AUTHZ_TTL
        {
            return Ok(set.clone());
        }
        let c = &self.io.client;
        let p = c
            .participant(validator)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("validator not found")?;
        let mut set = vec![(
            validator.to_owned(),
            hex::decode(&p.participant.hex_pub_key).map_err(|_| "validator key unknown")?,
        )];
        let g = c
            .grantees(validator, "/inference.inference.MsgSubmitPocValidationsV2")
            .await
            .map_err(|e| e.to_string())?;
        for x in g.grantees {
            if let Ok(k) = STANDARD.decode(&x.pub_key)
                && !k.is_empty()
            {
                set.push((x.address, k));
            }
        }
        self.authz
            .lock()
            .expect("authz lock")
            .insert(validator.to_owned(), (Instant::now(), set.clone()));
        Ok(set)
    }
}

async fn proofs(State(st): S, ConnectInfo(peer): ConnectInfo<SocketAddr>, body: Bytes) -> Response {
    let r = proofs_inner(&st, peer, &body).await;
    match &r {
        Ok(_) => st.metrics.add("poc_proof_requests_served_total", 1),
        Err(_) => st.metrics.add("poc_proof_requests_rejected_total", 1),
    }
    match r {
        Ok(resp) => axum::Json(resp).into_response(),
        Err((code, msg)) => {
            tracing::debug!(%peer, "proof request refused ({code}): {msg}");
            reply(code, msg)
        }
    }
}

async fn proofs_inner(
    st: &Arc<Shared>,
    peer: SocketAddr,
    body: &[u8],
) -> Result<ProofResponse, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    if !st.allow(peer.ip()) {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded; slow down".into(),
        ));
    }
    if !st.view().is_some_and(|v| v.should_use_v2()) {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "proof API requires V2 mode".into(),
        ));
    }
    let req: ProofRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed request: {e}")))?;
    if req.root_hash.is_empty()
        || req.validator_address.is_empty()
        || req.validator_signer_address.is_empty()
        || req.signature.is_empty()
    {
        return Err(bad(
            "root_hash, validator_address, validator_signer_address and signature are required"
                .into(),
        ));
    }
    if req.leaf_indices.is_empty() || req.leaf_indices.len() > MAX_INDICES {
        return Err(bad(format!(
            "leaf_indices must hold 1..={MAX_INDICES} indices, got {}",
            req.leaf_indices.len()
        )));
    }
    let root: [u8; 32] = STANDARD
        .decode(&req.root_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("root_hash must be base64 of 32 bytes".into()))?;
    if (now_ns() - req.timestamp).abs() > MAX_CLOCK_SKEW_NS {
        return Err(bad(
            "timestamp is more than 5 minutes from this server's clock".into(),
        ));
    }
    let unauthorized = |m: String| (StatusCode::UNAUTHORIZED, m);
    let set = st
        .signer_set(&req.validator_address)
        .await
        .map_err(|e| unauthorized(format!("validator not found: {e}")))?;
    let key = set
        .iter()
        .find(|(a, _)| *a == req.validator_signer_address)
        .map(|(_, k)| k.clone())
        .ok_or_else(|| {
            unauthorized(format!(
                "{} may not sign for {}",
                req.validator_signer_address, req.validator_address
            ))
        })?;
    if !verify_payload(&key, &req.digest(&root), &req.signature) {
        return Err(unauthorized("signature does not verify".into()));
    }
    if req.poc_stage_start_block_height <= 0 {
        return Err((StatusCode::NOT_FOUND, "no store for that height".into()));
    }
    let store = st
        .stores
        .get(req.poc_stage_start_block_height as u64)
        .map_err(|_| {
            (
                StatusCode::NOT_FOUND,
                format!(
                    "store not found for height {} (may be pruned or not yet created)",
                    req.poc_stage_start_block_height
                ),
            )
        })?;
    let count = u64::from(req.count);
    if count > store.flushed().count {
        return Err(bad("count exceeds stored artifacts".into()));
    }
    match store.root_at(count) {
        Ok(Some(r)) if r == root => {}
        _ => return Err(bad("root_hash does not match store state at count".into())),
    }
    if let Some(i) = req.leaf_indices.iter().find(|i| **i >= req.count) {
        return Err(bad(format!(
            "leaf index {i} is not below count {}",
            req.count
        )));
    }
    let indices = req.leaf_indices.clone();
    let items = tokio::task::spawn_blocking(move || -> Result<Vec<ProofItem>, String> {
        indices
            .iter()
            .map(|i| {
                let p = store
                    .proof(u64::from(*i), count)
                    .map_err(|e| e.to_string())?;
                Ok(ProofItem {
                    leaf_index: *i,
                    nonce_value: p.nonce,
                    vector_bytes: STANDARD.encode(&p.vector),
                    proof: p.proof.iter().map(|h| STANDARD.encode(h)).collect(),
                })
            })
            .collect()
    })
    .await
    .expect("proofs do not panic")
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let signer = st.operational_key.address();
    let ts = now_ns();
    let d = response_digest(
        req.poc_stage_start_block_height,
        &root,
        req.count,
        &items,
        ts,
        &signer,
    );
    Ok(ProofResponse {
        signature: Some(sign_payload(&st.operational_key, &d)),
        proofs: items,
        signer_address: Some(signer),
        timestamp: Some(ts),
    })
}

async fn health(State(st): S) -> Response {
    let v = st.view();
    axum::Json(json!({
        "status": if v.is_some() { "ok" } else { "syncing" },
        "address": st.io.address,
        "height": v.as_ref().map(|v| v.height),
        "phase": v.as_ref().map(|v| v.phase().as_str()),
        "block_time_ms": st.block_time().as_millis() as u64,
        "pending_votes": st.pending_votes(),
        "ml_nodes": st.broker.nodes().iter().map(|n| json!({"id": n.id, "url": n.url, "health": n.health()})).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn metrics(State(st): S) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        {
            let mut text = st.metrics.render();
            for (name, value) in [
                ("poc_votes_pending", st.pending_votes() as u64),
                ("poc_block_time_ms", st.block_time().as_millis() as u64),
                (
                    "poc_http_public_connections",
                    st.public_stats.open_connections() as u64,
                ),
                (
                    "poc_http_callback_connections",
                    st.callback_stats.open_connections() as u64,
                ),
            ] {
                text.push_str(&format!("# TYPE {name} gauge\n{name} {value}\n"));
            }
            text
        },
    )
        .into_response()
}
