//! The compute thread: the only place the model runs. It owns the chat sessions' caches and
//! schedules, one unit at a time: a batch of continuous PoC generation (exclusive while it
//! is active), a chunk of a validation/generate job, or one decode step of every active chat
//! session, alternating jobs and chat so neither waits long for the other.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use poc_core::NonceIterator;
use poc_model::generate::{FinishReason, Sampler, SamplingParams};
use poc_model::{KvCache, NonceVector, PocEngine, PocParams};
use tokio::sync::{mpsc, oneshot};

use crate::api::StatusConfig;
use crate::metrics::Metrics;
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
    input: Vec<u32>,
}

impl Session {
    /// A session for a new chat request: its prompt is the first input.
    fn open(request: ChatRequest) -> Self {
        Self {
            sampler: Sampler::new(&request.sampling),
            input: request.prompt.clone(),
            request,
            cache: KvCache::default(),
            generated: 0,
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
    new_chats: Vec<ChatRequest>,
    active_chats: usize,
    busy_generating: bool,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    policy: ChatPolicy,
    chat_max_queue: usize,
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

/// Handle to the compute thread.
pub struct Compute {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

enum Task {
    /// Continuous generation: parameters, nonces (one or several batches), where the
    /// vectors go, nonces per forward.
    Batch(PocParams, Vec<i64>, BatchSink, usize),
    Job(Job, bool),
    Chat,
}

impl Compute {
    /// Starts the compute thread over `engine`, sharing it between chat and PoC as
    /// `policy` says, with at most `chat_max_queue` chat sessions running or waiting.
    pub fn start(
        engine: Arc<PocEngine>,
        metrics: Arc<Metrics>,
        policy: ChatPolicy,
        chat_max_queue: usize,
    ) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            policy,
            chat_max_queue: chat_max_queue.max(1),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("poc-compute".into())
            .spawn(move || run(&s, &engine, &metrics))
            .expect("spawn the compute thread");
        Self {
            shared,
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

    /// Stops continuous generation after the batch in progress (its results are delivered
    /// to the sink first) and cancels every job not yet started. Resolves when done.
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
        self.shared.policy == ChatPolicy::PocPriority && self.generating()
    }

    /// Starts a chat session; `Err` gives the request back with the reason it was refused.
    pub fn chat(&self, request: ChatRequest) -> Result<(), ChatRefused> {
        let mut s = self.shared.lock();
        if self.shared.policy == ChatPolicy::PocPriority && s.generation.is_some() {
            return Err(ChatRefused::Generating(request));
        }
        if s.active_chats + s.new_chats.len() >= self.shared.chat_max_queue {
            return Err(ChatRefused::QueueFull(request));
        }
        s.new_chats.push(request);
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

fn run(shared: &Shared, engine: &PocEngine, metrics: &Metrics) {
    let mut sessions: Vec<Session> = Vec::new();
    let mut jobs_turn = true;
    loop {
        let task = {
            let mut s = shared.lock();
            loop {
                if s.shutdown {
                    let st = &mut *s;
                    for job in st.inline_jobs.drain(..).chain(st.queued_jobs.drain(..)) {
                        let _ = job.reply.send(Err("the node is shutting down".into()));
                    }
                    for c in s.new_chats.drain(..) {
                        let _ = c.events.send(ChatEvent::Finish("abort"));
                    }
                    for sess in sessions.drain(..) {
                        let _ = sess.request.events.send(ChatEvent::Finish("abort"));
                    }
                    s.generation = None;
                    for w in s.stop_waiters.drain(..) {
                        let _ = w.send(());
                    }
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
                if s.generation.is_some() {
                    match shared.policy {
                        ChatPolicy::ChatPriority
                            if !sessions.is_empty() || !s.new_chats.is_empty() =>
                        {
                            // Chat has priority: the PoC batch waits for the chats.
                            sessions.extend(s.new_chats.drain(..).map(Session::open));
                            s.active_chats = sessions.len();
                            metrics.poc_batches_deferred.inc();
                            break Task::Chat;
                        }
                        ChatPolicy::ChatPriority => {}
                        ChatPolicy::PocPriority => {
                            // PoC has priority: running chats are aborted.
                            for c in s.new_chats.drain(..) {
                                let _ = c.events.send(ChatEvent::Finish("abort"));
                            }
                            for sess in sessions.drain(..) {
                                let _ = sess.request.events.send(ChatEvent::Finish("abort"));
                            }
                            s.active_chats = 0;
                        }
                    }
                    let g = s.generation.as_mut().expect("checked");
                    // With several pipeline stages, enough batches at once to keep every
                    // device busy (fill and drain cost S - 1 of 4 S batch slots).
                    let stages = engine.model().stage_count();
                    let per_task = if stages > 1 { 4 * stages } else { 1 };
                    let nonces = g.spec.nonces.take_batch(g.spec.batch_size * per_task);
                    if g.first_batch_at.is_none() {
                        let now = Instant::now();
                        g.first_batch_at = Some(now);
                        metrics.set_phase_switch(now - g.spec.requested_at);
                    }
                    let task = Task::Batch(
                        g.spec.params.clone(),
                        nonces,
                        Arc::clone(&g.spec.sink),
                        g.spec.batch_size,
                    );
                    s.busy_generating = true;
                    break task;
                }
                sessions.extend(s.new_chats.drain(..).map(Session::open));
                s.active_chats = sessions.len();
                let job = s
                    .inline_jobs
                    .pop_front()
                    .map(|j| (j, true))
                    .or_else(|| s.queued_jobs.pop_front().map(|j| (j, false)));
                match job {
                    Some((job, inline)) if jobs_turn || sessions.is_empty() => {
                        break Task::Job(job, inline);
                    }
                    Some((job, inline)) => {
                        if inline {
                            s.inline_jobs.push_front(job);
                        } else {
                            s.queued_jobs.push_front(job);
                        }
                        break Task::Chat;
                    }
                    None if !sessions.is_empty() => break Task::Chat,
                    None => {}
                }
                s = shared.wake.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        };
        jobs_turn = !jobs_turn;
        match task {
            Task::Batch(params, nonces, sink, batch_size) => {
                let started = Instant::now();
                let result = engine.compute(&params, &nonces, batch_size, |_| {});
                let mut s = shared.lock();
                s.busy_generating = false;
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
            Task::Job(mut job, inline) => {
                let start = job.done.len();
                let end = (start + job.batch_size).min(job.nonces.len());
                let started = Instant::now();
                match engine.compute_batch(&job.params, &job.nonces[start..end]) {
                    Ok(v) => {
                        metrics.record_batch(v.len(), started.elapsed());
                        job.done.extend(v);
                        if job.done.len() >= job.nonces.len() {
                            let done = std::mem::take(&mut job.done);
                            let _ = job.reply.send(Ok(done));
                        } else {
                            let mut s = shared.lock();
                            if inline {
                                s.inline_jobs.push_front(job);
                            } else {
                                s.queued_jobs.push_front(job);
                            }
                        }
                    }
                    Err(e) => {
                        let _ = job.reply.send(Err(e.to_string()));
                    }
                }
            }
            Task::Chat => {
                sessions.retain_mut(|sess| step(engine, sess, metrics));
                shared.lock().active_chats = sessions.len();
            }
        }
    }
}

/// One decode step of a session; `false` when it is over.
fn step(engine: &PocEngine, sess: &mut Session, metrics: &Metrics) -> bool {
    let model = engine.model();
    if sess.request.events.is_closed() {
        return false;
    }
    let logits = match model
        .forward_tokens(&sess.input, &mut sess.cache)
        .and_then(|l| Ok(l.to_vec1::<f32>()?))
    {
        Ok(l) => l,
        Err(e) => {
            let _ = sess.request.events.send(ChatEvent::Error(e.to_string()));
            return false;
        }
    };
    let token = sess.sampler.sample(&logits);
    let p = &sess.request.sampling;
    if p.stop_tokens.contains(&token) {
        let _ = sess
            .request
            .events
            .send(ChatEvent::Finish(finish_name(FinishReason::Stop)));
        return false;
    }
    metrics.chat_tokens.inc();
    if sess.request.events.send(ChatEvent::Token(token)).is_err() {
        return false;
    }
    sess.generated += 1;
    if sess.generated >= p.max_tokens || sess.cache.len() + 1 >= model.max_len() {
        let _ = sess
            .request
            .events
            .send(ChatEvent::Finish(finish_name(FinishReason::Length)));
        return false;
    }
    sess.input = vec![token];
    true
}

fn finish_name(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}
