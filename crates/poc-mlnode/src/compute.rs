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

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use poc_core::NonceIterator;
use poc_model::generate::{FinishReason, Sampler, SamplingParams};
use poc_model::{ChatRows, KvCache, NonceVector, PocEngine, PocParams};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::api::StatusConfig;
use crate::metrics::Metrics;
use crate::schedule::{self, ChatWork, PocWork, SchedulerConfig, StepPlan, StepRows};
use crate::settings::ChatPolicy;

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

struct Session {
    request: ChatRequest,
    cache: KvCache,
    sampler: Sampler,
    generated: usize,
    /// Tokens not yet fed to the model: the rest of the prompt, then the last sample.
    input: Vec<u32>,
    /// Whether the prompt has been fed completely.
    decoding: bool,
    /// When the request was accepted, then when its latest token was sent.
    last_event: Instant,
}

impl Session {
    /// A session for a chat request accepted at `accepted`: its prompt is the first input.
    fn open((request, accepted): (ChatRequest, Instant)) -> Self {
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

    fn work(&self) -> ChatWork {
        ChatWork {
            pending: self.input.len(),
            decoding: self.decoding,
        }
    }

    /// Takes the logits of the session's last fed position: samples, reports the token,
    /// and prepares the next input. `Some(event)` when the session is over: the event
    /// that ends it, sent by the caller once the session no longer counts as running.
    fn advance(&mut self, logits: &[f32], max_len: usize, metrics: &Metrics) -> Option<ChatEvent> {
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
        latency.observe(now - self.last_event);
        self.last_event = now;
        self.generated += 1;
        if self.generated >= p.max_tokens || self.cache.len() + 1 >= max_len {
            return Some(ChatEvent::Finish(finish_name(FinishReason::Length)));
        }
        self.input = vec![token];
        None
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
    last_step: StepRows,
    shutdown: bool,
}

struct Shared {
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

impl Shared {
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
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The PoC rows of a step beside chat.
enum PocPart {
    /// Nonces of continuous generation and where they go.
    Generation(PocParams, Vec<i64>, BatchSink),
    /// The next `n` nonces of a job (`inline` or queued).
    Job(Job, bool, usize),
}

enum Task {
    /// Continuous generation alone: parameters, nonces (one or several batches), where the
    /// vectors go, nonces per forward.
    Batch(PocParams, Vec<i64>, BatchSink, usize),
    /// The next `n` nonces of a job alone: the job, `inline`, `n`.
    Job(Job, bool, usize),
    /// Chat rows, with PoC rows beside them under `mixed`.
    Step(Option<PocPart>, StepPlan),
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
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            config,
        });
        let s = Arc::clone(&shared);
        let m = Arc::clone(&metrics);
        let thread = std::thread::Builder::new()
            .name("poc-compute".into())
            .spawn(move || run(&s, &engine, &m))
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
            last_step_rows: s.last_step,
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

/// Ends every chat, job and generation at shutdown.
fn close_all(s: &mut State, sessions: &mut Vec<Session>) {
    for job in s.inline_jobs.drain(..).chain(s.queued_jobs.drain(..)) {
        let _ = job.reply.send(Err("the node is shutting down".into()));
    }
    for (c, _) in s.new_chats.drain(..) {
        let _ = c.events.send(ChatEvent::Finish("abort"));
    }
    for sess in sessions.drain(..) {
        let _ = sess.request.events.send(ChatEvent::Finish("abort"));
    }
    s.generation = None;
    for w in s.stop_waiters.drain(..) {
        let _ = w.send(());
    }
}

/// The next nonces of continuous generation (`n`), marking the first batch's start.
fn take_nonces(g: &mut Generation, n: usize, metrics: &Metrics) -> Vec<i64> {
    if g.first_batch_at.is_none() {
        let now = Instant::now();
        g.first_batch_at = Some(now);
        metrics.set_phase_switch(now - g.spec.requested_at);
    }
    g.spec.nonces.take_batch(n)
}

/// The next job, `inline` ones first.
fn pop_job(s: &mut State) -> Option<(Job, bool)> {
    s.inline_jobs
        .pop_front()
        .map(|j| (j, true))
        .or_else(|| s.queued_jobs.pop_front().map(|j| (j, false)))
}

fn push_job(s: &mut State, job: Job, inline: bool) {
    if inline {
        s.inline_jobs.push_front(job);
    } else {
        s.queued_jobs.push_front(job);
    }
}

impl Job {
    fn work(&self) -> PocWork {
        PocWork {
            seq_len: self.params.seq_len,
            batch_size: self.batch_size,
            remaining: self.nonces.len() - self.done.len(),
        }
    }

    /// Takes the vectors of its next nonces; `None` when it is complete (and answered).
    fn deliver(mut self, vectors: Vec<NonceVector>) -> Option<Self> {
        self.done.extend(vectors);
        if self.done.len() >= self.nonces.len() {
            let done = std::mem::take(&mut self.done);
            let _ = self.reply.send(Ok(done));
            None
        } else {
            Some(self)
        }
    }
}

/// Decides the next task from the state (the policy's rules; `None`: nothing to do).
fn choose(
    s: &mut State,
    cfg: &SchedulerConfig,
    chats: &[ChatWork],
    jobs_turn: bool,
    cursor: usize,
    stages: usize,
    metrics: &Metrics,
) -> Option<Task> {
    let chat_waiting = chats.iter().any(|c| c.pending > 0);
    let chat_step = |poc: Option<PocWork>| {
        schedule::plan(cfg.max_batch_tokens, cfg.poc_share, poc, chats, cursor)
    };
    if let Some(g) = s.generation.as_mut() {
        let work = PocWork {
            seq_len: g.spec.params.seq_len,
            batch_size: g.spec.batch_size,
            remaining: usize::MAX,
        };
        match cfg.policy {
            ChatPolicy::ChatPriority if chat_waiting => {
                // Chat has priority: the PoC batch waits for the chats.
                metrics.poc_batches_deferred.inc();
                return Some(Task::Step(None, chat_step(None)));
            }
            ChatPolicy::Mixed if chat_waiting => {
                let plan = chat_step(Some(work));
                let nonces = take_nonces(g, plan.poc_nonces, metrics);
                let part =
                    PocPart::Generation(g.spec.params.clone(), nonces, Arc::clone(&g.spec.sink));
                return Some(Task::Step(Some(part), plan));
            }
            _ => {}
        }
        // PoC alone: with several pipeline stages, enough batches at once to keep every
        // device busy (fill and drain cost S - 1 of 4 S batch slots).
        let per_forward = match cfg.policy {
            ChatPolicy::Mixed => schedule::poc_only(cfg.max_batch_tokens, work),
            _ => g.spec.batch_size,
        };
        let per_task = if stages > 1 { 4 * stages } else { 1 };
        let nonces = take_nonces(g, per_forward * per_task, metrics);
        return Some(Task::Batch(
            g.spec.params.clone(),
            nonces,
            Arc::clone(&g.spec.sink),
            per_forward,
        ));
    }
    let job = pop_job(s);
    match (cfg.policy, job) {
        (ChatPolicy::Mixed, Some((job, inline))) if chat_waiting => {
            let plan = chat_step(Some(job.work()));
            let n = plan.poc_nonces;
            Some(Task::Step(Some(PocPart::Job(job, inline, n)), plan))
        }
        (ChatPolicy::Mixed, Some((job, inline))) => {
            let n = schedule::poc_only(cfg.max_batch_tokens, job.work());
            Some(Task::Job(job, inline, n))
        }
        // The other policies alternate jobs and chat steps.
        (_, Some((job, inline))) if jobs_turn || !chat_waiting => {
            let n = job.batch_size.min(job.work().remaining);
            Some(Task::Job(job, inline, n))
        }
        (_, Some((job, inline))) => {
            push_job(s, job, inline);
            Some(Task::Step(None, chat_step(None)))
        }
        (_, None) if chat_waiting => Some(Task::Step(None, chat_step(None))),
        (_, None) => None,
    }
}

fn run(shared: &Shared, engine: &PocEngine, metrics: &Metrics) {
    let cfg = shared.config;
    let stages = engine.model().stage_count();
    let max_len = engine.model().max_len();
    let mut sessions: Vec<Session> = Vec::new();
    let mut jobs_turn = true;
    let mut cursor = 0usize;
    loop {
        let (task, works) = {
            let mut s = shared.lock();
            loop {
                if s.shutdown {
                    close_all(&mut s, &mut sessions);
                    return;
                }
                if s.stop_requested {
                    s.stop_requested = false;
                    s.generation = None;
                    for w in s.stop_waiters.drain(..) {
                        let _ = w.send(());
                    }
                    continue;
                }
                // Clients that went away free their place.
                sessions.retain(|x| !x.request.events.is_closed());
                if cfg.policy == ChatPolicy::PocPriority && s.generation.is_some() {
                    // PoC has priority: running chats are aborted.
                    for (c, _) in s.new_chats.drain(..) {
                        let _ = c.events.send(ChatEvent::Finish("abort"));
                    }
                    for sess in sessions.drain(..) {
                        let _ = sess.request.events.send(ChatEvent::Finish("abort"));
                    }
                } else {
                    sessions.extend(s.new_chats.drain(..).map(Session::open));
                }
                s.active_chats = sessions.len();
                s.prefilling = sessions.iter().filter(|x| !x.decoding).count();
                let works: Vec<ChatWork> = sessions.iter().map(Session::work).collect();
                if let Some(task) = choose(&mut s, &cfg, &works, jobs_turn, cursor, stages, metrics)
                {
                    break (task, works);
                }
                s = shared.wake.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        };
        let started = Instant::now();
        let rows = match task {
            Task::Batch(params, nonces, sink, batch_size) => {
                jobs_turn = true;
                let result = engine.compute(&params, &nonces, batch_size, |_| {});
                let rows = StepRows {
                    poc: nonces.len() * params.seq_len,
                    ..StepRows::default()
                };
                deliver_generation(shared, metrics, result, &sink, started);
                rows
            }
            Task::Job(job, inline, n) => {
                jobs_turn = false;
                let start = job.done.len();
                let result = engine.compute_batch(&job.params, &job.nonces[start..start + n]);
                let rows = StepRows {
                    poc: n * job.params.seq_len,
                    ..StepRows::default()
                };
                deliver_job(shared, metrics, result, job, inline, started);
                rows
            }
            Task::Step(poc, plan) => {
                jobs_turn = true;
                cursor = cursor.wrapping_add(1);
                let (decode, prefill) = plan.chat_rows(&works);
                let poc_rows = match &poc {
                    Some(PocPart::Generation(p, nonces, _)) => nonces.len() * p.seq_len,
                    Some(PocPart::Job(job, _, n)) => n * job.params.seq_len,
                    None => 0,
                };
                mixed_step(shared, engine, metrics, &mut sessions, poc, &plan, max_len);
                StepRows {
                    poc: poc_rows,
                    chat_prefill: prefill,
                    chat_decode: decode,
                }
            }
        };
        metrics.record_step(rows);
        shared.lock().last_step = rows;
    }
}

/// Hands continuous generation's vectors to its sink; a failure ends generation.
fn deliver_generation(
    shared: &Shared,
    metrics: &Metrics,
    result: poc_model::Result<Vec<NonceVector>>,
    sink: &BatchSink,
    started: Instant,
) {
    let mut s = shared.lock();
    match result {
        Ok(vectors) => {
            metrics.record_batch(vectors.len(), started.elapsed());
            if let Some(g) = s.generation.as_mut() {
                g.processed += vectors.len() as u64;
            }
            drop(s);
            sink(vectors);
        }
        Err(e) => {
            tracing::error!("PoC batch failed: {e}; generation stops");
            metrics.batch_failures.inc();
            s.generation = None;
        }
    }
}

/// Adds a chunk's vectors to its job: answers it when complete, else puts it back first.
fn deliver_job(
    shared: &Shared,
    metrics: &Metrics,
    result: poc_model::Result<Vec<NonceVector>>,
    job: Job,
    inline: bool,
    started: Instant,
) {
    match result {
        Ok(v) => {
            metrics.record_batch(v.len(), started.elapsed());
            if let Some(job) = job.deliver(v) {
                push_job(&mut shared.lock(), job, inline);
            }
        }
        Err(e) => {
            metrics.batch_failures.inc();
            let _ = job.reply.send(Err(e.to_string()));
        }
    }
}

/// One forward over the planned chat rows and PoC rows; then every chat whose input was
/// fed completely samples its next token, and the PoC vectors go where they belong.
fn mixed_step(
    shared: &Shared,
    engine: &PocEngine,
    metrics: &Metrics,
    sessions: &mut Vec<Session>,
    poc: Option<PocPart>,
    plan: &StepPlan,
    max_len: usize,
) {
    let started = Instant::now();
    let mut rows = Vec::with_capacity(plan.chat.len());
    let mut planned = plan.chat.iter().peekable();
    for (i, sess) in sessions.iter_mut().enumerate() {
        if let Some(&&(j, n)) = planned.peek()
            && j == i
        {
            planned.next();
            rows.push(ChatRows {
                tokens: &sess.input[..n],
                cache: &mut sess.cache,
            });
        }
    }
    let input = match &poc {
        Some(PocPart::Generation(p, nonces, _)) => Some((p, &nonces[..])),
        Some(PocPart::Job(job, _, n)) => {
            let start = job.done.len();
            Some((&job.params, &job.nonces[start..start + n]))
        }
        None => None,
    };
    let result = engine.compute_mixed(input, &mut rows);
    drop(rows);
    let (vectors, logits) = match result {
        Ok(r) => (Ok(r.0), Ok(r.1)),
        Err(e) => {
            let msg = e.to_string();
            (Err(e), Err(msg))
        }
    };
    match poc {
        Some(PocPart::Generation(_, _, sink)) => {
            deliver_generation(shared, metrics, vectors, &sink, started)
        }
        Some(PocPart::Job(job, inline, _)) => {
            deliver_job(shared, metrics, vectors, job, inline, started)
        }
        None => {}
    }
    let mut ending: Vec<Option<ChatEvent>> = vec![None; sessions.len()];
    for (k, &(i, n)) in plan.chat.iter().enumerate() {
        let sess = &mut sessions[i];
        ending[i] = match &logits {
            Ok(logits) => {
                sess.input.drain(..n);
                if sess.input.is_empty() {
                    sess.advance(&logits[k], max_len, metrics)
                } else {
                    None
                }
            }
            Err(e) => Some(ChatEvent::Error(e.clone())),
        };
    }
    let mut last_events = Vec::new();
    let mut i = 0;
    sessions.retain(|sess| {
        i += 1;
        match ending[i - 1].take() {
            Some(ev) => {
                last_events.push((sess.request.events.clone(), ev));
                false
            }
            None => true,
        }
    });
    // The places are free before the clients hear that their chats ended.
    update_counts(shared, sessions);
    for (events, ev) in last_events {
        let _ = events.send(ev);
    }
}

/// Publishes how many sessions run and how many are still feeding their prompt.
fn update_counts(shared: &Shared, sessions: &[Session]) {
    let mut s = shared.lock();
    s.active_chats = sessions.len();
    s.prefilling = sessions.iter().filter(|x| !x.decoding).count();
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}
