//! REST: the reference's query paths under `/productscience/inference/inference/…`
//! (gRPC-gateway JSON), transaction submission, status and blocks.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poc_chain::address;
use poc_chain::api::*;
use poc_chain::records::ParticipantStatus;
use poc_chain::state::ChainState;
use serde::Serialize;
use serde_json::json;

use crate::Shared;

type S = State<Arc<Shared>>;

/// How long `BROADCAST_MODE_BLOCK` waits for inclusion.
pub const BLOCK_MODE_TIMEOUT: Duration = Duration::from_secs(30);

struct ApiError(StatusCode, i32, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            axum::Json(ErrorBody {
                code: self.1,
                message: self.2,
            }),
        )
            .into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, 3, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, 5, msg.into())
}

fn internal(msg: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, 13, msg.to_string())
}

type R<T> = Result<axum::Json<T>, ApiError>;

fn ok<T: Serialize>(v: T) -> R<T> {
    Ok(axum::Json(v))
}

fn height(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .map_err(|_| bad(format!("{s:?} is not a block height (int64)")))
}

fn addr(s: &str) -> Result<String, ApiError> {
    if address::is_valid(s) {
        Ok(s.to_owned())
    } else {
        Err(bad(format!("{s:?} is not a valid gonka1… address")))
    }
}

fn keys(st: &ChainState, a: &str) -> (String, String) {
    let hex = st
        .accounts
        .get(a)
        .or_else(|| st.participants.get(a).map(|p| &p.hex_pub_key))
        .cloned()
        .unwrap_or_default();
    let b64 = hex::decode(&hex)
        .map(|b| STANDARD.encode(b))
        .unwrap_or_default();
    (b64, hex)
}

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    let p = |s: &str| format!("{PREFIX}{s}");
    Router::new()
        .route(&p("/poc_v2_store_commit/{h}/{addr}"), get(store_commit))
        .route(
            &p("/mlnode_weight_distribution/{h}/{addr}"),
            get(distribution),
        )
        .route(&p("/all_poc_v2_store_commits/{h}"), get(all_commits))
        .route(
            &p("/all_mlnode_weight_distributions/{h}"),
            get(all_distributions),
        )
        .route(&p("/poc_v2_validations_for_stage/{h}"), get(validations_v2))
        .route(&p("/confirmation_poc_events/{epoch}"), get(events))
        .route(&p("/active_confirmation_poc_event"), get(active_event))
        .route(&p("/poc_validation_snapshot/{h}"), get(snapshot))
        .route(&p("/epoch_info"), get(epoch_info))
        .route(&p("/params"), get(params))
        .route(&p("/poc_batches_for_stage/{h}"), get(batches))
        .route(&p("/poc_validations_for_stage/{h}"), get(validations_v1))
        .route(&p("/count_po_c_batches_at_height/{h}"), get(count_batches))
        .route(
            &p("/count_po_c_validations_at_height/{h}"),
            get(count_validations),
        )
        .route(&p("/participant/{addr}"), get(participant))
        .route(&p("/participants"), get(participants))
        .route(
            &p("/grantees_by_message_type/{granter}/{*type_url}"),
            get(grantees),
        )
        .route(&p("/epoch_group/{epoch}"), get(epoch_group))
        .route("/accounts/{addr}", get(account))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/blocks/latest", get(latest_block))
        .route("/blocks/{h}", get(block))
        .route("/txs", post(broadcast))
        .route("/cosmos/tx/v1beta1/txs", post(broadcast))
        .route("/txs/{hash}", get(tx_by_hash))
        .layer(DefaultBodyLimit::max(poc_chain::tx::MAX_TX_BYTES * 2))
        .with_state(shared)
}

async fn store_commit(State(s): S, Path((h, a)): Path<(String, String)>) -> R<StoreCommitResponse> {
    let (h, a) = (height(&h)?, addr(&a)?);
    let head = s.head();
    ok(match head.state.commits.get(&(h, a)) {
        Some(c) => StoreCommitResponse {
            count: c.count,
            root_hash: c.root_hash.clone(),
            found: true,
        },
        None => StoreCommitResponse {
            count: 0,
            root_hash: vec![],
            found: false,
        },
    })
}

