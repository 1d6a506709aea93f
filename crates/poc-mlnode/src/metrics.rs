//! Counters exported at `GET /metrics` (Prometheus text format).

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::schedule::StepRows;

/// How far back the recent rates look.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the chat latency histograms' buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram over [`LATENCY_BUCKETS`] (Prometheus cumulative buckets).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; LATENCY_BUCKETS.len()],
    count: Counter,
    sum_micros: Counter,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (b, le) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            if secs <= le {
                b.inc();
            }
        }
        self.count.inc();
        self.sum_micros.add(d.as_micros() as u64);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, le) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", b.get());
        }
        let count = self.count.get();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}",
            self.sum_micros.get() as f64 / 1e6
        );
    }
}

/// Everything the node counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Nonces computed (generation and validation).
    pub nonces: Counter,
    /// Forward batches run.
    pub batches: Counter,
    /// Batches that failed.
    pub batch_failures: Counter,
    /// Microseconds spent in forward batches.
    pub batch_micros: Counter,
    /// Artifacts delivered by callbacks.
    pub callback_artifacts: Counter,
    /// Callback attempts that failed.
    pub callback_failures: Counter,
    /// Artifacts dropped (buffer full or retries exhausted).
    pub callback_dropped: Counter,
    /// Chat completion requests.
    pub chat_requests: Counter,
    /// Chat requests refused with 503 while PoC generation ran.
    pub chat_rejected: Counter,
    /// Tokens generated for chat.
    pub chat_tokens: Counter,
    /// Compute steps given to chat while a PoC batch waited (`chat-priority`).
    pub poc_batches_deferred: Counter,
    /// From a chat being accepted to its first token.
    pub chat_ttft: Histogram,
    /// Between consecutive tokens of a chat.
    pub chat_itl: Histogram,
    /// Last phase switch (init/generate to first batch), microseconds.
    pub phase_switch_micros: AtomicU64,
    /// Engine steps run.
    pub steps: Counter,
    /// Steps that held PoC rows and chat rows together (`mixed`).
    pub mixed_steps: Counter,
    /// Rows of those steps by kind: PoC, chat prefill, chat decode.
    pub step_rows: [Counter; 3],
    /// Rows of the latest step by kind.
    pub last_step_rows: [AtomicU64; 3],
    /// `(when, nonces total, chat tokens total)` after each step of the last seconds.
    recent: Mutex<VecDeque<(Instant, u64, u64)>>,
}

/// The row kinds of [`Metrics::step_rows`], as labelled in the exposition.
const ROW_KINDS: [&str; 3] = ["poc", "chat_prefill", "chat_decode"];

impl Metrics {
    /// Records one finished forward batch.
    pub fn record_batch(&self, nonces: usize, took: Duration) {
        self.nonces.add(nonces as u64);
        self.batches.inc();
        self.batch_micros.add(took.as_micros() as u64);
    }

    /// Records one engine step (after its results are counted).
    pub fn record_step(&self, rows: StepRows) {
        self.steps.inc();
        if rows.poc > 0 && rows.chat_prefill + rows.chat_decode > 0 {
            self.mixed_steps.inc();
        }
        for (i, n) in [rows.poc, rows.chat_prefill, rows.chat_decode]
            .into_iter()
            .enumerate()
        {
            self.step_rows[i].add(n as u64);
            self.last_step_rows[i].store(n as u64, Ordering::Relaxed);
        }
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.push_back((now, self.nonces.get(), self.chat_tokens.get()));
        // Keep one sample older than the window as the starting point.
        while recent.len() > 2 && now - recent[1].0 > RATE_WINDOW {
            recent.pop_front();
        }
    }

    /// Rows of the latest step by kind.
    pub fn last_step(&self) -> StepRows {
        let [poc, chat_prefill, chat_decode] = self
            .last_step_rows
            .each_ref()
            .map(|c| c.load(Ordering::Relaxed) as usize);
        StepRows {
            poc,
            chat_prefill,
            chat_decode,
        }
    }

