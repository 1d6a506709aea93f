//! The validator (`docs/protocol/chain-and-api.md` §6.8): for every committed participant of a stage,
//! sample leaves, fetch and strictly verify their proofs, recompute on an own ML node and
//! vote. Permanent proof failures vote −1 at once; transient ones are retried, then the
//! validator abstains.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poc_chain::decimal::Decimal;
use poc_chain::slots;
use poc_chain_client::ChainClient;
use tokio::sync::Semaphore;

use crate::ApiNode;
use crate::callbacks::Grant;
use crate::config::secs;
use crate::http::now_ns;
use crate::metrics::Count;
use crate::mlnodes::StatTestRequest;
use crate::proofs::{ProofRequest, ProofResponse, VerifiedSample, verify_response};
use crate::sampling::sample_leaf_indices;
use crate::signers::SignerCache;
use crate::timing::Window;

/// One stage to validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageJob {
    /// `poc_stage_start_block_height` (S or the trigger height).
    pub stage: i64,
    /// The generation seed hash (hash of block S, or the event's seed hash).
    pub seed_hash: String,
    /// Hash of the block at which validation started (auditable sampling).
    pub sampling_hash: String,
    /// The window in which the chain accepts the votes.
    pub window: Window,
}

/// One participant to validate.
#[derive(Debug, Clone)]
pub struct WorkItem {
    pub address: String,
    /// Its public URL.
    pub url: String,
    /// Its hex key.
    pub hex_pub_key: String,
    /// Committed count.
    pub count: u32,
    /// Committed root.
    pub root: [u8; 32],
}

/// How fetching proofs failed (`docs/protocol/chain-and-api.md` §6.8). Only an answer
/// that proves the participant wrong is a reason to vote invalid: a proof that does not
/// lead to the committed root, missing or extra leaves, a malformed vector, a repeated
/// nonce, or a response signed by a key that may not sign for it. Anything that leaves
/// the validator without a usable answer (the network, the participant's URL, a body
/// that is not a proof response, the chain's own query for the signer set) is retried
/// and then abstained on, never voted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The answer proves the participant wrong: vote invalid.
    Permanent(String),
    /// No usable answer: retry, then abstain.
    Transient(String),
}

/// Whether an address is private, loopback, link-local, unspecified or multicast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_multicast()
                || v.is_broadcast()
                || v.octets()[0] == 100 && (v.octets()[1] & 0xC0) == 64
        }
        IpAddr::V6(v) => {
            v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (v.segments()[0] & 0xFE00) == 0xFC00
                || (v.segments()[0] & 0xFFC0) == 0xFE80
                || v.to_ipv4_mapped()
                    .is_some_and(|m| is_private(IpAddr::V4(m)))
        }
    }
}