async fn distribution(
    State(s): S,
    Path((h, a)): Path<(String, String)>,
) -> R<DistributionResponse> {
    let (h, a) = (height(&h)?, addr(&a)?);
    let head = s.head();
    ok(match head.state.distributions.get(&(h, a)) {
        Some(d) => DistributionResponse {
            weights: d.weights.clone(),
            found: true,
        },
        None => DistributionResponse {
            weights: vec![],
            found: false,
        },
    })
}

async fn all_commits(State(s): S, Path(h): Path<String>) -> R<AllCommitsResponse> {
    let h = height(&h)?;
    let head = s.head();
    let st = &head.state;
    let mut commits = Vec::new();
    for ((_, a), c) in st
        .commits
        .range((h, String::new())..)
        .take_while(|((hh, _), _)| *hh == h)
    {
        let (_, hex) = keys(st, a);
        if hex.is_empty() {
            continue; // the reference omits participants without a known key
        }
        commits.push(CommitWithKey {
            participant_address: a.clone(),
            count: c.count,
            root_hash: c.root_hash.clone(),
            hex_pub_key: hex,
        });
    }
    ok(AllCommitsResponse { commits })
}

async fn all_distributions(State(s): S, Path(h): Path<String>) -> R<AllDistributionsResponse> {
    let h = height(&h)?;
    let head = s.head();
    let distributions = head
        .state
        .distributions
        .range((h, String::new())..)
        .take_while(|((hh, _), _)| *hh == h)
        .map(|((_, a), d)| DistributionEntry {
            participant_address: a.clone(),
            weights: d.weights.clone(),
        })
        .collect();
    ok(AllDistributionsResponse { distributions })
}

/// The records of one stage grouped by participant (keys are `(height, participant, _)`,
/// so one participant's records are adjacent), each group with the participant's keys.
fn group_by_participant<T: Clone>(
    st: &ChainState,
    map: &std::collections::BTreeMap<(i64, String, String), T>,
    h: i64,
) -> Vec<(String, String, String, Vec<T>)> {
    let mut out: Vec<(String, String, String, Vec<T>)> = Vec::new();
    for ((_, p, _), v) in map
        .range((h, String::new(), String::new())..)
        .take_while(|((hh, _, _), _)| *hh == h)
    {
        if out.last().is_none_or(|l| l.0 != *p) {
            let (b64, hex) = keys(st, p);
            out.push((p.clone(), b64, hex, vec![]));
        }
        out.last_mut().expect("pushed").3.push(v.clone());
    }
    out
}

fn records<T: Clone>(
    st: &ChainState,
    map: &std::collections::BTreeMap<(i64, String, String), T>,
    h: i64,
) -> Vec<ParticipantRecords<T>> {
    group_by_participant(st, map, h)
        .into_iter()
        .map(
            |(participant, pub_key, hex_pub_key, poc_validation)| ParticipantRecords {
                participant,
                pub_key,
                hex_pub_key,
                poc_validation,
            },
        )
        .collect()
}

async fn validations_v2(State(s): S, Path(h): Path<String>) -> R<ValidationsV2Response> {
    let h = height(&h)?;
    let head = s.head();
    ok(ValidationsV2Response {
        poc_validation: records(&head.state, &head.state.validations_v2, h),
    })
}

async fn batches(State(s): S, Path(h): Path<String>) -> R<BatchesResponse> {
    let h = height(&h)?;
    let head = s.head();
    let poc_batch = group_by_participant(&head.state, &head.state.batches_v1, h)
        .into_iter()
        .map(
            |(participant, pub_key, hex_pub_key, poc_batch)| ParticipantBatches {
                participant,
                pub_key,
                hex_pub_key,
                poc_batch,
            },
        )
        .collect();
    ok(BatchesResponse { poc_batch })
}

