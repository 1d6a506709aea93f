//! HTTP routes: the ML-node PoC API (`/api/v1/inference/pow/*`), the same backend API
//! as the reference's vLLM layer (`/api/v1/pow/*`), chat completions, health and metrics.

mod chat;
mod pow;
mod pow_v1;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use poc_model::PocEngine;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::callbacks::Callbacks;
use crate::chat::ChatModel;
use crate::compute::Compute;
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

/// The handlers' state.
type App = Arc<AppState>;

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

async fn metrics(st: App) -> Response {
    let text = st.metrics.render(
        st.compute.generating(),
        st.queued_nonces.load(Ordering::SeqCst),
        st.compute.active_chats(),
        st.compute.scheduler_status().chat_queue_depth,
    );
    (
        [(
            header::CONTENT_TYPE,
            poc_http::metrics::CONTENT_TYPE_OPENMETRICS,
        )],
        text,
    )
        .into_response()
}

async fn health(st: App) -> Response {
    axum::Json(json!({
        "status": "ok",
        "generating": st.compute.generating(),
        "model": st.names[0],
        "pending_callback_artifacts": st.callbacks.pending(),
    }))
    .into_response()
}

/// All routes.
pub fn router(state: App, body_limit: usize) -> Router {
    pow::routes()
        .merge(pow_v1::routes())
        .merge(chat::routes())
        .route("/health", get(|State(s): State<App>| health(s)))
        .route("/metrics", get(|State(s): State<App>| metrics(s)))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
