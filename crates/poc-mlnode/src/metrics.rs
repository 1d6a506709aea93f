//! What the ML node counts, exported at `GET /metrics` (OpenMetrics text, one
//! `prometheus-client` registry: `poc_http::metrics`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use poc_http::metrics::prometheus_client::metrics::counter::Counter;
use poc_http::metrics::prometheus_client::metrics::family::Family;
use poc_http::metrics::prometheus_client::metrics::gauge::Gauge;
use poc_http::metrics::prometheus_client::metrics::histogram::Histogram;
use poc_http::metrics::prometheus_client::registry::Registry;

use crate::schedule::StepRows;

/// How far back the recent rates look.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Upper bounds (seconds) of the chat latency histograms' buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A floating-point gauge.
type FloatGauge = Gauge<f64, AtomicU64>;
/// A floating-point counter.
type FloatCounter = Counter<f64, AtomicU64>;
/// Metrics labelled by step row kind.
type ByKind<M> = Family<[(&'static str, &'static str); 1], M>;

/// The row kinds of the step row families, as labelled in the exposition.
const ROW_KINDS: [&str; 3] = ["poc", "chat_prefill", "chat_decode"];

/// Everything the node counts, and the gauges set at each scrape.
#[derive(Debug)]
pub struct Metrics {
    /// Nonces computed (generation and validation).
    pub nonces: Counter,
    /// Forward batches run.
    pub batches: Counter,
    /// Batches that failed.
    pub batch_failures: Counter,
    /// Seconds spent in forward batches.
    pub batch_seconds: FloatCounter,
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
    /// From a chat being accepted to its first token, seconds.
    pub chat_ttft: Histogram,
    /// Between consecutive tokens of a chat, seconds.
    pub chat_itl: Histogram,
    /// Last phase switch (init/generate to first batch), seconds.
    pub phase_switch: FloatGauge,
    /// Engine steps run.
    pub steps: Counter,
    /// Steps that held PoC rows and chat rows together (`mixed`).
    pub mixed_steps: Counter,
    step_rows: ByKind<Counter>,
    last_step_rows: ByKind<Gauge>,
    gauges: ScrapeGauges,
    registry: Registry,
    /// `(when, nonces total, chat tokens total)` after each step of the last seconds.
    recent: Mutex<VecDeque<(Instant, u64, u64)>>,
}

/// Gauges set from the node's state when `/metrics` is read.
#[derive(Debug, Default, Clone)]
struct ScrapeGauges {
    nonces_per_second: FloatGauge,
    generating: Gauge,
    queue_nonces: Gauge,
    chat_active: Gauge,
    chat_queue_depth: Gauge,
    recent_nonces_per_second: FloatGauge,
    chat_tokens_per_second: FloatGauge,
}

fn histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            nonces: Counter::default(),
            batches: Counter::default(),
            batch_failures: Counter::default(),
            batch_seconds: FloatCounter::default(),
            callback_artifacts: Counter::default(),
            callback_failures: Counter::default(),
            callback_dropped: Counter::default(),
            chat_requests: Counter::default(),
            chat_rejected: Counter::default(),
            chat_tokens: Counter::default(),
            poc_batches_deferred: Counter::default(),
            chat_ttft: histogram(),
            chat_itl: histogram(),
            phase_switch: FloatGauge::default(),
            steps: Counter::default(),
            mixed_steps: Counter::default(),
            step_rows: ByKind::default(),
            last_step_rows: ByKind::default(),
            gauges: ScrapeGauges::default(),
            registry: Registry::default(),
            recent: Mutex::new(VecDeque::new()),
        };
        m.register();
        m
    }
}