async fn validations_v1(State(s): S, Path(h): Path<String>) -> R<ValidationsV1Response> {
    let h = height(&h)?;
    let head = s.head();
    ok(ValidationsV1Response {
        poc_validation: records(&head.state, &head.state.validations_v1, h),
    })
}

async fn count_batches(State(s): S, Path(h): Path<String>) -> R<CountResponse> {
    let h = height(&h)?;
    let head = s.head();
    let count = head
        .state
        .batches_v1
        .range((h, String::new(), String::new())..)
        .take_while(|((hh, _, _), _)| *hh == h)
        .count() as u64;
    ok(CountResponse { count })
}

async fn count_validations(State(s): S, Path(h): Path<String>) -> R<CountResponse> {
    let h = height(&h)?;
    let head = s.head();
    let count = head
        .state
        .validations_v1
        .range((h, String::new(), String::new())..)
        .take_while(|((hh, _, _), _)| *hh == h)
        .count() as u64;
    ok(CountResponse { count })
}

async fn events(State(s): S, Path(epoch): Path<String>) -> R<EventsResponse> {
    let e: u64 = epoch
        .parse()
        .map_err(|_| bad(format!("{epoch:?} is not an epoch index (uint64)")))?;
    let head = s.head();
    let events = head
        .state
        .confirmation_events
        .range((e, 0)..=(e, u64::MAX))
        .map(|(_, v)| v.clone())
        .collect();
    ok(EventsResponse { events })
}

async fn active_event(State(s): S) -> R<ActiveEventResponse> {
    let head = s.head();
    ok(ActiveEventResponse {
        is_active: head.state.active_event.is_some(),
        event: head.state.active_event.clone(),
    })
}

async fn snapshot(State(s): S, Path(h): Path<String>) -> R<SnapshotResponse> {
    let h = height(&h)?;
    let head = s.head();
    let snap = head.state.snapshots.get(&h).map(|v| SnapshotJson {
        poc_stage_start_height: v.poc_stage_start_height,
        snapshot_height: v.snapshot_height,
        app_hash: v.app_hash,
        validator_weights: v
            .validator_weights
            .iter()
            .map(|(a, w)| ValidatorWeight {
                address: a.clone(),
                weight: *w,
            })
            .collect(),
        generation_start_timestamp: v.generation_start_timestamp,
        exchange_end_timestamp: v.exchange_end_timestamp,
    });
    ok(SnapshotResponse {
        found: snap.is_some(),
        snapshot: snap,
    })
}

async fn epoch_info(State(s): S) -> R<EpochInfoResponse> {
    let head = s.head();
    let st = &head.state;
    ok(EpochInfoResponse {
        block_height: st.height,
        params: st.params.clone(),
        latest_epoch: st.latest_epoch,
        effective_epoch: st.effective_epoch,
        is_confirmation_poc_active: st.active_event.is_some(),
        active_confirmation_poc_event: st.active_event.clone(),
        latest_stages: st.latest_ctx().stages(),
    })
}

async fn params(State(s): S) -> R<ParamsResponse> {
    ok(ParamsResponse {
        params: s.head().state.params.clone(),
    })
}

fn participant_info(st: &ChainState, a: &str) -> Option<ParticipantInfo> {
    let p = st.participants.get(a)?;
    let (b64, hex) = keys(st, a);
    Some(ParticipantInfo {
        address: a.to_owned(),
        pubkey: b64,
        hex_pub_key: hex,
        inference_url: p.inference_url.clone(),
        validator_key: p.validator_key.clone(),
        status: match p.status {
            ParticipantStatus::Active => "ACTIVE".into(),
            ParticipantStatus::Inactive => "INACTIVE".into(),
        },
        confirmation_poc_ratio: p.confirmation_poc_ratio.clone(),
    })
}

