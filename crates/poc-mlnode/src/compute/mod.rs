//! The compute thread: the only place the model runs. It owns the chat sessions' caches and
//! runs one step at a time, as the policy says (`docs/mlnode.md`, "Scheduling"):
//!
//! - `mixed`: one forward over PoC rows (continuous generation, or a `/generate` job when
//!   generation is off) and chat rows within the token budget ([`crate::schedule`]);
//!   PoC alone when no chat waits.
//! - `chat-priority`: chat steps while any chat is running or waiting, PoC batches
//!   otherwise; jobs alternate with chat steps.
//! - `poc-priority`: PoC batches own the thread while generation runs (chats are
//!   aborted and refused); otherwise jobs alternate with chat steps.
//!
//! A chat step feeds every running chat its last token and new prompts in chunks, in one
//! forward.

mod session;
mod worker;

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use poc_core::NonceIterator;
use poc_model::{NonceVector, PocEngine, PocParams};
use serde::Serialize;
use tokio::sync::oneshot;

pub use session::{ChatEvent, ChatRequest};

use crate::metrics::Metrics;
use crate::schedule::ChatPolicy;
use crate::schedule::{SchedulerConfig, StepRows};
use crate::wire::StatusConfig;

/// Where continuous generation delivers each batch.
pub type BatchSink = Arc<dyn Fn(Vec<NonceVector>) + Send + Sync>;

/// What continuous generation runs with.
pub struct GenerationSpec {
    /// Seeds and shape.
    pub params: PocParams,
    /// The node's nonce stream.
    pub nonces: NonceIterator,
    /// Nonces per forward.
    pub batch_size: usize,
    /// Receives every computed batch.
    pub sink: BatchSink,
    /// Echoed by `status`.
    pub config: StatusConfig,
    /// When `init/generate` was received (phase-switch latency).
    pub requested_at: Instant,
}

struct Generation {
    spec: GenerationSpec,
    processed: u64,
    first_batch_at: Option<Instant>,
}

/// A `/generate` computation: its nonces are processed in chunks of `batch_size`.
pub struct Job {
    /// Seeds and shape.
    pub params: PocParams,
    /// Nonces, in request order.
    pub nonces: Vec<i64>,
    /// Chunk size.
    pub batch_size: usize,
    /// Receives the vectors (or why there are none).
    pub reply: oneshot::Sender<Result<Vec<NonceVector>, String>>,
    done: Vec<NonceVector>,
}

impl Job {
    /// A job; `reply` gets the result.
    pub fn new(
        params: PocParams,
        nonces: Vec<i64>,
        batch_size: usize,
        reply: oneshot::Sender<Result<Vec<NonceVector>, String>>,
    ) -> Self {
        Self {
            params,
            nonces,
            batch_size: batch_size.max(1),
            reply,
            done: Vec::new(),
        }
    }
}

/// A snapshot of continuous generation for `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationStatus {
    /// Its configuration.
    pub config: StatusConfig,
    /// Nonces computed so far.
    pub total_processed: u64,
    /// Average rate since the first batch.
    pub nonces_per_second: f64,
    /// From `init/generate` to the first batch starting.
    pub phase_switch: Option<Duration>,
}

#[derive(Default)]
struct State {
    generation: Option<Generation>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    stop_requested: bool,
    inline_jobs: VecDeque<Job>,
    queued_jobs: VecDeque<Job>,
    new_chats: Vec<(ChatRequest, Instant)>,
    /// Sessions on the compute thread.
    active_chats: usize,
    /// Of those, sessions whose prompt is not fed completely yet.
    prefilling: usize,
    shutdown: bool,
}

/// What the HTTP handlers and the compute thread share: the scheduler's state under one
/// lock, and the condition variable that wakes the compute thread.
struct Inbox {
    state: Mutex<State>,
    wake: Condvar,
    config: SchedulerConfig,
}

/// Why a chat request was not taken (it is handed back).
pub enum ChatRefused {
    /// PoC generation owns the model (`poc-priority`): 503.
    Generating(ChatRequest),
    /// As many chats as `chat_max_queue` are running or waiting: 429.
    QueueFull(ChatRequest),
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Continuous generation is already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Already generating")]
pub struct AlreadyGenerating;

/// What the scheduler is doing, for `status` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerStatus {
    /// The policy's command-line name.
    pub policy: &'static str,
    /// The step token budget.
    pub max_batch_tokens: usize,
    /// PoC's share of the budget while chat waits (`mixed`).
    pub poc_share: f64,
    /// Rows of the latest step, by kind.
    pub last_step_rows: StepRows,
    /// Chats waiting for their first token (accepted, prompt not fed completely).
    pub chat_queue_depth: usize,
    /// Chats generating tokens.
    pub chat_running: usize,
    /// PoC nonces per second over the last seconds.
    pub poc_nonces_per_second: f64,
    /// Chat tokens per second over the last seconds.
    pub chat_tokens_per_second: f64,
}

