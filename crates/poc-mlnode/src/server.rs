//! HTTP routes: the ML-node PoC API (`/api/v1/inference/pow/*`), the same backend API
//! as the reference's vLLM layer (`/api/v1/pow/*`), chat completions, health and metrics.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use poc_core::artifact::encode_f16;
use poc_core::validation::compare_artifacts;
use poc_core::{Artifact, Encoding, InputRng, NonceIterator};
use poc_model::generate::SamplingParams;
use poc_model::{NonceVector, PocEngine, PocParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::api::{ArtifactsResult, GenerateBody, InitGenerateBody, PocParamsBody, StatusConfig};
use crate::callbacks::{Callbacks, Target};
use crate::chat::{ChatCompletionRequest, ChatModel, Stop};
use crate::compute::{ChatEvent, ChatRefused, ChatRequest, Compute, GenerationSpec, Job};
use crate::metrics::Metrics;
use crate::settings::PocSettings;

/// Which API layer a route belongs to (response shapes differ slightly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// `/api/v1/inference/pow/*` (what the API node calls).
    MlNode,
    /// `/api/v1/pow/*` (the reference's vLLM backend API).
    Backend,
}

#[derive(Debug, Clone)]
pub(crate) enum JobStatus {
    Queued,
    Completed(Value),
    Failed(String),
    Cancelled,
}

pub(crate) struct JobRecord {
    status: JobStatus,
    finished: Option<Instant>,
}

/// Everything the handlers share.
pub struct AppState {
    pub(crate) compute: Compute,
    pub(crate) engine: Arc<PocEngine>,
    pub(crate) names: Vec<String>,
    pub(crate) settings: PocSettings,
    pub(crate) callbacks: Arc<Callbacks>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) chat: Option<ChatModel>,
    pub(crate) port: u16,
    pub(crate) jobs: Mutex<HashMap<String, JobRecord>>,
    pub(crate) queued_nonces: AtomicUsize,
    pub(crate) v1: Arc<crate::v1::V1Service>,
}

impl AppState {
    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, JobRecord>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops finished job records older than the result TTL.
    pub(crate) fn evict_expired(&self) {
        let ttl = self.settings.result_ttl;
        self.jobs()
            .retain(|_, r| r.finished.is_none_or(|t| t.elapsed() < ttl));
    }

    /// Stops generation (after flushing its artifacts) and the queue.
    pub(crate) async fn stop_all(&self) {
        let _ = self.compute.stop().await;
        if let Err(e) = self.callbacks.flush().await {
            tracing::warn!("final callback delivery failed: {e}");
        }
        self.callbacks.configure(None);
    }
}

type Shared = Arc<AppState>;

fn detail(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "detail": msg.into() }))).into_response()
}

/// Parses a JSON body; schema errors are a 422 naming the field, like FastAPI. (The
/// error is the response itself, handed straight back to axum.)
#[allow(clippy::result_large_err)]
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut loc = vec![json!("body")];
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => loc.push(json!(index)),
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => loc.push(json!(key)),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        let inner = e.into_inner();
        let msg = inner.to_string();
        if let Some(field) = msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            loc.push(json!(field));
        }
        let kind = if inner.is_syntax() || inner.is_eof() {
            "json_invalid"
        } else {
            "value_error"
        };
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({ "detail": [{ "type": kind, "loc": loc, "msg": msg }] })),
        )
            .into_response()
    })
}

fn unprocessable(field: &[&str], msg: String) -> Response {
    let mut loc = vec![json!("body")];
    loc.extend(field.iter().map(|f| json!(f)));
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({ "detail": [{ "type": "value_error", "loc": loc, "msg": msg }] })),
    )
        .into_response()
}

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

fn v1_reply(r: Result<Value, crate::v1::V1Error>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(crate::v1::V1Error(code, msg)) => detail(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            msg,
        ),
    }
}

async fn v1_init_generate(st: Shared, body: Bytes) -> Response {
    let b: crate::v1::V1Init = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    // v1 and v2 never run together.
    st.stop_all().await;
    v1_reply(st.v1.init_generate(b).await)
}

async fn init_generate(st: Shared, layer: Layer, body: Bytes) -> Response {
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

async fn status(st: Shared, layer: Layer) -> Response {
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

async fn stop(st: Shared, layer: Layer) -> Response {
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

async fn generate(st: Shared, layer: Layer, body: Bytes) -> Response {
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

async fn generate_result(st: Shared, layer: Layer, id: String) -> Response {
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

fn chat_error(status: StatusCode, kind: &str, msg: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "message": msg.into(), "type": kind } })),
    )
        .into_response()
}

/// Generated tokens and how much of their text was streamed.
struct Detok {
    ids: Vec<u32>,
    sent: usize,
}

