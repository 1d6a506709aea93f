//! Counters exported at `GET /metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// Last phase switch (init/generate to first batch), microseconds.
    pub phase_switch_micros: AtomicU64,
}

impl Metrics {
    /// Records one finished forward batch.
    pub fn record_batch(&self, nonces: usize, took: Duration) {
        self.nonces.add(nonces as u64);
        self.batches.inc();
        self.batch_micros.add(took.as_micros() as u64);
    }

    /// Records the latest phase switch.
    pub fn set_phase_switch(&self, d: Duration) {
        self.phase_switch_micros
            .store(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus exposition, with the gauges passed in.
    pub fn render(&self, generating: bool, queued_nonces: usize, active_chats: usize) -> String {
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
            "Chat sessions running.",
            active_chats as f64,
        );
        gauge(
            "poc_phase_switch_seconds",
            "Latest time from init/generate to the first PoC batch starting.",
            self.phase_switch_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        out
    }
}