/// Refuses URLs that resolve to private targets unless allowed (SSRF guard).
async fn check_target(url: &reqwest::Url, allow_private: bool) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Transient(format!(
            "inference URL scheme {:?} is not http(s)",
            url.scheme()
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| FetchError::Transient("inference URL has no host".into()))?;
    if allow_private {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<_> =
        tokio::net::lookup_host((host.trim_matches(|c| c == '[' || c == ']'), port))
            .await
            .map_err(|e| FetchError::Transient(format!("cannot resolve {host}: {e}")))?
            .collect();
    if addrs.is_empty() {
        return Err(FetchError::Transient(format!("{host} resolves to nothing")));
    }
    if let Some(a) = addrs.iter().find(|a| is_private(a.ip())) {
        return Err(FetchError::Transient(format!(
            "inference URL {url} resolves to the private address {} (set allow_private_targets for devnets)",
            a.ip()
        )));
    }
    Ok(())
}

/// The validator's proof client: signed requests, SSRF guard, timeouts, size limit.
#[derive(Debug, Clone)]
pub struct ProofFetcher {
    /// HTTP client (redirects off).
    pub http: reqwest::Client,
    /// Signs requests (the operational key).
    pub key: poc_chain::keys::PrivateKey,
    /// The validator's account address.
    pub validator: String,
    /// Allow private/loopback targets.
    pub allow_private: bool,
    /// Per-request and per-chunk timeout.
    pub timeout: std::time::Duration,
    /// Largest response.
    pub max_bytes: usize,
}

impl ProofFetcher {
    /// Requests proofs for `indices` and verifies them against the on-chain commit;
    /// `signers` are the keys allowed to sign the response (the participant's and its
    /// grantees').
    pub async fn fetch(
        &self,
        item: &WorkItem,
        stage: i64,
        indices: &[u32],
        signers: &[(String, Vec<u8>)],
    ) -> Result<VerifiedSample, FetchError> {
        let base = reqwest::Url::parse(&item.url).map_err(|e| {
            FetchError::Transient(format!("inference URL {:?} does not parse: {e}", item.url))
        })?;
        check_target(&base, self.allow_private).await?;
        let url = reqwest::Url::parse(&format!(
            "{}/v1/poc/proofs",
            base.as_str().trim_end_matches('/')
        ))
        .map_err(|e| FetchError::Transient(e.to_string()))?;
        let req = ProofRequest::signed(
            &self.key,
            &self.validator,
            stage,
            &item.root,
            item.count,
            indices.to_vec(),
            now_ns(),
        );
        let resp = self
            .http
            .post(url.clone())
            .json(&req)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| FetchError::Transient(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(FetchError::Transient(format!(
                "{url} answered {}",
                resp.status()
            )));
        }
        let limit = self.max_bytes;
        if resp.content_length().is_some_and(|l| l as usize > limit) {
            return Err(FetchError::Transient(format!(
                "proof response larger than {limit} bytes"
            )));
        }
        let mut resp = resp;
        let mut body = Vec::new();
        loop {
            match tokio::time::timeout(self.timeout, resp.chunk()).await {
                Err(_) => return Err(FetchError::Transient("proof response too slow".into())),
                Ok(Err(e)) => {
                    return Err(FetchError::Transient(format!(
                        "reading the proof response: {e}"
                    )));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => {
                    body.extend_from_slice(&c);
                    if body.len() > limit {
                        return Err(FetchError::Transient(format!(
                            "proof response larger than {limit} bytes"
                        )));
                    }
                }
            }
        }
        let parsed: ProofResponse = serde_json::from_slice(&body)
            .map_err(|e| FetchError::Transient(format!("malformed proof response: {e}")))?;
        verify_response(&parsed, stage, &item.root, item.count, indices, |a| {
            signers.iter().find(|(x, _)| x == a).map(|(_, k)| k.clone())
        })
        .map_err(|e| FetchError::Permanent(e.to_string()))
    }
}

impl ProofFetcher {
    /// Reads who may sign for the participant from the chain (through `cache`), then
    /// fetches and verifies as [`ProofFetcher::fetch`]. A chain that cannot answer
    /// leaves the validator without a way to check the answer: transient, no request
    /// is sent.
    pub async fn fetch_checked(
        &self,
        chain: &ChainClient,
        cache: &SignerCache,
        item: &WorkItem,
        stage: i64,
        indices: &[u32],
    ) -> Result<VerifiedSample, FetchError> {
        let signers = cache
            .get(chain, &item.address)
            .await
            .map_err(|e| FetchError::Transient(format!("signers of {}: {e}", item.address)))?;
        self.fetch(item, stage, indices, &signers).await
    }
}

impl ApiNode {
    /// This node's proof client.
    pub fn fetcher(&self) -> ProofFetcher {
        ProofFetcher {
            http: self.proof_http.clone(),
            key: self.operational_key.clone(),
            validator: self.io.address.clone(),
            allow_private: self.cfg.allow_private_targets,
            timeout: secs(self.cfg.validation.request_timeout_s),
            max_bytes: self.cfg.validation.max_response_bytes,
        }
    }
}

fn dec_f64(d: Option<Decimal>, default: f64) -> f64 {
    d.and_then(|d| d.to_dec().to_plain_string().parse().ok())
        .unwrap_or(default)
}

/// Validates every committed participant of a stage.
pub async fn validate_stage(st: Arc<ApiNode>, job: StageJob) {
    let stage = job.stage;
    let Some(view) = st.view() else { return };
    if job.seed_hash.is_empty() {
        tracing::warn!(stage, "no seed hash; not validating");
        return;
    }
    let params = view.info.params.clone();
    let pp = &params.poc_params;
    let sample_size = if pp.validation_sample_size <= 0 {
        200
    } else {
        pp.validation_sample_size as u32
    };
    let stat = pp.stat_test.clone().unwrap_or_default();
    let stat = StatTestRequest {
        dist_threshold: dec_f64(stat.dist_threshold, 0.4),
        p_mismatch: dec_f64(stat.p_mismatch, 0.1),
        p_value_threshold: dec_f64(stat.p_value_threshold, 0.05),
    };
    let vc = st.cfg.validation.clone();
    // Eligible ML nodes, looked up again while none is usable.
    let mut nodes = Vec::new();
    for attempt in 0..vc.node_retries.max(1) {
        nodes = st
            .broker
            .nodes()
            .iter()
            .filter(|n| n.usable())
            .map(|n| n.number)
            .collect();
        if !nodes.is_empty() {
            break;
        }
        if attempt + 1 < vc.node_retries {
            tokio::time::sleep(secs(vc.node_retry_delay_s)).await;
            st.broker.check_health().await;
        }
    }
    if nodes.is_empty() {
        tracing::error!(
            stage,
            "no usable ML node to validate with; not validating this stage"
        );
        return;
    }
    {
        // After any keep-generating pass in progress, so that none starts a node again.
        let _no_pass = st.generation.one_pass.lock().await;
        st.end_generation();
        st.broker.stop_all().await;
    }
    let commits = match st.io.client.all_commits(stage).await {
        Ok(c) => c.commits,
        Err(e) => {
            tracing::error!(stage, "cannot list the stage's commits: {e}");
            return;
        }
    };
    let slot_filter = if pp.validation_slots > 0 {
        match st.io.client.snapshot(stage).await {
            Ok(s) => s.snapshot.filter(|s| !s.validator_weights.is_empty()),
            Err(_) => None,
        }
    } else {
        None
    };
    let mut items = Vec::new();
    for c in commits {
        if let Some(snap) = &slot_filter {
            let w: Vec<(String, i64)> = snap
                .validator_weights
                .iter()
                .map(|v| (v.address.clone(), v.weight))
                .collect();
            if !slots::assign(
                &hex::encode(snap.app_hash),
                &c.participant_address,
                &w,
                pp.validation_slots,
            )
            .contains(&st.io.address)
            {
                continue;
            }
        }
        let Ok(root) = <[u8; 32]>::try_from(c.root_hash.as_slice()) else {
            continue;
        };
        let url = match st.io.client.participant(&c.participant_address).await {
            Ok(Some(p)) if !p.participant.inference_url.is_empty() => p.participant.inference_url,
            _ => continue,
        };
        if c.hex_pub_key.is_empty() {
            continue;
        }
        items.push(WorkItem {
            address: c.participant_address,
            url,
            hex_pub_key: c.hex_pub_key,
            count: c.count,
            root,
        });
    }
    tracing::info!(stage, participants = items.len(), "validation starts");
    st.metrics
        .add(Count::ValidationsStarted, items.len() as u64);
    let sem = Arc::new(Semaphore::new(vc.workers.max(1)));
    let counter = Arc::new(AtomicUsize::new(0));
    let nodes = Arc::new(nodes);
    let mut set = tokio::task::JoinSet::new();
    let (model, seq_len) = (pp.model_id.clone(), pp.seq_len);
    for item in items {
        let (st, sem, counter, nodes, job, model) = (
            Arc::clone(&st),
            Arc::clone(&sem),
            Arc::clone(&counter),
            Arc::clone(&nodes),
            job.clone(),
            model.clone(),
        );
        set.spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore open");
            validate_one(
                &st,
                &job,
                &item,
                sample_size,
                &nodes,
                &counter,
                &model,
                seq_len,
                stat,
            )
            .await;
        });
    }
    while set.join_next().await.is_some() {}
    tracing::info!(stage, "validation requests done");
}