async fn chat_completions(st: Shared, body: Bytes) -> Response {
    st.metrics.chat_requests.inc();
    let req: ChatCompletionRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(chat) = st.chat.as_ref() else {
        return chat_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "this model has no tokenizer, so chat is not available",
        );
    };
    if let Some(m) = &req.model
        && !st.names.contains(m)
    {
        return chat_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("model {m:?} is not served here"),
        );
    }
    if st.compute.refuses_chat() {
        st.metrics.chat_rejected.inc();
        return chat_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service unavailable: POC generation in progress",
        );
    }
    let prompt = match chat.prompt(&req.messages) {
        Ok(p) => p,
        Err(e) => return chat_error(StatusCode::BAD_REQUEST, "invalid_request_error", e),
    };
    let model = st.engine.model();
    let context = model.max_len();
    let requested = req.max_completion_tokens.or(req.max_tokens);
    if requested == Some(0) {
        return chat_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens must be at least 1",
        );
    }
    // The prompt and the completion must fit the context (prefill is chunked to the step
    // budget, so any prompt that fits the context fits the budget).
    let completion = requested.unwrap_or(256.min(context.saturating_sub(prompt.len())));
    if prompt.len() + completion > context || prompt.len() >= context {
        return chat_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!(
                "This model's maximum context length is {context} tokens. However, you requested {} tokens ({} in the messages, {completion} in the completion). Please reduce the length of the messages or completion.",
                prompt.len() + completion,
                prompt.len(),
            ),
        );
    }
    let sampling = SamplingParams {
        max_tokens: completion,
        temperature: req.temperature.unwrap_or(1.0).max(0.0),
        top_p: req.top_p.unwrap_or(1.0),
        seed: req
            .seed
            .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0),
        stop_tokens: chat.stop_ids.clone(),
    };
    let stops: Vec<String> = match &req.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let prompt_tokens = prompt.len();
    match st.compute.chat(ChatRequest {
        prompt,
        sampling,
        events: tx,
    }) {
        Ok(()) => {}
        Err(ChatRefused::Generating(_)) => {
            st.metrics.chat_rejected.inc();
            return chat_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Service unavailable: POC generation in progress",
            );
        }
        Err(ChatRefused::QueueFull(_)) => {
            st.metrics.chat_rejected.inc();
            return chat_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "too many chat requests: {} are running or waiting; retry later",
                    st.settings.chat_max_queue
                ),
            );
        }
    }
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = req.model.clone().unwrap_or_else(|| st.names[0].clone());
    if !req.stream {
        let mut ids: Vec<u32> = vec![];
        let mut finish = "stop";
        while let Some(ev) = rx.recv().await {
            match ev {
                ChatEvent::Token(t) => {
                    ids.push(t);
                    if !stops.is_empty()
                        && stops.iter().any(|s| chat.decode(&ids).contains(s.as_str()))
                    {
                        break;
                    }
                }
                ChatEvent::Finish(f) => {
                    finish = f;
                    break;
                }
                ChatEvent::Error(e) => {
                    return chat_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e);
                }
            }
        }
        let mut text = chat.decode(&ids);
        if let Some(cut) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(cut);
        }
        return axum::Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": name,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": finish }],
            "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": ids.len(), "total_tokens": prompt_tokens + ids.len() },
        }))
        .into_response();
    }
    let st2 = Arc::clone(&st);
    let stream = async_stream(
        move |out: mpsc::Sender<Result<Event, std::convert::Infallible>>| async move {
            let chat = st2.chat.as_ref().expect("checked above");
            let chunk = |delta: Value, finish: Option<&str>| {
                Event::default().data(
                json!({
                    "id": id, "object": "chat.completion.chunk", "created": created, "model": name,
                    "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
                })
                .to_string(),
            )
            };
            let _ = out
                .send(Ok(chunk(
                    json!({ "role": "assistant", "content": "" }),
                    None,
                )))
                .await;
            let mut d = Detok {
                ids: vec![],
                sent: 0,
            };
            let mut finish = "stop";
            while let Some(ev) = rx.recv().await {
                match ev {
                    ChatEvent::Token(t) => {
                        d.ids.push(t);
                        let text = chat.decode(&d.ids);
                        if let Some(cut) = stops.iter().filter_map(|s| text.find(s.as_str())).min()
                        {
                            if cut > d.sent {
                                let _ = out
                                    .send(Ok(chunk(json!({ "content": &text[d.sent..cut] }), None)))
                                    .await;
                            }
                            break;
                        }
                        // Hold back a partial character and anything that could start a stop string.
                        let hold = stops
                            .iter()
                            .map(|s| s.len().saturating_sub(1))
                            .max()
                            .unwrap_or(0);
                        let mut upto = text.len().saturating_sub(hold);
                        while upto > d.sent && !text.is_char_boundary(upto) {
                            upto -= 1;
                        }
                        if text.ends_with('\u{FFFD}') {
                            continue;
                        }
                        if upto > d.sent {
                            if out
                                .send(Ok(chunk(json!({ "content": &text[d.sent..upto] }), None)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                            d.sent = upto;
                        }
                    }
                    ChatEvent::Finish(f) => {
                        let text = chat.decode(&d.ids);
                        if text.len() > d.sent {
                            let _ = out
                                .send(Ok(chunk(json!({ "content": &text[d.sent..] }), None)))
                                .await;
                        }
                        finish = f;
                        break;
                    }
                    ChatEvent::Error(e) => {
                        let _ = out
                            .send(Ok(Event::default()
                                .data(json!({ "error": { "message": e } }).to_string())))
                            .await;
                        return;
                    }
                }
            }
            let _ = out.send(Ok(chunk(json!({}), Some(finish)))).await;
            let _ = out.send(Ok(Event::default().data("[DONE]"))).await;
        },
    );
    Sse::new(stream).into_response()
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(
    f: F,
) -> tokio_stream::wrappers::ReceiverStream<Result<Event, std::convert::Infallible>>
where
    F: FnOnce(mpsc::Sender<Result<Event, std::convert::Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn models(st: Shared) -> Response {
    let data: Vec<Value> = st
        .names
        .iter()
        .map(|n| json!({ "id": n, "object": "model", "owned_by": "poc", "max_model_len": st.engine.model().max_len() }))
        .collect();
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

async fn metrics(st: Shared) -> Response {
    let text = st.metrics.render(
        st.compute.generating(),
        st.queued_nonces.load(Ordering::SeqCst),
        st.compute.active_chats(),
        st.compute.scheduler_status().chat_queue_depth,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn health(st: Shared) -> Response {
    axum::Json(json!({
        "status": "ok",
        "generating": st.compute.generating(),
        "model": st.names[0],
        "pending_callback_artifacts": st.callbacks.pending(),
    }))
    .into_response()
}

/// All routes.
pub fn router(state: Shared, body_limit: usize) -> Router {
    let mut r = Router::new();
    for (prefix, layer) in [
        ("/api/v1/inference/pow", Layer::MlNode),
        ("/api/v1/pow", Layer::Backend),
    ] {
        r = r
            .route(
                &format!("{prefix}/init/generate"),
                post(move |State(s): State<Shared>, b: Bytes| init_generate(s, layer, b)),
            )
            .route(
                &format!("{prefix}/generate"),
                post(move |State(s): State<Shared>, b: Bytes| generate(s, layer, b)),
            )
            .route(
                &format!("{prefix}/generate/{{request_id}}"),
                get(move |State(s): State<Shared>, Path(id): Path<String>| {
                    generate_result(s, layer, id)
                }),
            )
            .route(
                &format!("{prefix}/status"),
                get(move |State(s): State<Shared>| status(s, layer)),
            )
            .route(
                &format!("{prefix}/stop"),
                post(move |State(s): State<Shared>| stop(s, layer)),
            );
    }
    r.route(
        "/api/v1/pow/init",
        post(|State(s): State<Shared>, b: Bytes| async move {
            match parse::<crate::v1::V1Init>(&b) {
                Ok(i) => {
                    s.stop_all().await;
                    v1_reply(s.v1.init(i).await)
                }
                Err(r) => r,
            }
        }),
    )
    .route(
        "/api/v1/pow/init/validate",
        post(|State(s): State<Shared>, b: Bytes| async move {
            match parse::<crate::v1::V1Init>(&b) {
                Ok(i) => {
                    s.stop_all().await;
                    v1_reply(s.v1.init_validate(Some(i)).await)
                }
                Err(r) => r,
            }
        }),
    )
    .route(
        "/api/v1/pow/phase/generate",
        post(|State(s): State<Shared>| async move { v1_reply(s.v1.phase_generate()) }),
    )
    .route(
        "/api/v1/pow/phase/validate",
        post(|State(s): State<Shared>| async move { v1_reply(s.v1.init_validate(None).await) }),
    )
    .route(
        "/api/v1/pow/validate",
        post(|State(s): State<Shared>, b: Bytes| async move {
            match parse::<crate::v1::ProofBatch>(&b) {
                Ok(batch) => match s.v1.validate(batch).await {
                    Ok(()) => axum::Json(Value::Null).into_response(),
                    Err(crate::v1::V1Error(code, msg)) => detail(
                        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                        msg,
                    ),
                },
                Err(r) => r,
            }
        }),
    )
    .route(
        "/v1/chat/completions",
        post(|State(s): State<Shared>, b: Bytes| chat_completions(s, b)),
    )
    .route("/v1/models", get(|State(s): State<Shared>| models(s)))
    .route("/health", get(|State(s): State<Shared>| health(s)))
    .route("/metrics", get(|State(s): State<Shared>| metrics(s)))
    .layer(axum::extract::DefaultBodyLimit::max(body_limit))
    .with_state(state)
}
