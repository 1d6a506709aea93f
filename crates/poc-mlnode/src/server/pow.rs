//! The PoC v2 routes in both layers: `init/generate`, `generate` (inline, queued,
//! validation), results by id, `status`, `stop`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use poc_core::artifact::encode_f16;
use poc_core::validation::compare_artifacts;
use poc_core::{Artifact, Encoding, InputRng, NonceIterator};
use poc_model::{NonceVector, PocParams};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::callbacks::Target;
use crate::compute::{GenerationSpec, Job};
use crate::wire::{ArtifactsResult, GenerateBody, InitGenerateBody, PocParamsBody, StatusConfig};

use super::pow_v1::v1_init_generate;
use super::{App, AppState, JobRecord, JobStatus, Layer, detail, parse, unprocessable};

/// 409 "params mismatch" when the model is not one the node serves; 422 for shapes the
/// node cannot compute.
#[allow(clippy::result_large_err)]
fn check_params(
    st: &AppState,
    p: &PocParamsBody,
    batch_size: Option<usize>,
) -> Result<usize, Response> {
    if !st.names.contains(&p.model) {
        return Err((
            StatusCode::CONFLICT,
            axum::Json(json!({ "detail": {
                "error": "params mismatch",
                "requested": { "model": p.model, "seq_len": p.seq_len, "k_dim": p.k_dim },
                "deployed": { "model": st.names, "seq_len": null, "k_dim": null },
            }})),
        )
            .into_response());
    }
    let hidden = st.engine.model().config().hidden_size;
    if p.k_dim == 0 || p.k_dim > hidden {
        return Err(unprocessable(
            &["params", "k_dim"],
            format!("k_dim must be between 1 and the hidden size {hidden}"),
        ));
    }
    let max_len = st.settings.max_seq_len.min(st.engine.model().max_len());
    if p.seq_len == 0 || p.seq_len > max_len {
        return Err(unprocessable(
            &["params", "seq_len"],
            format!("seq_len must be between 1 and {max_len}"),
        ));
    }
    let bs = batch_size.unwrap_or(st.settings.batch_size_default);
    if bs == 0 || bs > st.settings.max_batch_size {
        return Err(unprocessable(
            &["batch_size"],
            format!(
                "batch_size must be between 1 and {}",
                st.settings.max_batch_size
            ),
        ));
    }
    Ok(bs)
}

fn to_artifacts(v: &[NonceVector]) -> Vec<Artifact> {
    v.iter()
        .filter_map(|n| {
            n.vector.as_ref().map(|vec| Artifact {
                nonce: n.nonce,
                vector_b64: encode_f16(vec),
            })
        })
        .collect()
}

async fn init_generate(st: App, layer: Layer, body: Bytes) -> Response {
    if layer == Layer::Backend && crate::v1::is_v1_body(&body) {
        return v1_init_generate(st, body).await;
    }
    st.v1.release();
    let b: InitGenerateBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let batch_size = match check_params(&st, &b.params, b.batch_size) {
        Ok(bs) => bs,
        Err(r) => return r,
    };
    let nonces = match NonceIterator::new(b.node_id, b.node_count, b.group_id, b.n_groups) {
        Ok(it) => it.starting_at(b.nonce_start.unwrap_or(0)),
        Err(e) => return unprocessable(&["node_id"], e.to_string()),
    };
    if st.compute.generating() {
        return detail(StatusCode::CONFLICT, "Already generating");
    }
    let target = b.url.clone().map(|url| Target {
        url,
        public_key: b.public_key.clone(),
        block_hash: b.block_hash.clone(),
        block_height: b.block_height,
        node_id: b.node_id,
        k_dim: b.params.k_dim,
    });
    st.callbacks.configure(target);
    let callbacks = Arc::clone(&st.callbacks);
    let spec = GenerationSpec {
        params: PocParams {
            block_hash: b.block_hash.clone(),
            public_key: b.public_key.clone(),
            seq_len: b.params.seq_len,
            k_dim: b.params.k_dim,
            rng: InputRng::from_stronger_flag(b.poc_stronger_rng),
        },
        nonces,
        batch_size,
        sink: Arc::new(move |v: Vec<NonceVector>| callbacks.push(to_artifacts(&v))),
        config: StatusConfig {
            block_hash: b.block_hash,
            block_height: b.block_height,
            public_key: b.public_key,
            node_id: b.node_id,
            node_count: b.node_count,
            group_id: b.group_id,
            n_groups: b.n_groups,
            seq_len: b.params.seq_len,
            k_dim: b.params.k_dim,
        },
        requested_at: Instant::now(),
    };
    if st.compute.start_generation(spec).is_err() {
        return detail(StatusCode::CONFLICT, "Already generating");
    }
    match layer {
        Layer::MlNode => axum::Json(json!({
            "status": "OK", "backends": 1, "n_groups": 1,
            "results": [{ "port": st.port, "status": "OK" }], "errors": null,
        }))
        .into_response(),
        Layer::Backend => {
            axum::Json(json!({ "status": "OK", "pow_status": { "status": "GENERATING" } }))
                .into_response()
        }
    }
}

