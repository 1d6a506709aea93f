//! `POST /v1/poc/proofs`: the rate limit per client, the validator's signer set, and the signed proof response.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::ApiNode;
use crate::http::{now_ns, reply};
use crate::proofs::{
    MAX_CLOCK_SKEW_NS, MAX_INDICES, ProofItem, ProofRequest, ProofResponse, response_digest,
    sign_payload, verify_payload,
};

use super::S;
use crate::metrics::Count;

/// Proof requests allowed per client IP: a token bucket each (`proof_rate_per_sec`
/// refills it, `proof_rate_burst` is its size).
pub struct ProofLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for ProofLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofLimiter")
            .field("clients", &self.by_ip.len())
            .finish()
    }
}

/// Longest refill period (slower configured rates are raised to one request per hour).
const MAX_PERIOD: Duration = Duration::from_secs(3600);
/// Largest burst (period x burst must fit the limiter's 64-bit nanoseconds).
pub const MAX_BURST: u32 = 1_000_000;
/// Clients remembered before idle ones are forgotten.
const MAX_TRACKED_CLIENTS: usize = 100_000;

impl ProofLimiter {
    /// A limiter refilling `rate_per_sec` requests per second up to `burst` (the
    /// configuration checks both are positive). Values past what a limiter can hold are
    /// clamped: at least one request per hour, bursts of at most [`MAX_BURST`].
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        let period = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            Duration::try_from_secs_f64(1.0 / rate_per_sec).unwrap_or(MAX_PERIOD)
        } else {
            MAX_PERIOD
        };
        let period = period.clamp(Duration::from_nanos(1), MAX_PERIOD);
        let burst = NonZeroU32::new(burst.clamp(1.0, f64::from(MAX_BURST)) as u32)
            .unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            by_ip: RateLimiter::keyed(quota),
        }
    }

    /// Takes one request from `ip`'s bucket; false when it is empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        if self.by_ip.len() > MAX_TRACKED_CLIENTS {
            self.by_ip.retain_recent();
        }
        self.by_ip.check_key(&ip).is_ok()
    }
}

/// The client a request is counted against, as the reference's HTTP server finds it
/// (`docs/protocol/chain-and-api.md` §6.7): the first address of `X-Forwarded-For`, else
/// `X-Real-IP`, else the TCP peer. Behind a reverse proxy the peer is the proxy, so keying
/// on it would put every validator into one bucket. With `trust_headers` off (a node
/// reachable without a proxy, where a client could pick its own header) only the peer
/// counts. A header that is not an IP address is passed over.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trust_headers: bool) -> IpAddr {
    if !trust_headers {
        return peer;
    }
    let parse = |v: &str| {
        let v = v.trim();
        v.parse::<IpAddr>()
            .or_else(|_| v.trim_start_matches('[').trim_end_matches(']').parse())
            .or_else(|_| v.parse::<SocketAddr>().map(|a| a.ip()))
            .ok()
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("x-forwarded-for")
        .and_then(|v| parse(v.split(',').next().unwrap_or_default()))
        .or_else(|| header("x-real-ip").and_then(parse))
        .unwrap_or(peer)
}

pub(super) async fn proofs(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client = client_ip(&headers, peer.ip(), st.cfg.trust_forwarded_headers);
    let r = proofs_inner(&st, client, &body).await;
    match &r {
        Ok(_) => st.metrics.add(Count::ProofRequestsServed, 1),
        Err(_) => st.metrics.add(Count::ProofRequestsRejected, 1),
    }
    match r {
        Ok(resp) => axum::Json(resp).into_response(),
        Err((code, msg)) => {
            tracing::debug!(%peer, %client, "proof request refused ({code}): {msg}");
            reply(code, msg)
        }
    }
}

