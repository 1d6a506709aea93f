//! The API node's `/metrics`: counters of what it did (one [`Count`] each) and gauges
//! read at each scrape, in one `prometheus-client` registry (`poc_http::metrics`).

use std::sync::atomic::AtomicU64;

use poc_http::metrics::counter_name;
use poc_http::metrics::prometheus_client::metrics::counter::Counter;
use poc_http::metrics::prometheus_client::metrics::gauge::Gauge;
use poc_http::metrics::prometheus_client::registry::Registry;

/// What the API node counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Count {
    /// Artifact batches from ML nodes refused (malformed, out of phase or unknown node).
    ArtifactBatchesRefused,
    /// Artifacts received for a nonce already stored.
    ArtifactsDuplicate,
    /// Artifacts stored from ML nodes.
    ArtifactsReceived,
    /// Artifacts stored after the stage's last store commit (they do not count).
    ArtifactsUncommitted,
    /// Callback connections refused by the allow-list.
    CallbacksRefused,
    /// Store commits not included before their window closed.
    CommitsMissedWindow,
    /// Store commits the chain refused.
    CommitsRejected,
    /// Store commits the chain included.
    CommitsSent,
    /// Weight distributions the chain included.
    DistributionsSent,
    /// PoC generations started on ML nodes.
    GenerationStarts,
    /// Participants whose proofs failed for good (voted invalid).
    ProofFailuresPermanent,
    /// Proof requests refused.
    ProofRequestsRejected,
    /// Proof requests answered.
    ProofRequestsServed,
    /// PoC v1 nonce batches sent to the chain.
    V1BatchesSent,
    /// PoC v1 nonces received from ML nodes.
    V1NoncesReceived,
    /// PoC v1 validations sent to the chain.
    V1ValidationsSent,
    /// Participants this validator did not vote on (their data could not be checked).
    ValidationsAbstained,
    /// Participants whose validation started.
    ValidationsStarted,
    /// Votes dropped because their window closed.
    VotesMissedWindow,
    /// Votes the chain refused.
    VotesRejected,
    /// Votes the chain accepted.
    VotesSent,
}

impl Count {
    /// Every counter, in exposition order.
    pub const ALL: [Count; 21] = [
        Count::ArtifactBatchesRefused,
        Count::ArtifactsDuplicate,
        Count::ArtifactsReceived,
        Count::ArtifactsUncommitted,
        Count::CallbacksRefused,
        Count::CommitsMissedWindow,
        Count::CommitsRejected,
        Count::CommitsSent,
        Count::DistributionsSent,
        Count::GenerationStarts,
        Count::ProofFailuresPermanent,
        Count::ProofRequestsRejected,
        Count::ProofRequestsServed,
        Count::V1BatchesSent,
        Count::V1NoncesReceived,
        Count::V1ValidationsSent,
        Count::ValidationsAbstained,
        Count::ValidationsStarted,
        Count::VotesMissedWindow,
        Count::VotesRejected,
        Count::VotesSent,
    ];