impl Metrics {
    /// Puts every metric in the registry (once, at construction).
    fn register(&mut self) {
        let r = &mut self.registry;
        let counters: [(&str, &str, &Counter); 12] = [
            (
                "poc_nonces",
                "Nonces computed (generation and validation)",
                &self.nonces,
            ),
            ("poc_batches", "Forward batches run", &self.batches),
            (
                "poc_batch_failures",
                "Forward batches that failed",
                &self.batch_failures,
            ),
            (
                "poc_callback_artifacts",
                "Artifacts delivered to the API node",
                &self.callback_artifacts,
            ),
            (
                "poc_callback_failures",
                "Failed callback attempts",
                &self.callback_failures,
            ),
            (
                "poc_callback_dropped",
                "Artifacts dropped (buffer full or retries exhausted)",
                &self.callback_dropped,
            ),
            (
                "chat_requests",
                "Chat completion requests",
                &self.chat_requests,
            ),
            (
                "chat_rejected",
                "Chat requests refused while PoC generation ran",
                &self.chat_rejected,
            ),
            (
                "chat_tokens",
                "Tokens generated for chat",
                &self.chat_tokens,
            ),
            (
                "poc_batches_deferred",
                "Compute steps given to chat while a PoC batch waited (chat-priority)",
                &self.poc_batches_deferred,
            ),
            (
                "poc_steps",
                "Engine steps (forward passes of PoC rows, chat rows or both)",
                &self.steps,
            ),
            (
                "poc_mixed_steps",
                "Engine steps that held PoC rows and chat rows in one forward",
                &self.mixed_steps,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        r.register(
            "poc_batch_seconds",
            "Seconds spent in forward batches",
            self.batch_seconds.clone(),
        );
        r.register(
            "poc_step_rows",
            "Rows of engine steps by kind (PoC rows are nonces x seq_len)",
            self.step_rows.clone(),
        );
        r.register(
            "poc_last_step_rows",
            "Rows of the latest engine step by kind",
            self.last_step_rows.clone(),
        );
        let g = &self.gauges;
        let floats: [(&str, &str, &FloatGauge); 4] = [
            (
                "poc_nonces_per_second",
                "Nonces per second of forward time",
                &g.nonces_per_second,
            ),
            (
                "poc_recent_nonces_per_second",
                "PoC nonces per second over the last 10 seconds",
                &g.recent_nonces_per_second,
            ),
            (
                "chat_tokens_per_second",
                "Chat tokens per second over the last 10 seconds",
                &g.chat_tokens_per_second,
            ),
            (
                "poc_phase_switch_seconds",
                "Latest time from init/generate to the first PoC batch starting",
                &self.phase_switch,
            ),
        ];
        for (name, help, f) in floats {
            r.register(name, help, f.clone());
        }
        let ints: [(&str, &str, &Gauge); 4] = [
            (
                "poc_generating",
                "1 while continuous PoC generation runs (the phase)",
                &g.generating,
            ),
            (
                "poc_queue_nonces",
                "Nonces waiting in the /generate queue",
                &g.queue_nonces,
            ),
            (
                "chat_active_sessions",
                "Chat sessions running or waiting",
                &g.chat_active,
            ),
            (
                "chat_queue_depth",
                "Chats accepted that wait for their first token",
                &g.chat_queue_depth,
            ),
        ];
        for (name, help, i) in ints {
            r.register(name, help, i.clone());
        }
        r.register(
            "chat_time_to_first_token_seconds",
            "From a chat request being accepted to its first token",
            self.chat_ttft.clone(),
        );
        r.register(
            "chat_inter_token_seconds",
            "Between consecutive tokens of a chat",
            self.chat_itl.clone(),
        );
    }

    /// Records one finished forward batch.
    pub fn record_batch(&self, nonces: usize, took: Duration) {
        self.nonces.inc_by(nonces as u64);
        self.batches.inc();
        self.batch_seconds.inc_by(took.as_secs_f64());
    }

    /// Records one engine step (after its results are counted).
    pub fn record_step(&self, rows: StepRows) {
        self.steps.inc();
        if rows.poc > 0 && rows.chat_prefill + rows.chat_decode > 0 {
            self.mixed_steps.inc();
        }
        for (kind, n) in ROW_KINDS
            .into_iter()
            .zip([rows.poc, rows.chat_prefill, rows.chat_decode])
        {
            self.step_rows
                .get_or_create(&[("kind", kind)])
                .inc_by(n as u64);
            self.last_step_rows
                .get_or_create(&[("kind", kind)])
                .set(n as i64);
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
        let [poc, chat_prefill, chat_decode] = ROW_KINDS.map(|kind| {
            self.last_step_rows
                .get_or_create(&[("kind", kind)])
                .get()
                .max(0) as usize
        });
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
        self.phase_switch.set(d.as_secs_f64());
    }

    /// The OpenMetrics exposition, with the gauges read from the node now.
    pub fn render(
        &self,
        generating: bool,
        queued_nonces: usize,
        active_chats: usize,
        chat_queue_depth: usize,
    ) -> String {
        let g = &self.gauges;
        let secs = self.batch_seconds.get();
        g.nonces_per_second.set(if secs > 0.0 {
            self.nonces.get() as f64 / secs
        } else {
            0.0
        });
        g.generating.set(i64::from(generating));
        g.queue_nonces.set(queued_nonces as i64);
        g.chat_active.set(active_chats as i64);
        g.chat_queue_depth.set(chat_queue_depth as i64);
        let (recent_nonces, recent_tokens) = self.recent_rates();
        g.recent_nonces_per_second.set(recent_nonces);
        g.chat_tokens_per_second.set(recent_tokens);
        poc_http::metrics::encode(&self.registry, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of an exposition, `name{labels} value`.
    fn sample<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
    }

    #[test]
    fn the_exposition_has_every_family_once_with_its_values() {
        let m = Metrics::default();
        m.record_batch(8, Duration::from_millis(500));
        m.record_step(StepRows {
            poc: 64,
            chat_prefill: 0,
            chat_decode: 2,
        });
        m.chat_itl.observe(0.003);
        m.chat_itl.observe(2.0);
        m.set_phase_switch(Duration::from_millis(250));
        let text = m.render(true, 5, 2, 1);
        assert_eq!(sample(&text, "poc_nonces_total"), Some("8"), "{text}");
        assert_eq!(
            sample(&text, "poc_batch_seconds_total"),
            Some("0.5"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "poc_nonces_per_second"),
            Some("16.0"),
            "{text}"
        );
        assert_eq!(sample(&text, "poc_generating"), Some("1"), "{text}");
        assert_eq!(sample(&text, "poc_queue_nonces"), Some("5"), "{text}");
        assert_eq!(
            sample(&text, "poc_step_rows_total{kind=\"poc\"}"),
            Some("64"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "poc_last_step_rows{kind=\"chat_decode\"}"),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "poc_phase_switch_seconds"),
            Some("0.25"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "chat_inter_token_seconds_count"),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "chat_inter_token_seconds_bucket{le=\"0.005\"}"),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "chat_inter_token_seconds_bucket{le=\"+Inf\"}"),
            Some("2"),
            "{text}"
        );
        assert_eq!(m.last_step().poc, 64);
        for family in ["poc_nonces", "poc_step_rows", "chat_inter_token_seconds"] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
