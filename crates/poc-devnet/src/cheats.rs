//! Dishonest participants. Each is a real participant whose artifacts are wrong in one
//! way; the proxy kinds sit between the participant's ML node and its API node and
//! rewrite the artifact callbacks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The kinds of cheating, assigned round-robin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cheat {
    /// (a) Runs the 4-bit-rounded copy of the model: cheaper compute, wrong vectors.
    RoundedModel,
    /// (b) Replaces a share of its vectors with random ones (skips computing them).
    RandomVectors,
    /// (c) Inflates its count: every computed vector is also reported under a fabricated
    /// nonce.
    InflatedCount,
}

impl Cheat {
    /// The i-th cheater's kind.
    pub fn nth(i: usize) -> Self {
        [Self::RoundedModel, Self::RandomVectors, Self::InflatedCount][i % 3]
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RoundedModel => "rounded model",
            Self::RandomVectors => "random vectors",
            Self::InflatedCount => "inflated count",
        }
    }

    /// Whether the cheat is a callback proxy (in PoC v1 every cheater is: the v1 model is
    /// built from the block hash, so a cheaper served model changes nothing there).
    pub fn proxied(self, v1: bool) -> bool {
        v1 || !matches!(self, Self::RoundedModel)
    }
}

/// Share of vectors the random-vector cheater replaces.
pub const RANDOM_SHARE_PERCENT: u64 = 40;
/// Offset of the inflated-count cheater's fabricated nonces.
pub const FABRICATED_NONCE_OFFSET: i64 = 1 << 30;

struct Proxy {
    cheat: Cheat,
    target: String,
    http: reqwest::Client,
    counter: AtomicU64,
}

fn random_vector(seed: u64) -> String {
    let d = Sha256::digest(seed.to_le_bytes());
    // Twelve FP16 values with exponents kept below 0x1F (finite), in roughly [-2, 2].
    let v: Vec<u8> = d[..24]
        .chunks_exact(2)
        .flat_map(|c| ((u16::from_le_bytes([c[0], c[1]]) & 0xBFFF) | 0x3000).to_le_bytes())
        .collect();
    STANDARD.encode(v)
}

fn rewrite(p: &Proxy, mut body: Value) -> Value {
    let Some(arts) = body.get_mut("artifacts").and_then(Value::as_array_mut) else {
        return body;
    };
    match p.cheat {
        Cheat::RandomVectors => {
            for a in arts.iter_mut() {
                let n = p.counter.fetch_add(1, Ordering::Relaxed);
                if n % 100 < RANDOM_SHARE_PERCENT {
                    a["vector_b64"] = Value::String(random_vector(n));
                }
            }
        }
        Cheat::InflatedCount => {
            let extra: Vec<Value> = arts
                .iter()
                .filter_map(|a| {
                    let nonce = a["nonce"].as_i64()?;
                    let mut f = a.clone();
                    f["nonce"] = Value::from(nonce + FABRICATED_NONCE_OFFSET);
                    Some(f)
                })
                .collect();
            arts.extend(extra);
        }
        Cheat::RoundedModel => {}
    }
    body
}

/// Parses a callback, rewrites it and forwards it to the same path on the API node.
async fn relay(
    p: &Proxy,
    path: &str,
    body: &[u8],
    rewrite: impl FnOnce(Value) -> Value,
) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, "malformed").into_response();
    };
    match p
        .http
        .post(format!("{}{path}", p.target))
        .json(&rewrite(v))
        .send()
        .await
    {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, r.bytes().await.unwrap_or_default()).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// PoC v1: every kind of cheater claims fabricated nonces with the distances of real
/// ones (an inflated count without compute); most fail `r_target` when recomputed.
fn rewrite_v1(mut body: Value) -> Value {
    let (Some(n), Some(d)) = (
        body["nonces"].as_array().cloned(),
        body["dist"].as_array().cloned(),
    ) else {
        return body;
    };
    let mut nonces = n.clone();
    let mut dist = d.clone();
    for (x, y) in n.iter().zip(&d) {
        if let Some(x) = x.as_i64() {
            nonces.push(Value::from(x + FABRICATED_NONCE_OFFSET));
            dist.push(y.clone());
        }
    }
    body["nonces"] = Value::Array(nonces);
    body["dist"] = Value::Array(dist);
    body
}

/// Forwards every callback to the same path on the API node (the path carries the API
/// node's callback token), rewriting the artifact batches on the way.
async fn forward(State(p): State<Arc<Proxy>>, uri: axum::http::Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    if path.ends_with("/v2/poc-batches/generated") {
        relay(&p, &path, &body, |v| rewrite(&p, v)).await
    } else if path.ends_with("/v1/poc-batches/generated") {
        relay(&p, &path, &body, rewrite_v1).await
    } else {
        relay(&p, &path, &body, |v| v).await
    }
}

/// A listening proxy whose target is set once the API node runs.
pub struct ProxySlot {
    /// Where the ML node posts.
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    cheat: Cheat,
}

impl ProxySlot {
    /// Binds a loopback port.
    pub async fn bind(cheat: Cheat) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Ok(Self {
            addr: listener.local_addr()?,
            listener,
            cheat,
        })
    }

    /// Starts forwarding to the API node's callback server.
    pub fn start(self, target: SocketAddr) -> tokio::task::JoinHandle<()> {
        let p = Arc::new(Proxy {
            cheat: self.cheat,
            target: format!("http://{target}"),
            http: reqwest::Client::new(),
            counter: AtomicU64::new(0),
        });
        let app = Router::new().route("/{*path}", post(forward)).with_state(p);
        tokio::spawn(async move {
            let _ = axum::serve(self.listener, app).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proxy(cheat: Cheat) -> Proxy {
        Proxy {
            cheat,
            target: String::new(),
            http: reqwest::Client::new(),
            counter: AtomicU64::new(0),
        }
    }

    #[test]
    fn rewrites() {
        let body = json!({"block_height": 5, "artifacts": (0..100).map(|i| json!({"nonce": i, "vector_b64": "AAAA"})).collect::<Vec<_>>()});
        let r = rewrite(&proxy(Cheat::RandomVectors), body.clone());
        let changed = r["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["vector_b64"] != "AAAA")
            .count();
        assert_eq!(changed as u64, RANDOM_SHARE_PERCENT);
        let v = STANDARD.decode(random_vector(3)).unwrap();
        assert!(poc_api::proofs::check_vector(&v).is_ok());
        let r = rewrite(&proxy(Cheat::InflatedCount), body.clone());
        let a = r["artifacts"].as_array().unwrap();
        assert_eq!(a.len(), 200);
        assert_eq!(a[150]["nonce"], json!(50 + FABRICATED_NONCE_OFFSET));
        assert_eq!(rewrite(&proxy(Cheat::RoundedModel), body.clone()), body);
        assert_eq!(Cheat::nth(4), Cheat::RandomVectors);
    }
}
