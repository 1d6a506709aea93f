//! PoC state queries: store commits, distributions, batches, validations, events, snapshots.
//! Lists of commits and distributions come in the reference's order, by address bytes
//! (`docs/protocol/chain-and-api.md` §3).

use axum::extract::{Path, State};
use poc_chain::address;
use poc_chain::api::*;
use poc_chain::state::ChainState;

use super::{R, S, addr, bad, height, keys, ok};

pub(super) async fn store_commit(
    State(s): S,
    Path((h, a)): Path<(String, String)>,
) -> R<StoreCommitResponse> {
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

pub(super) async fn distribution(
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

pub(super) async fn all_commits(State(s): S, Path(h): Path<String>) -> R<AllCommitsResponse> {
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
    commits.sort_by(|x, y| address::cmp_bytes(&x.participant_address, &y.participant_address));
    ok(AllCommitsResponse { commits })
}

pub(super) async fn all_distributions(
    State(s): S,
    Path(h): Path<String>,
) -> R<AllDistributionsResponse> {
    let h = height(&h)?;
    let head = s.head();
    let mut distributions: Vec<DistributionEntry> = head
        .state
        .distributions
        .range((h, String::new())..)
        .take_while(|((hh, _), _)| *hh == h)
        .map(|((_, a), d)| DistributionEntry {
            participant_address: a.clone(),
            weights: d.weights.clone(),
        })
        .collect();
    distributions
        .sort_by(|x, y| address::cmp_bytes(&x.participant_address, &y.participant_address));
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

pub(super) fn records<T: Clone>(
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

pub(super) async fn validations_v2(State(s): S, Path(h): Path<String>) -> R<ValidationsV2Response> {
    let h = height(&h)?;
    let head = s.head();
    ok(ValidationsV2Response {
        poc_validation: records(&head.state, &head.state.validations_v2, h),
    })
}

pub(super) async fn batches(State(s): S, Path(h): Path<String>) -> R<BatchesResponse> {
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

pub(super) async fn validations_v1(State(s): S, Path(h): Path<String>) -> R<ValidationsV1Response> {
    let h = height(&h)?;
    let head = s.head();
    ok(ValidationsV1Response {
        poc_validation: records(&head.state, &head.state.validations_v1, h),
    })
}

pub(super) async fn count_batches(State(s): S, Path(h): Path<String>) -> R<CountResponse> {
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

pub(super) async fn count_validations(State(s): S, Path(h): Path<String>) -> R<CountResponse> {
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

pub(super) async fn events(State(s): S, Path(epoch): Path<String>) -> R<EventsResponse> {
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

pub(super) async fn active_event(State(s): S) -> R<ActiveEventResponse> {
    let head = s.head();
    ok(ActiveEventResponse {
        is_active: head.state.active_event.is_some(),
        event: head.state.active_event.clone(),
    })
}

pub(super) async fn snapshot(State(s): S, Path(h): Path<String>) -> R<SnapshotResponse> {
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