async fn proofs_inner(
    st: &Arc<ApiNode>,
    client: IpAddr,
    body: &[u8],
) -> Result<ProofResponse, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    if !st.limiter.allow(client) {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded; slow down".into(),
        ));
    }
    if !st.view().is_some_and(|v| v.should_use_v2()) {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "proof API requires V2 mode".into(),
        ));
    }
    let req: ProofRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed request: {e}")))?;
    if req.root_hash.is_empty()
        || req.validator_address.is_empty()
        || req.validator_signer_address.is_empty()
        || req.signature.is_empty()
    {
        return Err(bad(
            "root_hash, validator_address, validator_signer_address and signature are required"
                .into(),
        ));
    }
    if req.leaf_indices.is_empty() || req.leaf_indices.len() > MAX_INDICES {
        return Err(bad(format!(
            "leaf_indices must hold 1..={MAX_INDICES} indices, got {}",
            req.leaf_indices.len()
        )));
    }
    let root: [u8; 32] = STANDARD
        .decode(&req.root_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("root_hash must be base64 of 32 bytes".into()))?;
    if (now_ns() - req.timestamp).abs() > MAX_CLOCK_SKEW_NS {
        return Err(bad(
            "timestamp is more than 5 minutes from this server's clock".into(),
        ));
    }
    let unauthorized = |m: String| (StatusCode::UNAUTHORIZED, m);
    let set = st
        .signers
        .get(&st.io.client, &req.validator_address)
        .await
        .map_err(|e| unauthorized(format!("validator not found: {e}")))?;
    let key = set
        .iter()
        .find(|(a, _)| *a == req.validator_signer_address)
        .map(|(_, k)| k.clone())
        .ok_or_else(|| {
            unauthorized(format!(
                "{} may not sign for {}",
                req.validator_signer_address, req.validator_address
            ))
        })?;
    if !verify_payload(&key, &req.digest(&root), &req.signature) {
        return Err(unauthorized("signature does not verify".into()));
    }
    if req.poc_stage_start_block_height <= 0 {
        return Err((StatusCode::NOT_FOUND, "no store for that height".into()));
    }
    let store = st
        .stores
        .get(req.poc_stage_start_block_height as u64)
        .map_err(|_| {
            (
                StatusCode::NOT_FOUND,
                format!(
                    "store not found for height {} (may be pruned or not yet created)",
                    req.poc_stage_start_block_height
                ),
            )
        })?;
    let count = u64::from(req.count);
    if count > store.flushed().count {
        return Err(bad("count exceeds stored artifacts".into()));
    }
    match store.root_at(count) {
        Ok(Some(r)) if r == root => {}
        _ => return Err(bad("root_hash does not match store state at count".into())),
    }
    if let Some(i) = req.leaf_indices.iter().find(|i| **i >= req.count) {
        return Err(bad(format!(
            "leaf index {i} is not below count {}",
            req.count
        )));
    }
    let indices = req.leaf_indices.clone();
    let items = tokio::task::spawn_blocking(move || -> Result<Vec<ProofItem>, String> {
        indices
            .iter()
            .map(|i| {
                let p = store
                    .proof(u64::from(*i), count)
                    .map_err(|e| e.to_string())?;
                Ok(ProofItem {
                    leaf_index: *i,
                    nonce_value: p.nonce,
                    vector_bytes: STANDARD.encode(&p.vector),
                    proof: p.proof.iter().map(|h| STANDARD.encode(h)).collect(),
                })
            })
            .collect()
    })
    .await
    .expect("proofs do not panic")
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let signer = st.operational_key.address();
    let ts = now_ns();
    let d = response_digest(
        req.poc_stage_start_block_height,
        &root,
        req.count,
        &items,
        ts,
        &signer,
    );
    Ok(ProofResponse {
        signature: Some(sign_payload(&st.operational_key, &d)),
        proofs: items,
        signer_address: Some(signer),
        timestamp: Some(ts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_its_own_burst() {
        let l = ProofLimiter::new(0.001, 3.0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!((0..5).filter(|_| l.allow(a)).count(), 3);
        assert!(l.allow(b), "another client is not limited by the first");
    }

    #[test]
    fn extreme_settings_do_not_panic() {
        for (rate, burst) in [(1e9, 1e9), (1e-300, 1.0), (f64::INFINITY, f64::NAN)] {
            let l = ProofLimiter::new(rate, burst);
            assert!(l.allow("127.0.0.1".parse().unwrap()));
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_first_forwarded_address_then_the_real_ip_then_the_peer() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "10.0.0.1"),
            (&[("x-forwarded-for", "203.0.113.7")], "203.0.113.7"),
            (
                &[("x-forwarded-for", " 203.0.113.7 , 10.1.1.1")],
                "203.0.113.7",
            ),
            (
                &[("x-forwarded-for", "[2001:db8::5], 10.1.1.1")],
                "2001:db8::5",
            ),
            (&[("x-real-ip", "198.51.100.4")], "198.51.100.4"),
            (
                &[
                    ("x-forwarded-for", "203.0.113.7"),
                    ("x-real-ip", "198.51.100.4"),
                ],
                "203.0.113.7",
            ),
            (
                &[
                    ("x-forwarded-for", "garbage"),
                    ("x-real-ip", "198.51.100.4"),
                ],
                "198.51.100.4",
            ),
            (&[("x-real-ip", "[2001:db8::9]")], "2001:db8::9"),
            (&[("x-real-ip", "198.51.100.4:443")], "198.51.100.4"),
            (
                &[("x-forwarded-for", ""), ("x-real-ip", "nope")],
                "10.0.0.1",
            ),
        ];
        for (pairs, want) in cases {
            let h = headers(pairs);
            assert_eq!(client_ip(&h, peer, true), ip(want), "{pairs:?}");
            assert_eq!(client_ip(&h, peer, false), peer, "{pairs:?} untrusted");
        }
    }
}