async fn participant(State(s): S, Path(a): Path<String>) -> R<ParticipantResponse> {
    let a = addr(&a)?;
    let head = s.head();
    let info = participant_info(&head.state, &a)
        .ok_or_else(|| not_found(format!("participant {a} is not registered")))?;
    ok(ParticipantResponse {
        pubkey: info.pubkey.clone(),
        participant: info,
    })
}

async fn participants(State(s): S) -> R<ParticipantsResponse> {
    let head = s.head();
    let st = &head.state;
    ok(ParticipantsResponse {
        participant: st
            .participants
            .keys()
            .filter_map(|a| participant_info(st, a))
            .collect(),
    })
}

async fn grantees(
    State(s): S,
    Path((granter, type_url)): Path<(String, String)>,
) -> R<GranteesResponse> {
    let granter = addr(&granter)?;
    let type_url = if type_url.starts_with('/') {
        type_url
    } else {
        format!("/{type_url}")
    };
    let head = s.head();
    let st = &head.state;
    let grantees = st
        .grants
        .keys()
        .filter(|(g, _, t)| *g == granter && *t == type_url)
        .map(|(_, e, _)| Grantee {
            address: e.clone(),
            pub_key: keys(st, e).0,
        })
        .collect();
    ok(GranteesResponse { grantees })
}

async fn epoch_group(State(s): S, Path(epoch): Path<String>) -> R<EpochGroupResponse> {
    let e: u64 = epoch
        .parse()
        .map_err(|_| bad(format!("{epoch:?} is not an epoch index (uint64)")))?;
    let head = s.head();
    let g = head
        .state
        .epoch_groups
        .get(&e)
        .ok_or_else(|| not_found(format!("no group for epoch {e}")))?;
    let vw = |m: &std::collections::BTreeMap<String, i64>| {
        m.iter()
            .map(|(a, w)| ValidatorWeight {
                address: a.clone(),
                weight: *w,
            })
            .collect()
    };
    ok(EpochGroupResponse {
        epoch_index: e,
        validator_weights: vw(&g.members),
        active_participants: g.participants.clone(),
        confirmation_weights: vw(&g.confirmation_weights),
    })
}

async fn account(State(s): S, Path(a): Path<String>) -> R<AccountResponse> {
    let a = addr(&a)?;
    let head = s.head();
    ok(AccountResponse {
        hex_pub_key: keys(&head.state, &a).1,
        sequence: head.state.sequences.get(&a).copied().unwrap_or(0),
        address: a,
    })
}

async fn status(State(s): S) -> R<StatusResponse> {
    let head = s.head();
    ok(StatusResponse {
        chain_id: head.state.chain_id.clone(),
        height: head.state.height,
        hash: hex::encode(head.hash),
        time: head.state.time,
        app_hash: head.state.app_hash,
        mempool_size: s.mempool.lock().expect("mempool lock").len(),
        consensus: s.consensus.read().expect("consensus lock").clone(),
    })
}

/// Prometheus text: chain height and mempool, consensus progress on a replicated node,
/// then the consensus engine's own metrics.
async fn metrics(State(s): S) -> Response {
    use std::fmt::Write;
    let head = s.head();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "poc_chain_height",
        "Last committed block height.",
        head.state.height as f64,
    );
    gauge(
        "poc_chain_mempool_size",
        "Transactions waiting.",
        s.mempool.lock().expect("mempool lock").len() as f64,
    );
    if let Some(c) = s.consensus.read().expect("consensus lock").clone() {
        gauge(
            "poc_consensus_view",
            "Highest consensus view seen.",
            c.view as f64,
        );
        gauge(
            "poc_consensus_finalized_view",
            "View of the last finalized block.",
            c.finalized_view as f64,
        );
        gauge(
            "poc_consensus_finalized_blocks",
            "Blocks finalized since start.",
            c.finalized_blocks as f64,
        );
        gauge(
            "poc_consensus_finalization_latency_seconds",
            "First sight of the last block to its finalization.",
            c.last_finalization_latency_ms / 1000.0,
        );
        gauge(
            "poc_consensus_mean_finalization_latency_seconds",
            "Mean first-sight-to-finalization time since start.",
            c.mean_finalization_latency_ms / 1000.0,
        );
        gauge(
            "poc_consensus_peers",
            "Peers heard from recently.",
            c.peers.len() as f64,
        );
        gauge(
            "poc_consensus_synced",
            "1 when within one block of the peers.",
            f64::from(u8::from(c.synced)),
        );
        gauge(
            "poc_consensus_validating",
            "1 when this node signs votes.",
            f64::from(u8::from(c.validating)),
        );
    }
    out.push_str(&s.engine_metrics.read().expect("metrics lock"));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