/// Handle to the compute thread.
pub struct Compute {
    shared: Arc<Inbox>,
    metrics: Arc<Metrics>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Compute {
    /// Starts the compute thread over `engine`, sharing it between chat and PoC as
    /// `config` says.
    pub fn start(engine: Arc<PocEngine>, metrics: Arc<Metrics>, config: SchedulerConfig) -> Self {
        let config = SchedulerConfig {
            chat_max_queue: config.chat_max_queue.max(1),
            max_batch_tokens: config.max_batch_tokens.max(1),
            poc_share: config.poc_share.clamp(0.0, 1.0),
            ..config
        };
        let shared = Arc::new(Inbox {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            config,
        });
        let s = Arc::clone(&shared);
        let m = Arc::clone(&metrics);
        let thread = std::thread::Builder::new()
            .name("poc-compute".into())
            .spawn(move || worker::run(&s, &engine, &m))
            .expect("spawn the compute thread");
        Self {
            shared,
            metrics,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Starts continuous generation; `Err` if it is already running.
    pub fn start_generation(&self, spec: GenerationSpec) -> Result<(), AlreadyGenerating> {
        let mut s = self.shared.lock();
        if s.generation.is_some() {
            return Err(AlreadyGenerating);
        }
        s.generation = Some(Generation {
            spec,
            processed: 0,
            first_batch_at: None,
        });
        drop(s);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Whether continuous generation is running.
    pub fn generating(&self) -> bool {
        self.shared.lock().generation.is_some()
    }

    /// Continuous generation's status, if running.
    pub fn generation_status(&self) -> Option<GenerationStatus> {
        let s = self.shared.lock();
        s.generation.as_ref().map(|g| GenerationStatus {
            config: g.spec.config.clone(),
            total_processed: g.processed,
            nonces_per_second: g
                .first_batch_at
                .map(|t| g.processed as f64 / t.elapsed().as_secs_f64().max(1e-9))
                .unwrap_or(0.0),
            phase_switch: g.first_batch_at.map(|t| t - g.spec.requested_at),
        })
    }

    /// The scheduler's figures.
    pub fn scheduler_status(&self) -> SchedulerStatus {
        let s = self.shared.lock();
        let c = &self.shared.config;
        let (nonces, tokens) = self.metrics.recent_rates();
        SchedulerStatus {
            policy: c.policy.name(),
            max_batch_tokens: c.max_batch_tokens,
            poc_share: c.poc_share,
            last_step_rows: self.metrics.last_step(),
            chat_queue_depth: s.new_chats.len() + s.prefilling,
            chat_running: s.active_chats - s.prefilling,
            poc_nonces_per_second: nonces,
            chat_tokens_per_second: tokens,
        }
    }

    /// Stops continuous generation after the step in progress (its results are delivered
    /// to the sink first) and cancels every job not yet started. Chats go on. Resolves
    /// when done.
    pub fn stop(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut s = self.shared.lock();
        s.stop_requested = true;
        s.stop_waiters.push(tx);
        for job in s.queued_jobs.drain(..) {
            let _ = job.reply.send(Err("cancelled".into()));
        }
        drop(s);
        self.shared.wake.notify_all();
        rx
    }

    /// Queues a `/generate` job: `inline` ones (`wait=true`) go before the FIFO queue.
    pub fn submit(&self, job: Job, inline: bool) {
        let mut s = self.shared.lock();
        if inline {
            s.inline_jobs.push_back(job);
        } else {
            s.queued_jobs.push_back(job);
        }
        drop(s);
        self.shared.wake.notify_all();
    }

    /// Whether chat is refused right now (PoC generating under `poc-priority`).
    pub fn refuses_chat(&self) -> bool {
        self.shared.config.policy == ChatPolicy::PocPriority && self.generating()
    }

    /// Starts a chat session; `Err` gives the request back with the reason it was refused.
    pub fn chat(&self, request: ChatRequest) -> Result<(), ChatRefused> {
        let mut s = self.shared.lock();
        if self.shared.config.policy == ChatPolicy::PocPriority && s.generation.is_some() {
            return Err(ChatRefused::Generating(request));
        }
        if s.active_chats + s.new_chats.len() >= self.shared.config.chat_max_queue {
            return Err(ChatRefused::QueueFull(request));
        }
        s.new_chats.push((request, Instant::now()));
        drop(s);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Chat sessions running or waiting.
    pub fn active_chats(&self) -> usize {
        let s = self.shared.lock();
        s.active_chats + s.new_chats.len()
    }

    /// Stops the thread (jobs still waiting are cancelled) and waits for it.
    pub fn shutdown(&self) {
        {
            let mut s = self.shared.lock();
            s.shutdown = true;
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Compute {
    fn drop(&mut self) {
        self.shutdown();
    }
}
