//! The compute thread's loop: picks the next task as the policy says, runs it on the
//! engine, and hands the results to generation's sink, the jobs and the chats.

use std::sync::Arc;
use std::time::Instant;

use poc_model::{ChatRows, NonceVector, PocEngine, PocParams};

use super::session::{ChatEvent, Session};
use super::{BatchSink, Generation, Inbox, Job, State};
use crate::metrics::Metrics;
use crate::schedule::ChatPolicy;
use crate::schedule::{self, ChatWork, PocWork, SchedulerConfig, StepPlan, StepRows};

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
    /// One forward of the planned chat rows and PoC rows (a job chunk alone is a step
    /// with no chat rows).
    Step(Option<PocPart>, StepPlan),
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
            Some(job_alone(job, inline, n))
        }
        // The other policies alternate jobs and chat steps.
        (_, Some((job, inline))) if jobs_turn || !chat_waiting => {
            let n = job.batch_size.min(job.work().remaining);
            Some(job_alone(job, inline, n))
        }
        (_, Some((job, inline))) => {
            push_job(s, job, inline);
            Some(Task::Step(None, chat_step(None)))
        }
        (_, None) if chat_waiting => Some(Task::Step(None, chat_step(None))),
        (_, None) => None,
    }
}

/// The next `n` nonces of a job as a step of their own.
fn job_alone(job: Job, inline: bool, n: usize) -> Task {
    Task::Step(Some(PocPart::Job(job, inline, n)), StepPlan::default())
}

/// Sessions running, and of those the ones still feeding their prompt.
fn counts(sessions: &[Session]) -> (usize, usize) {
    (
        sessions.len(),
        sessions.iter().filter(|x| !x.decoding).count(),
    )
}

pub(super) fn run(shared: &Inbox, engine: &PocEngine, metrics: &Metrics) {
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
                (s.active_chats, s.prefilling) = counts(&sessions);
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
            Task::Step(poc, plan) => {
                // The other policies alternate: after a job's chunk, chat's turn.
                jobs_turn = !plan.chat.is_empty() || !matches!(poc, Some(PocPart::Job(..)));
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
    }
}

/// Hands continuous generation's vectors to its sink; a failure ends generation.
fn deliver_generation(
    shared: &Inbox,
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
    shared: &Inbox,
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
    shared: &Inbox,
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
fn update_counts(shared: &Inbox, sessions: &[Session]) {
    let mut s = shared.lock();
    (s.active_chats, s.prefilling) = counts(sessions);
}