fn db(s: &Shared) -> Result<Arc<crate::db::ChainDb>, ApiError> {
    s.db().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            "the node is shutting down".into(),
        )
    })
}

async fn block_at(s: &Shared, h: i64) -> Result<Response, ApiError> {
    let db_read = {
        let db = db(s)?;
        let b = db.block(h).map_err(internal)?;
        let r = db.result(h).map_err(internal)?;
        (b, r)
    };
    match db_read {
        (Some(b), Some(r)) => Ok(axum::Json(
            json!({"block_id": {"hash": hex::encode(b.header.hash())}, "block": b, "result": r}),
        )
        .into_response()),
        _ => Err(not_found(format!("no block at height {h}"))),
    }
}

async fn block(State(s): S, Path(h): Path<String>) -> Result<Response, ApiError> {
    let h = height(&h)?;
    block_at(&s, h).await
}

async fn latest_block(State(s): S) -> Result<Response, ApiError> {
    let h = s.head().state.height;
    block_at(&s, h).await
}

async fn included(s: &Shared, hash: &str) -> Result<Option<TxResponse>, ApiError> {
    let db = db(s)?;
    let Some((h, i)) = db.tx_location(hash).map_err(internal)? else {
        return Ok(None);
    };
    let r = db
        .result(h)
        .map_err(internal)?
        .ok_or_else(|| internal("block result missing"))?;
    let result = r
        .tx_results
        .get(i as usize)
        .cloned()
        .ok_or_else(|| internal("tx index out of range"))?;
    Ok(Some(TxResponse { result, height: h }))
}

async fn tx_by_hash(State(s): S, Path(hash): Path<String>) -> R<BroadcastResponse> {
    let hash = hash.to_uppercase();
    match included(&s, &hash).await? {
        Some(tx_response) => ok(BroadcastResponse { tx_response }),
        None => Err(not_found(format!("transaction {hash} is not in a block"))),
    }
}

async fn broadcast(State(s): S, body: axum::body::Bytes) -> R<BroadcastResponse> {
    let req: BroadcastRequest = serde_json::from_slice(&body).map_err(|e| bad(format!("body must be {{\"tx_bytes\": base64, \"mode\": \"BROADCAST_MODE_SYNC\"|\"BROADCAST_MODE_BLOCK\"}}: {e}")))?;
    if s.halted.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            "block production has stopped on an error; see the node's log".into(),
        ));
    }
    let mut rx = s.height.subscribe();
    let check = {
        let mut pool = s.mempool.lock().expect("mempool lock");
        let head = s.head();
        pool.add(&head.state, req.tx_bytes)
    };
    if check.code != 0 || req.mode == BroadcastMode::Sync {
        return ok(BroadcastResponse {
            tx_response: TxResponse {
                result: check,
                height: 0,
            },
        });
    }
    let hash = check.txhash.clone();
    let wait = async {
        loop {
            if let Some(r) = included(&s, &hash).await? {
                return Ok::<_, ApiError>(Some(r));
            }
            if rx.changed().await.is_err() {
                return Ok(None);
            }
        }
    };
    match tokio::time::timeout(BLOCK_MODE_TIMEOUT, wait).await {
        Ok(Ok(Some(r))) => ok(BroadcastResponse { tx_response: r }),
        Ok(Err(e)) => Err(e),
        _ => ok(BroadcastResponse {
            tx_response: TxResponse {
                result: check,
                height: 0,
            },
        }),
    }
}