fn backend_status(st: &AppState) -> Value {
    match st.compute.generation_status() {
        None => json!({ "status": "IDLE", "config": null, "stats": null }),
        Some(g) => json!({
            "status": "GENERATING",
            "config": g.config,
            "stats": {
                "total_processed": g.total_processed,
                "nonces_per_second": g.nonces_per_second,
                "phase_switch_ms": g.phase_switch.map(|d| d.as_secs_f64() * 1e3),
            },
        }),
    }
}

async fn status(st: App, layer: Layer) -> Response {
    if layer == Layer::Backend && st.v1.active() {
        return axum::Json(st.v1.status()).into_response();
    }
    let s = backend_status(&st);
    match layer {
        Layer::Backend => axum::Json(s).into_response(),
        Layer::MlNode => {
            // The reference's fields, plus how chat and PoC share the model.
            let mut backend = s.clone();
            backend["port"] = json!(st.port);
            axum::Json(json!({
                "status": s["status"],
                "backends": [backend],
                "scheduler": st.compute.scheduler_status(),
            }))
            .into_response()
        }
    }
}

async fn stop(st: App, layer: Layer) -> Response {
    if layer == Layer::Backend && st.v1.active() {
        let r = st.v1.stop();
        st.stop_all().await;
        return axum::Json(r).into_response();
    }
    st.stop_all().await;
    for (_, r) in st.jobs().iter_mut() {
        if matches!(r.status, JobStatus::Queued) {
            r.status = JobStatus::Cancelled;
            r.finished = Some(Instant::now());
        }
    }
    match layer {
        Layer::MlNode => axum::Json(json!({
            "status": "OK", "results": [{ "port": st.port, "status": "stopped" }], "errors": null,
        }))
        .into_response(),
        Layer::Backend => {
            axum::Json(json!({ "status": "OK", "pow_status": { "status": "STOPPED" } }))
                .into_response()
        }
    }
}

