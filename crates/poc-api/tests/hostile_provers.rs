//! The validator's proof client against hostile provers: each answer is classified as the
//! right outcome (valid sample, permanent failure → invalid vote, transient → retry then
//! abstain), never a panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poc_api::proofs::{ProofItem, ProofRequest, ProofResponse, response_digest, sign_payload};
use poc_api::validator::{FetchError, ProofFetcher, WorkItem};
use poc_chain::keys::PrivateKey;
use poc_mmr::{Mmr, hash_leaf};

const STAGE: i64 = 100;

fn vector(i: i32) -> Vec<u8> {
    (0..12u16)
        .flat_map(|k| (0x3C00u16 + (i as u16 % 512) + k).to_le_bytes())
        .collect()
}

struct Tree {
    leaves: Vec<(i32, Vec<u8>)>,
    mmr: Mmr,
}

impl Tree {
    fn new(leaves: Vec<(i32, Vec<u8>)>) -> Self {
        let mut mmr = Mmr::new();
        for (n, v) in &leaves {
            mmr.push(hash_leaf(*n, v));
        }
        Self { leaves, mmr }
    }

    fn honest(n: i32) -> Self {
        Self::new((0..n).map(|i| (i * 7 + 1, vector(i))).collect())
    }

    fn root(&self) -> [u8; 32] {
        self.mmr.root().unwrap()
    }

    fn items(&self, indices: &[u32]) -> Vec<ProofItem> {
        let count = self.leaves.len() as u64;
        indices
            .iter()
            .map(|i| {
                let (nonce, v) = &self.leaves[*i as usize];
                ProofItem {
                    leaf_index: *i,
                    nonce_value: *nonce,
                    vector_bytes: STANDARD.encode(v),
                    proof: self
                        .mmr
                        .proof(u64::from(*i), count)
                        .unwrap()
                        .iter()
                        .map(|h| STANDARD.encode(h))
                        .collect(),
                }
            })
            .collect()
    }
}

type Answer = Arc<dyn Fn(&ProofRequest) -> Response + Send + Sync>;