#[allow(clippy::too_many_arguments)]
async fn validate_one(
    st: &Arc<ApiNode>,
    job: &StageJob,
    item: &WorkItem,
    sample_size: u32,
    nodes: &[u64],
    counter: &AtomicUsize,
    model: &str,
    seq_len: i64,
    stat: StatTestRequest,
) {
    let stage = job.stage;
    let indices = sample_leaf_indices(
        &st.io.account_hex,
        &job.sampling_hash,
        stage,
        item.count,
        sample_size,
    );
    let vc = &st.cfg.validation;
    let fetcher = st.fetcher();
    let window = job.window;
    let open = || st.view().is_some_and(|v| window.open_at(v.height));
    for attempt in 1..=vc.max_retries.max(1) {
        if !open() {
            break;
        }
        let err = match fetcher
            .fetch_checked(&st.io.client, &st.signers, item, stage, &indices)
            .await
        {
            Ok(sample) => {
                let n = nodes[counter.fetch_add(1, Ordering::SeqCst) % nodes.len()];
                let node = st.broker.by_number(n).expect("known node");
                // The verdict comes back on a URL only this request knows.
                let callback = st.callback_url(
                    Grant::Validation {
                        stage,
                        participant: item.hex_pub_key.clone(),
                    },
                    window.end,
                );
                match st
                    .broker
                    .validate(
                        node,
                        &job.seed_hash,
                        stage,
                        &item.hex_pub_key,
                        &sample,
                        model,
                        seq_len,
                        stat,
                        nodes.len() as u64,
                        &callback,
                    )
                    .await
                {
                    Ok(()) => {
                        tracing::info!(stage, participant = %item.address, samples = sample.len(), node = %node.id, "proofs verified; recomputing");
                        return;
                    }
                    Err(e) => format!("ML node {}: {e}", node.id),
                }
            }
            Err(FetchError::Permanent(e)) => {
                tracing::warn!(stage, participant = %item.address, "invalid proofs, voting invalid: {e}");
                st.metrics.add(Count::ProofFailuresPermanent, 1);
                st.vote(stage, window, item.address.clone(), -1);
                return;
            }
            Err(FetchError::Transient(e)) => e,
        };
        tracing::debug!(stage, participant = %item.address, attempt, "transient failure: {err}");
        if attempt < vc.max_retries {
            tokio::time::sleep(secs(vc.retry_backoff_s)).await;
        }
    }
    if open() {
        tracing::warn!(stage, participant = %item.address, "no answer after {} attempts; abstaining", vc.max_retries);
    } else {
        tracing::warn!(stage, participant = %item.address, "the validation window closed before an answer; abstaining");
    }
    st.metrics.add(Count::ValidationsAbstained, 1);
}

/// Decodes a base64 vector (used by tests and tools).
pub fn decode_vector(b64: &str) -> Option<Vec<u8>> {
    STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_address_classification() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2001:4860:4860::8888",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn targets_are_checked_before_any_request() {
        let u = reqwest::Url::parse("http://127.0.0.1:9/").unwrap();
        assert!(
            matches!(check_target(&u, false).await, Err(FetchError::Transient(m)) if m.contains("private"))
        );
        assert!(check_target(&u, true).await.is_ok());
        let u = reqwest::Url::parse("ftp://example.com/").unwrap();
        assert!(matches!(
            check_target(&u, true).await,
            Err(FetchError::Transient(_))
        ));
    }
}