    /// PoC nonces and chat tokens per second over about the last ten seconds (0 when
    /// nothing ran in them).
    pub fn recent_rates(&self) -> (f64, f64) {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(first), Some(last)) = (recent.front(), recent.back()) else {
            return (0.0, 0.0);
        };
        let now = Instant::now();
        if now - last.0 > RATE_WINDOW || recent.len() < 2 {
            return (0.0, 0.0);
        }
        let secs = (now - first.0).as_secs_f64().max(1e-6);
        (
            (last.1 - first.1) as f64 / secs,
            (last.2 - first.2) as f64 / secs,
        )
    }

    /// Records the latest phase switch.
    pub fn set_phase_switch(&self, d: Duration) {
        self.phase_switch_micros
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus exposition, with the gauges passed in.
    pub fn render(
        &self,
        generating: bool,
        queued_nonces: usize,
        active_chats: usize,
        chat_queue_depth: usize,
    ) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "poc_nonces_total",
            "Nonces computed (generation and validation).",
            self.nonces.get(),
        );
        counter(
            "poc_batches_total",
            "Forward batches run.",
            self.batches.get(),
        );
        counter(
            "poc_batch_failures_total",
            "Forward batches that failed.",
            self.batch_failures.get(),
        );
        counter(
            "poc_batch_seconds_total",
            "Seconds spent in forward batches.",
            self.batch_micros.get() / 1_000_000,
        );
        counter(
            "poc_callback_artifacts_total",
            "Artifacts delivered to the API node.",
            self.callback_artifacts.get(),
        );
        counter(
            "poc_callback_failures_total",
            "Failed callback attempts.",
            self.callback_failures.get(),
        );
        counter(
            "poc_callback_dropped_total",
            "Artifacts dropped (buffer full or retries exhausted).",
            self.callback_dropped.get(),
        );
        counter(
            "chat_requests_total",
            "Chat completion requests.",
            self.chat_requests.get(),
        );
        counter(
            "chat_rejected_total",
            "Chat requests refused while PoC generation ran.",
            self.chat_rejected.get(),
        );
        counter(
            "chat_tokens_total",
            "Tokens generated for chat.",
            self.chat_tokens.get(),
        );
        counter(
            "poc_batches_deferred_total",
            "Compute steps given to chat while a PoC batch waited (chat-priority).",
            self.poc_batches_deferred.get(),
        );
        counter(
            "poc_steps_total",
            "Engine steps (forward passes of PoC rows, chat rows or both).",
            self.steps.get(),
        );
        counter(
            "poc_mixed_steps_total",
            "Engine steps that held PoC rows and chat rows in one forward.",
            self.mixed_steps.get(),
        );
        let _ = writeln!(
            out,
            "# HELP poc_step_rows_total Rows of engine steps by kind (PoC rows are nonces x seq_len).\n# TYPE poc_step_rows_total counter"
        );
        for (kind, c) in ROW_KINDS.iter().zip(&self.step_rows) {
            let _ = writeln!(out, "poc_step_rows_total{{kind=\"{kind}\"}} {}", c.get());
        }
        let _ = writeln!(
            out,
            "# HELP poc_last_step_rows Rows of the latest engine step by kind.\n# TYPE poc_last_step_rows gauge"
        );
        for (kind, c) in ROW_KINDS.iter().zip(&self.last_step_rows) {
            let _ = writeln!(
                out,
                "poc_last_step_rows{{kind=\"{kind}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let (recent_nonces, recent_tokens) = self.recent_rates();
        let secs = self.batch_micros.get() as f64 / 1e6;
        let rate = if secs > 0.0 {
            self.nonces.get() as f64 / secs
        } else {
            0.0
        };
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "poc_nonces_per_second",
            "Nonces per second of forward time.",
            rate,
        );
        gauge(
            "poc_generating",
            "1 while continuous PoC generation runs (the phase).",
            f64::from(u8::from(generating)),
        );
        gauge(
            "poc_queue_nonces",
            "Nonces waiting in the /generate queue.",
            queued_nonces as f64,
        );
        gauge(
            "chat_active_sessions",
            "Chat sessions running or waiting.",
            active_chats as f64,
        );
        gauge(
            "chat_queue_depth",
            "Chats accepted that wait for their first token.",
            chat_queue_depth as f64,
        );
        gauge(
            "poc_recent_nonces_per_second",
            "PoC nonces per second over the last 10 seconds.",
            recent_nonces,
        );
        gauge(
            "chat_tokens_per_second",
            "Chat tokens per second over the last 10 seconds.",
            recent_tokens,
        );
        gauge(
            "poc_phase_switch_seconds",
            "Latest time from init/generate to the first PoC batch starting.",
            self.phase_switch_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        self.chat_ttft.render(
            &mut out,
            "chat_time_to_first_token_seconds",
            "From a chat request being accepted to its first token.",
        );
        self.chat_itl.render(
            &mut out,
            "chat_inter_token_seconds",
            "Between consecutive tokens of a chat.",
        );
        out
    }
}