/// The completed-result fields of a `/generate` computation.
fn result_fields(b: &GenerateBody, vectors: &[NonceVector]) -> Result<Value, String> {
    match &b.validation {
        None => serde_json::to_value(ArtifactsResult {
            artifacts: to_artifacts(vectors),
            encoding: Encoding::f16_le(b.params.k_dim),
        })
        .map_err(|e| e.to_string()),
        Some(v) => {
            let computed: Vec<(i64, Vec<f32>)> = vectors
                .iter()
                .filter_map(|n| {
                    n.vector
                        .as_ref()
                        .map(|x| (n.nonce, x.iter().map(|h| h.to_f32()).collect()))
                })
                .collect();
            let stat = b.stat_test.clone().unwrap_or_default().resolve();
            let r = compare_artifacts(&computed, &v.artifacts, &stat).map_err(|e| e.to_string())?;
            serde_json::to_value(r).map_err(|e| e.to_string())
        }
    }
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

async fn generate(st: App, layer: Layer, body: Bytes) -> Response {
    let b: GenerateBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let batch_size = match check_params(&st, &b.params, b.batch_size) {
        Ok(bs) => bs,
        Err(r) => return r,
    };
    if b.nonces.len() > st.settings.max_nonces_per_request {
        return unprocessable(
            &["nonces"],
            format!(
                "at most {} nonces per request",
                st.settings.max_nonces_per_request
            ),
        );
    }
    let distinct: HashSet<i64> = b.nonces.iter().copied().collect();
    if let Some(v) = &b.validation {
        let got: HashSet<i64> = v.artifacts.iter().map(|a| a.nonce).collect();
        if got != distinct {
            return detail(
                StatusCode::BAD_REQUEST,
                "validation.artifacts nonces must match nonces field",
            );
        }
    }
    let params = PocParams {
        block_hash: b.block_hash.clone(),
        public_key: b.public_key.clone(),
        seq_len: b.params.seq_len,
        k_dim: b.params.k_dim,
        rng: InputRng::from_stronger_flag(b.poc_stronger_rng),
    };
    let uuid = uuid::Uuid::new_v4().to_string();
    let request_id = match layer {
        Layer::MlNode => format!("{}:{uuid}", st.port),
        Layer::Backend => uuid,
    };
    let n = b.nonces.len();
    if b.wait {
        let (tx, rx) = oneshot::channel();
        // The reference waits while continuous generation runs, then computes.
        while st.compute.generating() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        st.compute
            .submit(Job::new(params, b.nonces.clone(), batch_size, tx), true);
        let limit = st.settings.chunk_timeout * n.div_ceil(batch_size).max(1) as u32;
        return match tokio::time::timeout(limit, rx).await {
            Err(_) => detail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("computation timed out after {limit:?}"),
            ),
            Ok(Err(_)) => detail(
                StatusCode::SERVICE_UNAVAILABLE,
                "the compute thread stopped",
            ),
            Ok(Ok(Err(e))) => detail(StatusCode::SERVICE_UNAVAILABLE, e),
            Ok(Ok(Ok(vectors))) => match result_fields(&b, &vectors) {
                Ok(fields) => axum::Json(merge(
                    json!({ "status": "completed", "request_id": request_id }),
                    fields,
                ))
                .into_response(),
                Err(e) => detail(StatusCode::BAD_REQUEST, e),
            },
        };
    }
    // Queued: FIFO behind earlier requests, after continuous generation stops.
    let queued = st.queued_nonces.load(Ordering::SeqCst);
    if queued + n > st.settings.max_queued_nonces {
        return detail(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Queue full: {queued} nonces queued, limit is {}",
                st.settings.max_queued_nonces
            ),
        );
    }
    st.queued_nonces.fetch_add(n, Ordering::SeqCst);
    st.jobs().insert(
        request_id.clone(),
        JobRecord {
            status: JobStatus::Queued,
            finished: None,
        },
    );
    let (tx, rx) = oneshot::channel();
    st.compute
        .submit(Job::new(params, b.nonces.clone(), batch_size, tx), false);
    let st2 = Arc::clone(&st);
    let id = request_id.clone();
    tokio::spawn(async move {
        let outcome = rx.await;
        st2.queued_nonces.fetch_sub(n, Ordering::SeqCst);
        let status = match outcome {
            Ok(Ok(vectors)) => match result_fields(&b, &vectors) {
                Ok(fields) => JobStatus::Completed(fields),
                Err(e) => JobStatus::Failed(e),
            },
            Ok(Err(e)) if e == "cancelled" => JobStatus::Cancelled,
            Ok(Err(e)) => JobStatus::Failed(e),
            Err(_) => JobStatus::Failed("the compute thread stopped".into()),
        };
        if let (Some(url), JobStatus::Completed(fields)) = (&b.url, &status) {
            let head = json!({
                "request_id": id, "block_hash": b.block_hash, "block_height": b.block_height,
                "public_key": b.public_key, "node_id": b.node_id,
            });
            let path = if b.validation.is_some() {
                "validated"
            } else {
                "generated"
            };
            st2.callbacks
                .post_once(url, path, &merge(head, fields.clone()))
                .await;
        }
        if let Some(r) = st2.jobs().get_mut(&id) {
            r.status = status;
            r.finished = Some(Instant::now());
        }
    });
    axum::Json(json!({ "status": "queued", "request_id": request_id, "queued_count": n }))
        .into_response()
}

async fn generate_result(st: App, layer: Layer, id: String) -> Response {
    if layer == Layer::MlNode {
        let well_formed = id
            .split_once(':')
            .is_some_and(|(port, rest)| port.parse::<u16>().is_ok() && !rest.is_empty());
        if !well_formed {
            return detail(
                StatusCode::BAD_REQUEST,
                format!("malformed request id {id:?} (expected PORT:ID)"),
            );
        }
    }
    st.evict_expired();
    let jobs = st.jobs();
    let Some(r) = jobs.get(&id) else {
        return detail(StatusCode::NOT_FOUND, format!("Request {id} not found"));
    };
    let body = match &r.status {
        JobStatus::Queued => json!({ "status": "queued", "request_id": id }),
        JobStatus::Cancelled => json!({ "status": "cancelled", "request_id": id }),
        JobStatus::Failed(e) => json!({ "status": "failed", "request_id": id, "error": e }),
        JobStatus::Completed(fields) => merge(
            json!({ "status": "completed", "request_id": id }),
            fields.clone(),
        ),
    };
    axum::Json(body).into_response()
}

/// The five PoC v2 routes under both prefixes.
pub(super) fn routes() -> Router<App> {
    let mut r = Router::new();
    for (prefix, layer) in [
        ("/api/v1/inference/pow", Layer::MlNode),
        ("/api/v1/pow", Layer::Backend),
    ] {
        r = r
            .route(
                &format!("{prefix}/init/generate"),
                post(move |State(s): State<App>, b: Bytes| init_generate(s, layer, b)),
            )
            .route(
                &format!("{prefix}/generate"),
                post(move |State(s): State<App>, b: Bytes| generate(s, layer, b)),
            )
            .route(
                &format!("{prefix}/generate/{{request_id}}"),
                get(move |State(s): State<App>, Path(id): Path<String>| {
                    generate_result(s, layer, id)
                }),
            )
            .route(
                &format!("{prefix}/status"),
                get(move |State(s): State<App>| status(s, layer)),
            )
            .route(
                &format!("{prefix}/stop"),
                post(move |State(s): State<App>| stop(s, layer)),
            );
    }
    r
}