    /// The sample name and the help text.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Count::ArtifactBatchesRefused => (
                "poc_artifact_batches_refused_total",
                "Artifact batches from ML nodes refused (malformed, out of phase or unknown node)",
            ),
            Count::ArtifactsDuplicate => (
                "poc_artifacts_duplicate_total",
                "Artifacts received for a nonce already stored",
            ),
            Count::ArtifactsReceived => (
                "poc_artifacts_received_total",
                "Artifacts stored from ML nodes",
            ),
            Count::ArtifactsUncommitted => (
                "poc_artifacts_uncommitted_total",
                "Artifacts stored after the stage's last store commit (they do not count)",
            ),
            Count::CallbacksRefused => (
                "poc_callbacks_refused_total",
                "Callback connections refused by the allow-list",
            ),
            Count::CommitsMissedWindow => (
                "poc_commits_missed_window_total",
                "Store commits not included before their window closed",
            ),
            Count::CommitsRejected => (
                "poc_commits_rejected_total",
                "Store commits the chain refused",
            ),
            Count::CommitsSent => ("poc_commits_sent_total", "Store commits the chain included"),
            Count::DistributionsSent => (
                "poc_distributions_sent_total",
                "Weight distributions the chain included",
            ),
            Count::GenerationStarts => (
                "poc_generation_starts_total",
                "PoC generations started on ML nodes",
            ),
            Count::ProofFailuresPermanent => (
                "poc_proof_failures_permanent_total",
                "Participants whose proofs failed for good (voted invalid)",
            ),
            Count::ProofRequestsRejected => (
                "poc_proof_requests_rejected_total",
                "Proof requests refused",
            ),
            Count::ProofRequestsServed => {
                ("poc_proof_requests_served_total", "Proof requests answered")
            }
            Count::V1BatchesSent => (
                "poc_v1_batches_sent_total",
                "PoC v1 nonce batches sent to the chain",
            ),
            Count::V1NoncesReceived => (
                "poc_v1_nonces_received_total",
                "PoC v1 nonces received from ML nodes",
            ),
            Count::V1ValidationsSent => (
                "poc_v1_validations_sent_total",
                "PoC v1 validations sent to the chain",
            ),
            Count::ValidationsAbstained => (
                "poc_validations_abstained_total",
                "Participants this validator did not vote on (their data could not be checked)",
            ),
            Count::ValidationsStarted => (
                "poc_validations_started_total",
                "Participants whose validation started",
            ),
            Count::VotesMissedWindow => (
                "poc_votes_missed_window_total",
                "Votes dropped because their window closed",
            ),
            Count::VotesRejected => ("poc_votes_rejected_total", "Votes the chain refused"),
            Count::VotesSent => ("poc_votes_sent_total", "Votes the chain accepted"),
        }
    }
}

/// The node's counters, registered once; gauges are added at each scrape.
#[derive(Debug)]
pub struct Metrics {
    counters: [Counter; Count::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            counters: std::array::from_fn(|_| Counter::default()),
        }
    }
}

/// A gauge read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct GaugeValue {
    /// Sample name.
    pub name: &'static str,
    /// Help text (no final full stop).
    pub help: &'static str,
    /// The value now.
    pub value: f64,
}

impl Metrics {
    fn counter(&self, c: Count) -> &Counter {
        let i = Count::ALL
            .iter()
            .position(|x| *x == c)
            .expect("every count is listed");
        &self.counters[i]
    }

    /// Adds `v` to a counter.
    pub fn add(&self, c: Count, v: u64) {
        self.counter(c).inc_by(v);
    }

    /// A counter's value, by its sample name (`poc_…_total`); 0 for a name not counted.
    pub fn get(&self, name: &str) -> u64 {
        Count::ALL
            .iter()
            .find(|c| c.describe().0 == name)
            .map_or(0, |c| self.counter(*c).get())
    }

    /// The registry of every counter and of `gauges` as they are now.
    pub fn registry(&self, gauges: &[GaugeValue]) -> Registry {
        let mut r = Registry::default();
        for c in Count::ALL {
            let (name, help) = c.describe();
            r.register(counter_name(name), help, self.counter(c).clone());
        }
        for g in gauges {
            let gauge: Gauge<f64, AtomicU64> = Gauge::default();
            gauge.set(g.value);
            r.register(g.name, g.help, gauge);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exposed_by_name_with_help_and_gauges_beside_them() {
        let m = Metrics::default();
        m.add(Count::VotesSent, 3);
        m.add(Count::VotesSent, 2);
        assert_eq!(m.get("poc_votes_sent_total"), 5);
        assert_eq!(m.get("poc_no_such_total"), 0);
        let r = m.registry(&[GaugeValue {
            name: "poc_votes_pending",
            help: "Votes waiting to be sent",
            value: 4.0,
        }]);
        let text = poc_http::metrics::encode(&r, "");
        assert!(text.contains("\npoc_votes_sent_total 5\n"), "{text}");
        assert!(
            text.contains("# HELP poc_votes_sent Votes the chain accepted.\n"),
            "{text}"
        );
        assert!(text.contains("\npoc_votes_pending 4.0\n"), "{text}");
        // Every counter has its own name.
        let mut names: Vec<_> = Count::ALL.iter().map(|c| c.describe().0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Count::ALL.len());
    }
}
