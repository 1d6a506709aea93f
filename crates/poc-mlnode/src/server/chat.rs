//! OpenAI-style chat completions (plain and streaming) and the model list.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use poc_model::generate::SamplingParams;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::chat::{ChatCompletionRequest, Stop};
use crate::compute::{ChatEvent, ChatRefused, ChatRequest};

use super::{App, AppState, parse};

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

async fn chat_completions(st: App, body: Bytes) -> Response {
    st.metrics.chat_requests.inc();
    let req: ChatCompletionRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let admitted = match admit(&st, &req) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let prompt_tokens = admitted.prompt.len();
    if let Err(r) = submit(&st, admitted.prompt, admitted.sampling, tx) {
        return r;
    }
    let reply = Reply {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        model: req.model.clone().unwrap_or_else(|| st.names[0].clone()),
        stops: admitted.stops,
        prompt_tokens,
    };
    if req.stream {
        stream(st, rx, reply)
    } else {
        complete(&st, rx, reply).await
    }
}

/// A request that passed the checks: its prompt tokens, sampling and stop strings.
struct Admitted {
    prompt: Vec<u32>,
    sampling: SamplingParams,
    stops: Vec<String>,
}

/// What every answer to one request carries.
struct Reply {
    id: String,
    created: u64,
    model: String,
    stops: Vec<String>,
    prompt_tokens: usize,
}

/// Checks a request against the node (chat available, model served, PoC not owning the
/// model, context) and renders its prompt.
#[allow(clippy::result_large_err)]
fn admit(st: &AppState, req: &ChatCompletionRequest) -> Result<Admitted, Response> {
    let Some(chat) = st.chat.as_ref() else {
        return Err(chat_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "this model has no tokenizer, so chat is not available",
        ));
    };
    if let Some(m) = &req.model
        && !st.names.contains(m)
    {
        return Err(chat_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("model {m:?} is not served here"),
        ));
    }
    if st.compute.refuses_chat() {
        st.metrics.chat_rejected.inc();
        return Err(chat_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service unavailable: POC generation in progress",
        ));
    }
    let prompt = match chat.prompt(&req.messages) {
        Ok(p) => p,
        Err(e) => {
            return Err(chat_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                e.0,
            ));
        }
    };
    let model = st.engine.model();
    let context = model.max_len();
    let requested = req.max_completion_tokens.or(req.max_tokens);
    if requested == Some(0) {
        return Err(chat_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens must be at least 1",
        ));
    }
    // The prompt and the completion must fit the context (prefill is chunked to the step
    // budget, so any prompt that fits the context fits the budget).
    let completion = requested.unwrap_or(256.min(context.saturating_sub(prompt.len())));
    if prompt.len() + completion > context || prompt.len() >= context {
        return Err(chat_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!(
                "This model's maximum context length is {context} tokens. However, you requested {} tokens ({} in the messages, {completion} in the completion). Please reduce the length of the messages or completion.",
                prompt.len() + completion,
                prompt.len(),
            ),
        ));
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
    Ok(Admitted {
        prompt,
        sampling,
        stops,
    })
}

/// Hands the chat to the compute thread; 503 or 429 when it is not taken.
#[allow(clippy::result_large_err)]
fn submit(
    st: &AppState,
    prompt: Vec<u32>,
    sampling: SamplingParams,
    events: mpsc::UnboundedSender<ChatEvent>,
) -> Result<(), Response> {
    match st.compute.chat(ChatRequest {
        prompt,
        sampling,
        events,
    }) {
        Ok(()) => Ok(()),
        Err(ChatRefused::Generating(_)) => {
            st.metrics.chat_rejected.inc();
            Err(chat_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Service unavailable: POC generation in progress",
            ))
        }
        Err(ChatRefused::QueueFull(_)) => {
            st.metrics.chat_rejected.inc();
            Err(chat_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "too many chat requests: {} are running or waiting; retry later",
                    st.settings.chat_max_queue
                ),
            ))
        }
    }
}

/// The whole completion as one response (`stream: false`).
async fn complete(st: &AppState, mut rx: mpsc::UnboundedReceiver<ChatEvent>, r: Reply) -> Response {
    let chat = st
        .chat
        .as_ref()
        .expect("admitted requests have a tokenizer");
    let mut ids: Vec<u32> = vec![];
    let mut finish = "stop";
    while let Some(ev) = rx.recv().await {
        match ev {
            ChatEvent::Token(t) => {
                ids.push(t);
                if !r.stops.is_empty()
                    && r.stops
                        .iter()
                        .any(|s| chat.decode(&ids).contains(s.as_str()))
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
    if let Some(cut) = r.stops.iter().filter_map(|s| text.find(s.as_str())).min() {
        text.truncate(cut);
    }
    let (id, created, model, prompt_tokens) = (r.id, r.created, r.model, r.prompt_tokens);
    axum::Json(json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": finish }],
        "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": ids.len(), "total_tokens": prompt_tokens + ids.len() },
    }))
    .into_response()
}

/// Server-sent events (`stream: true`): a role chunk, content chunks as text becomes
/// final (a partial character or a possible stop-string start is held back), a finish
/// chunk, `[DONE]`.
fn stream(st: App, mut rx: mpsc::UnboundedReceiver<ChatEvent>, r: Reply) -> Response {
    let events = async_stream(
        move |out: mpsc::Sender<Result<Event, std::convert::Infallible>>| async move {
            let chat = st
                .chat
                .as_ref()
                .expect("admitted requests have a tokenizer");
            let (id, created, name, stops) = (r.id, r.created, r.model, r.stops);
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
    Sse::new(events).into_response()
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(
    f: F,
) -> tokio_stream::wrappers::ReceiverStream<Result<Event, std::convert::Infallible>>
where
    F: FnOnce(mpsc::Sender<Result<Event, std::convert::Infallible>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn models(st: App) -> Response {
    let data: Vec<Value> = st
        .names
        .iter()
        .map(|n| json!({ "id": n, "object": "model", "owned_by": "poc", "max_model_len": st.engine.model().max_len() }))
        .collect();
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

/// `/v1/chat/completions` and `/v1/models`.
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(|State(s): State<App>, b: Bytes| chat_completions(s, b)),
        )
        .route("/v1/models", get(|State(s): State<App>| models(s)))
}
