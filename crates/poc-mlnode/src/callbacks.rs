//! Delivery of artifacts and verdicts to the API node (`docs/protocol/compute-v2.md` §4.8).
//!
//! Continuous generation accumulates artifacts in a bounded buffer (oldest dropped beyond
//! the cap) that a task posts as one `POST {url}/generated` every interval, retrying with
//! a 1 s → 30 s backoff, at most `callback_max_retries` attempts per payload. Unlike the
//! reference, stopping flushes what is buffered instead of discarding it. A failing
//! receiver never blocks generation: the compute thread only appends to the buffer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poc_core::{Artifact, Encoding};
use serde::Serialize;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::settings::PocSettings;

/// Artifacts the API node did not take (they stay buffered for the next attempt).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The callback URL answered with an error status.
    #[error("{url} answered {status}")]
    Refused {
        /// The callback URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// No answer.
    #[error("{url}: {source}")]
    Unreachable {
        /// The callback URL.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
}

/// Who the artifacts of continuous generation go to, and the header fields they carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Callback base URL.
    #[serde(skip)]
    pub url: String,
    /// Participant public key.
    pub public_key: String,
    pub block_hash: String,
    pub block_height: i64,
    /// ML node number.
    pub node_id: u64,
    /// Vector length.
    #[serde(skip)]
    pub k_dim: usize,
}

#[derive(Serialize)]
struct GeneratedPayload<'a> {
    #[serde(flatten)]
    target: &'a Target,
    artifacts: &'a [Artifact],
    encoding: Encoding,
}

#[derive(Default)]
struct Buffer {
    target: Option<Target>,
    artifacts: VecDeque<Artifact>,
}

/// The generation callback buffer and its delivery task.
pub struct Callbacks {
    buffer: Mutex<Buffer>,
    client: reqwest::Client,
    settings: PocSettings,
    metrics: Arc<Metrics>,
    /// Serialises deliveries (the periodic task and the final flush).
    sending: tokio::sync::Mutex<()>,
}

/// `{url}/{path}` without doubled slashes.
pub fn join(url: &str, path: &str) -> String {
    format!("{}/{path}", url.trim_end_matches('/'))
}

impl Callbacks {
    /// A buffer with no target.
    pub fn new(settings: PocSettings, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            buffer: Mutex::new(Buffer::default()),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                // Below the servers' idle timeout (docs/http.md).
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
            settings,
            metrics,
            sending: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets (or clears) the target; the buffer starts empty.
    pub fn configure(&self, target: Option<Target>) {
        let mut b = self.lock();
        b.target = target;
        b.artifacts.clear();
    }

    /// Appends generated artifacts (called from the compute thread; never blocks on I/O).
    pub fn push(&self, artifacts: Vec<Artifact>) {
        let mut b = self.lock();
        if b.target.is_none() {
            return;
        }
        b.artifacts.extend(artifacts);
        let cap = self.settings.callback_max_artifacts;
        if b.artifacts.len() > cap {
            let excess = b.artifacts.len() - cap;
            b.artifacts.drain(..excess);
            self.metrics.callback_dropped.inc_by(excess as u64);
        }
    }

    /// Artifacts waiting for delivery.
    pub fn pending(&self) -> usize {
        self.lock().artifacts.len()
    }

    /// Posts everything buffered as one payload; on failure the artifacts go back to the
    /// front of the buffer. `Ok(n)` = artifacts delivered.
    pub async fn deliver(&self) -> Result<usize, DeliveryError> {
        let _one = self.sending.lock().await;
        let (target, batch): (Target, Vec<Artifact>) = {
            let mut b = self.lock();
            let Some(t) = b.target.clone() else {
                return Ok(0);
            };
            if b.artifacts.is_empty() {
                return Ok(0);
            }
            (t, b.artifacts.drain(..).collect())
        };
        let body = GeneratedPayload {
            target: &target,
            artifacts: &batch,
            encoding: Encoding::f16_le(target.k_dim),
        };
        let result = self
            .client
            .post(join(&target.url, "generated"))
            .json(&body)
            .send()
            .await;
        let outcome = match result {
            Ok(r) if r.status().as_u16() < 400 => Ok(batch.len()),
            Ok(r) => Err(DeliveryError::Refused {
                url: target.url.clone(),
                status: r.status().as_u16(),
            }),
            Err(e) => Err(DeliveryError::Unreachable {
                url: target.url.clone(),
                source: e,
            }),
        };
        match &outcome {
            Ok(n) => {
                self.metrics.callback_artifacts.inc_by(*n as u64);
            }
            Err(_) => {
                self.metrics.callback_failures.inc();
                let mut b = self.lock();
                if b.target.as_ref() == Some(&target) {
                    for a in batch.into_iter().rev() {
                        b.artifacts.push_front(a);
                    }
                    let cap = self.settings.callback_max_artifacts;
                    if b.artifacts.len() > cap {
                        let excess = b.artifacts.len() - cap;
                        b.artifacts.drain(..excess);
                        self.metrics.callback_dropped.inc_by(excess as u64);
                    }
                }
            }
        }
        outcome
    }

    /// Drops what is buffered (retries exhausted).
    fn drop_pending(&self) {
        let mut b = self.lock();
        let n = b.artifacts.len();
        b.artifacts.clear();
        self.metrics.callback_dropped.inc_by(n as u64);
    }

    /// Delivers what is buffered now, retrying a few times (stop flushes before it returns).
    pub async fn flush(&self) -> Result<usize, DeliveryError> {
        let mut backoff = Duration::from_millis(200);
        let mut last = Ok(0);
        for _ in 0..3 {
            last = self.deliver().await;
            if last.is_ok() {
                return last;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        last
    }

    /// The periodic delivery task; ends when `shutdown` changes.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        let mut wait = self.settings.callback_interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            match self.deliver().await {
                Ok(_) => {
                    failures = 0;
                    wait = self.settings.callback_interval;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!("callback delivery failed ({failures}): {e}");
                    if failures >= self.settings.callback_max_retries {
                        self.drop_pending();
                        failures = 0;
                        wait = self.settings.callback_interval;
                    } else {
                        wait = Duration::from_secs(1 << (failures - 1).min(5))
                            .min(Duration::from_secs(30));
                    }
                }
            }
        }
    }

    /// Posts one JSON payload to `{url}/{path}` (queued-job results), retrying with backoff.
    pub async fn post_once(&self, url: &str, path: &str, body: &serde_json::Value) {
        let target = join(url, path);
        let mut backoff = Duration::from_secs(1);
        for attempt in 1..=self.settings.callback_max_retries {
            match self.client.post(&target).json(body).send().await {
                Ok(r) if r.status().as_u16() < 400 => return,
                Ok(r) => tracing::warn!(
                    "callback {target} answered {} (attempt {attempt})",
                    r.status()
                ),
                Err(e) => tracing::warn!("callback {target} failed (attempt {attempt}): {e}"),
            }
            self.metrics.callback_failures.inc();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}
