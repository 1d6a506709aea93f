//! A chat on the compute thread: its request, its events, and its state between steps.

use std::time::Instant;

use poc_model::KvCache;
use poc_model::generate::{FinishReason, Sampler, SamplingParams};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::schedule::ChatWork;

/// What a chat session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// A generated token.
    Token(u32),
    /// Generation ended: `stop`, `length` or `abort`.
    Finish(&'static str),
    /// The model failed.
    Error(String),
}

/// A chat completion to run.
pub struct ChatRequest {
    /// Prompt tokens (chat template applied).
    pub prompt: Vec<u32>,
    /// Sampling settings.
    pub sampling: SamplingParams,
    /// Receives the events.
    pub events: mpsc::UnboundedSender<ChatEvent>,
}

pub(super) struct Session {
    pub(super) request: ChatRequest,
    pub(super) cache: KvCache,
    sampler: Sampler,
    generated: usize,
    /// Tokens not yet fed to the model: the rest of the prompt, then the last sample.
    pub(super) input: Vec<u32>,
    /// Whether the prompt has been fed completely.
    pub(super) decoding: bool,
    /// When the request was accepted, then when its latest token was sent.
    last_event: Instant,
}

impl Session {
    /// A session for a chat request accepted at `accepted`: its prompt is the first input.
    pub(super) fn open((request, accepted): (ChatRequest, Instant)) -> Self {
        Self {
            last_event: accepted,
            sampler: Sampler::new(&request.sampling),
            input: request.prompt.clone(),
            request,
            cache: KvCache::default(),
            generated: 0,
            decoding: false,
        }
    }

    pub(super) fn work(&self) -> ChatWork {
        ChatWork {
            pending: self.input.len(),
            decoding: self.decoding,
        }
    }

    /// Takes the logits of the session's last fed position: samples, reports the token,
    /// and prepares the next input. `Some(event)` when the session is over: the event
    /// that ends it, sent by the caller once the session no longer counts as running.
    pub(super) fn advance(
        &mut self,
        logits: &[f32],
        max_len: usize,
        metrics: &Metrics,
    ) -> Option<ChatEvent> {
        self.decoding = true;
        let token = self.sampler.sample(logits);
        let p = &self.request.sampling;
        if p.stop_tokens.contains(&token) {
            return Some(ChatEvent::Finish(finish_name(FinishReason::Stop)));
        }
        metrics.chat_tokens.inc();
        if self.request.events.send(ChatEvent::Token(token)).is_err() {
            return Some(ChatEvent::Finish("abort"));
        }
        let now = Instant::now();
        let latency = if self.generated == 0 {
            &metrics.chat_ttft
        } else {
            &metrics.chat_itl
        };
        latency.observe((now - self.last_event).as_secs_f64());
        self.last_event = now;
        self.generated += 1;
        if self.generated >= p.max_tokens || self.cache.len() + 1 >= max_len {
            return Some(ChatEvent::Finish(finish_name(FinishReason::Length)));
        }
        self.input = vec![token];
        None
    }
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}