/// A prover on loopback answering with `answer`; returns its URL and a hit counter.
async fn prover(answer: Answer, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = Arc::clone(&hits);
    let app = Router::new().route(
        "/v1/poc/proofs",
        post(move |body: axum::body::Bytes| {
            let answer = Arc::clone(&answer);
            let hits = Arc::clone(&h2);
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let req: ProofRequest = serde_json::from_slice(&body).unwrap();
                answer(&req)
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

fn fetcher(allow_private: bool) -> ProofFetcher {
    ProofFetcher {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        key: PrivateKey::from_bytes(&[1u8; 32]).unwrap(),
        validator: PrivateKey::from_bytes(&[2u8; 32]).unwrap().address(),
        allow_private,
        timeout: Duration::from_millis(400),
        max_bytes: 64 * 1024,
    }
}

fn json(v: &ProofResponse) -> Response {
    axum::Json(v.clone()).into_response()
}

fn server_key() -> PrivateKey {
    PrivateKey::from_bytes(&[3u8; 32]).unwrap()
}

fn signed(
    items: Vec<ProofItem>,
    tree_root: [u8; 32],
    count: u32,
    key: &PrivateKey,
) -> ProofResponse {
    let ts = 1_700_000_000_000_000_000;
    let d = response_digest(STAGE, &tree_root, count, &items, ts, &key.address());
    ProofResponse {
        signature: Some(sign_payload(key, &d)),
        proofs: items,
        signer_address: Some(key.address()),
        timestamp: Some(ts),
    }
}

/// Runs one case: the tree the prover committed, how it answers, and what the root/count
/// on chain are.
async fn run(
    tree: Arc<Tree>,
    answer: impl Fn(&Tree, &ProofRequest) -> Response + Send + Sync + 'static,
    indices: &[u32],
    chain_root: Option<[u8; 32]>,
    delay: Duration,
) -> Result<usize, FetchError> {
    let t2 = Arc::clone(&tree);
    let (url, _) = prover(Arc::new(move |r: &ProofRequest| answer(&t2, r)), delay).await;
    let item = WorkItem {
        address: "gonka1participant".into(),
        url,
        hex_pub_key: String::new(),
        count: tree.leaves.len() as u32,
        root: chain_root.unwrap_or_else(|| tree.root()),
    };
    let signers = vec![(server_key().address(), server_key().public_key())];
    fetcher(true)
        .fetch(&item, STAGE, indices, &signers)
        .await
        .map(|s| s.len())
}

fn permanent(r: Result<usize, FetchError>, what: &str) {
    assert!(matches!(r, Err(FetchError::Permanent(_))), "{what}: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_provers_end_in_the_right_outcome() {
    let tree = Arc::new(Tree::honest(50));
    let idx = [3u32, 17, 49, 0];
    let plain = |t: &Tree, r: &ProofRequest| {
        json(&ProofResponse {
            proofs: t.items(&r.leaf_indices),
            signer_address: None,
            timestamp: None,
            signature: None,
        })
    };

    // Honest, unsigned and signed.
    assert_eq!(
        run(Arc::clone(&tree), plain, &idx, None, Duration::ZERO)
            .await
            .unwrap(),
        4
    );
    let signed_ok = |t: &Tree, r: &ProofRequest| {
        json(&signed(
            t.items(&r.leaf_indices),
            t.root(),
            r.count,
            &server_key(),
        ))
    };
    assert_eq!(
        run(Arc::clone(&tree), signed_ok, &idx, None, Duration::ZERO)
            .await
            .unwrap(),
        4
    );

    // Wrong proof hash.
    let wrong_proof = |t: &Tree, r: &ProofRequest| {
        let mut items = t.items(&r.leaf_indices);
        let mut h = STANDARD.decode(&items[1].proof[0]).unwrap();
        h[0] ^= 1;
        items[1].proof[0] = STANDARD.encode(h);
        json(&ProofResponse {
            proofs: items,
            signer_address: None,
            timestamp: None,
            signature: None,
        })
    };
    permanent(
        run(Arc::clone(&tree), wrong_proof, &idx, None, Duration::ZERO).await,
        "wrong proof",
    );
    // Proofs of another tree than the one committed (wrong root).
    permanent(
        run(
            Arc::clone(&tree),
            plain,
            &idx,
            Some([5u8; 32]),
            Duration::ZERO,
        )
        .await,
        "wrong root",
    );
    // Missing, extra, duplicated, reordered items.
    let missing = |t: &Tree, r: &ProofRequest| {
        json(&ProofResponse {
            proofs: t.items(&r.leaf_indices[1..]),
            signer_address: None,
            timestamp: None,
            signature: None,
        })
    };
    permanent(
        run(Arc::clone(&tree), missing, &idx, None, Duration::ZERO).await,
        "missing index",
    );
    let extra = |t: &Tree, r: &ProofRequest| {
        let mut i = r.leaf_indices.clone();
        i.push(5);
        json(&ProofResponse {
            proofs: t.items(&i),
            signer_address: None,
            timestamp: None,
            signature: None,
        })
    };
    permanent(
        run(Arc::clone(&tree), extra, &idx, None, Duration::ZERO).await,
        "extra index",
    );
    let dup = |t: &Tree, r: &ProofRequest| {
        let mut i = r.leaf_indices.clone();
        i[1] = i[0];
        json(&ProofResponse {
            proofs: t.items(&i),
            signer_address: None,
            timestamp: None,
            signature: None,
        })
    };
    permanent(
        run(Arc::clone(&tree), dup, &idx, None, Duration::ZERO).await,
        "duplicate index",
    );
    let reordered = |t: &Tree, r: &ProofRequest| {
        let mut i = r.leaf_indices.clone();
        i.reverse();
        json(&ProofResponse {
            proofs: t.items(&i),
            signer_address: None,
            timestamp: None,
            signature: None,
        })
    };
    permanent(
        run(Arc::clone(&tree), reordered, &idx, None, Duration::ZERO).await,
        "reordered",
    );

    // A committed tree with a duplicate nonce, a NaN vector and a short vector: the proofs
    // are valid, the data is not.
    let mut leaves: Vec<(i32, Vec<u8>)> = (0..8).map(|i| (i, vector(i))).collect();
    leaves[5].0 = 2; // duplicate of leaf 2's nonce
    let mut nan = vector(6);
    nan[3] = 0x7E;
    leaves[6].1 = nan;
    leaves[7].1 = vec![0u8; 20];
    let bad = Arc::new(Tree::new(leaves));
    permanent(
        run(Arc::clone(&bad), plain, &[2, 5], None, Duration::ZERO).await,
        "duplicate nonce",
    );
    permanent(
        run(Arc::clone(&bad), plain, &[6], None, Duration::ZERO).await,
        "NaN vector",
    );
    permanent(
        run(Arc::clone(&bad), plain, &[7], None, Duration::ZERO).await,
        "wrong vector length",
    );
    assert_eq!(
        run(Arc::clone(&bad), plain, &[0, 1, 2], None, Duration::ZERO)
            .await
            .unwrap(),
        3
    );

    // Response signatures: by a key that is not the participant's, or wrong bytes.
    let stranger = |t: &Tree, r: &ProofRequest| {
        json(&signed(
            t.items(&r.leaf_indices),
            t.root(),
            r.count,
            &PrivateKey::from_bytes(&[4u8; 32]).unwrap(),
        ))
    };
    permanent(
        run(Arc::clone(&tree), stranger, &idx, None, Duration::ZERO).await,
        "unknown response signer",
    );
    let tampered = |t: &Tree, r: &ProofRequest| {
        let mut s = signed(t.items(&r.leaf_indices), t.root(), r.count, &server_key());
        s.timestamp = Some(s.timestamp.unwrap() + 1);
        json(&s)
    };
    permanent(
        run(Arc::clone(&tree), tampered, &idx, None, Duration::ZERO).await,
        "bad response signature",
    );

    // Malformed JSON, oversized, slow and 5xx answers prove nothing: transient (retry,
    // then abstain).
    let garbage = |_: &Tree, _: &ProofRequest| "{\"proofs\": [1, 2".into_response();
    let r = run(Arc::clone(&tree), garbage, &idx, None, Duration::ZERO).await;
    assert!(
        matches!(&r, Err(FetchError::Transient(m)) if m.contains("malformed")),
        "malformed JSON: {r:?}"
    );
    let huge = |t: &Tree, r: &ProofRequest| {
        let mut items = t.items(&r.leaf_indices);
        items[0].proof = vec!["A".repeat(100_000)];
        json(&ProofResponse {
            proofs: items,
            signer_address: None,
            timestamp: None,
            signature: None,
        })
    };
    let r = run(Arc::clone(&tree), huge, &idx, None, Duration::ZERO).await;
    assert!(
        matches!(&r, Err(FetchError::Transient(m)) if m.contains("larger than")),
        "oversized response: {r:?}"
    );
    let r = run(Arc::clone(&tree), plain, &idx, None, Duration::from_secs(2)).await;
    assert!(
        matches!(r, Err(FetchError::Transient(_))),
        "slow response: {r:?}"
    );
    let down = |_: &Tree, _: &ProofRequest| {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy").into_response()
    };
    let r = run(Arc::clone(&tree), down, &idx, None, Duration::ZERO).await;
    assert!(matches!(r, Err(FetchError::Transient(_))), "503: {r:?}");
}

#[tokio::test]
async fn private_targets_are_refused_without_a_request() {
    let tree = Arc::new(Tree::honest(10));
    let t2 = Arc::clone(&tree);
    let (url, hits) = prover(
        Arc::new(move |r: &ProofRequest| {
            json(&ProofResponse {
                proofs: t2.items(&r.leaf_indices),
                signer_address: None,
                timestamp: None,
                signature: None,
            })
        }),
        Duration::ZERO,
    )
    .await;
    let item = WorkItem {
        address: "p".into(),
        url: url.clone(),
        hex_pub_key: String::new(),
        count: 10,
        root: tree.root(),
    };
    let r = fetcher(false).fetch(&item, STAGE, &[1, 2], &[]).await;
    assert!(
        matches!(&r, Err(FetchError::Transient(m)) if m.contains("private")),
        "{r:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no request was sent");
    // The same prover is fine when private targets are allowed (devnets).
    assert_eq!(
        fetcher(true)
            .fetch(&item, STAGE, &[1, 2], &[])
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A URL that does not parse, or another scheme.
    let bad = WorkItem {
        url: "not a url".into(),
        ..item.clone()
    };
    assert!(matches!(
        fetcher(true).fetch(&bad, STAGE, &[1], &[]).await,
        Err(FetchError::Transient(_))
    ));
    let ftp = WorkItem {
        url: "ftp://example.com".into(),
        ..item
    };
    assert!(matches!(
        fetcher(true).fetch(&ftp, STAGE, &[1], &[]).await,
        Err(FetchError::Transient(_))
    ));
}

/// A chain REST server that answers the signer-set queries for `participant` (its key,
/// a grantee that may sign for it) in the JSON a Gonka node's gateway writes (the
/// module's `Participant` with its proto field names and defaults, the SDK's
/// `BaseAccount`) or, when `failing`, answers every query with 500.
async fn chain(participant: &str, key: &PrivateKey, failing: bool) -> String {
    let info = serde_json::json!({"participant": {
        "index": participant, "address": participant, "reputation": 0, "weight": 0,
        "joinTime": "0", "joinHeight": "0", "lastInferenceTime": "0",
        "inferenceUrl": "", "models": [], "status": "ACTIVE",
    }});
    let account = serde_json::json!({"account": {
        "@type": "/cosmos.auth.v1beta1.BaseAccount",
        "address": participant,
        "pub_key": {"@type": "/cosmos.crypto.secp256k1.PubKey", "key": STANDARD.encode([2u8; 33])},
        "account_number": "7",
        "sequence": "3",
    }});
    let grantees = serde_json::json!({"grantees": [
        {"address": key.address(), "pub_key": STANDARD.encode(key.public_key())},
    ]});
    let app = if failing {
        Router::new().fallback(|| async {
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "store unavailable",
            )
                .into_response()
        })
    } else {
        let p = poc_chain::api::PREFIX;
        Router::new()
            .route(
                &format!("{p}/participant/{participant}"),
                axum::routing::get(move || async move { axum::Json(info).into_response() }),
            )
            .route(
                &format!("{p}/grantees_by_message_type/{{granter}}/{{*type_url}}"),
                axum::routing::get(move || async move { axum::Json(grantees).into_response() }),
            )
            .route(
                &format!("/cosmos/auth/v1beta1/accounts/{participant}"),
                axum::routing::get(move || async move { axum::Json(account).into_response() }),
            )
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

/// When the chain cannot say who may sign for the participant, a correctly signed answer
/// cannot be checked: the validator abstains (transient, no request sent) instead of
/// voting against it. With the chain answering, the same answer verifies.
#[tokio::test]
async fn a_failing_signer_query_is_an_abstention_not_an_invalid_vote() {
    use poc_api::signers::SignerCache;
    use poc_chain_client::ChainClient;
    let tree = Arc::new(Tree::honest(20));
    let t2 = Arc::clone(&tree);
    let (url, hits) = prover(
        Arc::new(move |r: &ProofRequest| {
            json(&signed(
                t2.items(&r.leaf_indices),
                t2.root(),
                20,
                &server_key(),
            ))
        }),
        Duration::ZERO,
    )
    .await;
    let participant = PrivateKey::from_bytes(&[9u8; 32]).unwrap().address();
    let item = WorkItem {
        address: participant.clone(),
        url,
        hex_pub_key: String::new(),
        count: 20,
        root: tree.root(),
    };
    let down = ChainClient::new(&chain(&participant, &server_key(), true).await);
    let r = fetcher(true)
        .fetch_checked(&down, &SignerCache::default(), &item, STAGE, &[1, 5])
        .await;
    assert!(
        matches!(&r, Err(FetchError::Transient(m)) if m.contains("signers")),
        "{r:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no request without signers");
    let up = ChainClient::new(&chain(&participant, &server_key(), false).await);
    let sample = fetcher(true)
        .fetch_checked(&up, &SignerCache::default(), &item, STAGE, &[1, 5])
        .await
        .unwrap();
    assert_eq!(sample.len(), 2);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
