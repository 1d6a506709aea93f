//! Weights from PoC (`docs/protocol/chain-and-api.md` §5.1–§5.5): vote counting, the V2 weight
//! calculator with optional slots and time normalisation, and the V1 calculator.

use std::collections::{BTreeMap, BTreeSet};

use crate::address;
use crate::decimal::{Dec, LegacyDec};
use crate::epoch::EpochParams;
use crate::msgs::MlNodeWeight;
use crate::records::{ActiveParticipant, MlNodeAllocation, ValidationSnapshot};
use crate::slots;
use crate::state::ChainState;

/// Block time the normalisation assumes, in seconds.
pub const NOMINAL_BLOCK_SECONDS: &str = "5.41";

/// Slot inputs: `(snapshot app hash, snapshot validator weights, N)`.
pub type SlotInputs = (String, Vec<(String, i64)>, u32);

/// How votes are counted (§5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteRules {
    /// Guardian account addresses for the tie-break; `None` when guardians are disabled.
    pub guardians: Option<Vec<String>>,
    /// `(app_hash, snapshot weights, N)` when slots are on.
    pub slots: Option<SlotInputs>,
}

/// `pocValidated` (baseline v0.2.10): `votes` are `(validator, validated_weight)` of
/// validators present in `weights`.
pub fn poc_validated(
    participant: &str,
    weights: &BTreeMap<String, i64>,
    votes: &[(String, i64)],
    rules: &VoteRules,
) -> bool {
    if weights.is_empty() {
        return true;
    }
    let (total, valid, invalid) = match &rules.slots {
        Some((app_hash, snap, n)) if *n > 0 => {
            let assigned = slots::assign(app_hash, participant, snap, *n);
            let by: BTreeMap<&str, i64> = votes.iter().map(|(v, w)| (v.as_str(), *w)).collect();
            let (mut valid, mut invalid) = (0i64, 0i64);
            for v in &assigned {
                match by.get(v.as_str()) {
                    Some(w) if *w > 0 => valid += 1,
                    Some(_) => invalid += 1,
                    None => {}
                }
            }
            (assigned.len() as i64, valid, invalid)
        }
        _ => {
            let total: i64 = weights.values().filter(|w| **w >= 0).sum();
            let (mut valid, mut invalid) = (0i64, 0i64);
            for (v, vote) in votes {
                let w = weights.get(v).copied().unwrap_or(0);
                if *vote > 0 {
                    valid += w;
                } else {
                    invalid += w;
                }
            }
            (total, valid, invalid)
        }
    };
    let threshold = total * 2 / 3;
    if valid > threshold {
        return true;
    }
    if invalid > threshold {
        return false;
    }
    // Guardian tie-break.
    let Some(guardians) = rules.guardians.as_ref().filter(|g| !g.is_empty()) else {
        return false;
    };
    let (mut g_valid, mut g_invalid) = (0, 0);
    for (v, vote) in votes {
        if guardians.iter().any(|g| g == v) {
            if *vote > 0 {
                g_valid += 1;
            } else {
                g_invalid += 1;
            }
        }
    }
    g_valid >= 1 && g_invalid == 0
}

/// The V1 rule: accepted iff validators with `fraud_detected = false` hold more than half
/// of the total validator weight (no tie-break).
pub fn poc_validated_v1(weights: &BTreeMap<String, i64>, votes: &[(String, bool)]) -> bool {
    if weights.is_empty() {
        return true;
    }
    let total: i64 = weights.values().filter(|w| **w >= 0).sum();
    let valid: i64 = votes
        .iter()
        .filter(|(_, fraud)| !fraud)
        .map(|(v, _)| weights.get(v).copied().unwrap_or(0))
        .sum();
    valid > total / 2
}

/// The time normalisation factor (§5.4): `((stage + exchange) × 5.41 s) / measured`, in
/// shopspring arithmetic, then as an 18-place `LegacyDec`; 1 when not measurable.
pub fn time_factor(snapshot: &ValidationSnapshot, p: &EpochParams) -> LegacyDec {
    let (g, e) = (
        snapshot.generation_start_timestamp,
        snapshot.exchange_end_timestamp,
    );
    if g == 0 || e == 0 || e - g <= 0 {
        return LegacyDec::one();
    }
    let nominal = Dec::from_i128(i128::from(p.poc_stage_duration + p.poc_exchange_duration))
        .mul(&Dec::parse(NOMINAL_BLOCK_SECONDS).expect("constant"));
    match nominal.div(&Dec::from_i128(i128::from(e - g))) {
        Some(f) => f.to_legacy_fixed18(),
        None => LegacyDec::one(),
    }
}

/// What one participant brings to the V2 calculator.
#[derive(Debug, Clone)]
pub struct CalcEntry {
    pub address: String,
    /// Committed count (after the inference-node filter).
    pub count: u32,
    /// Distribution (after the filter); `None` when it never landed.
    pub distribution: Option<Vec<MlNodeWeight>>,
    /// `(validator, validated_weight)` of every stored vote.
    pub votes: Vec<(String, i64)>,
}

/// The shared V2 `WeightCalculator` (§5.1 step 7). Entries must come sorted by address.
pub fn calculate_v2(
    state: &ChainState,
    entries: &[CalcEntry],
    seed_epoch: u64,
    validator_weights: &BTreeMap<String, i64>,
    combined: &LegacyDec,
    rules: &VoteRules,
) -> Vec<ActiveParticipant> {
    let mut out = Vec::new();
    for e in entries {
        let votes: Vec<(String, i64)> = e
            .votes
            .iter()
            .filter(|(v, _)| validator_weights.contains_key(v))
            .cloned()
            .collect();
        if votes.is_empty() {
            continue;
        }
        let Some(total) = combined.mul_i64(i64::from(e.count)).truncate_i64() else {
            continue;
        };
        let Some(dist) = &e.distribution else {
            continue;
        };
        let mut nodes: Vec<MlNodeAllocation> = dist
            .iter()
            .map(|w| MlNodeAllocation {
                node_id: w.node_id.clone(),
                poc_weight: combined
                    .mul_i64(i64::from(w.weight))
                    .truncate_i64()
                    .unwrap_or(0),
                poc_slot: false,
            })
            .collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        if total < 1 {
            continue;
        }
        let Some(p) = state.participants.get(&e.address) else {
            continue;
        };
        if p.validator_key.is_empty() {
            continue;
        }
        if !poc_validated(&e.address, validator_weights, &votes, rules) {
            continue;
        }
        let Some(seed) = state.seeds.get(&(seed_epoch, e.address.clone())) else {
            continue;
        };
        out.push(ActiveParticipant {
            index: e.address.clone(),
            validator_key: p.validator_key.clone(),
            weight: total,
            inference_url: p.inference_url.clone(),
            seed: seed.clone(),
            ml_nodes: nodes,
        });
    }
    out
}

impl ChainState {
    /// Guardians for the tie-break, as account addresses.
    pub fn guardian_rules(&self) -> Option<Vec<String>> {
        let p = &self.params;
        p.extension_params.genesis_guardian_enabled.then(|| {
            p.genesis_guardian_params
                .guardian_addresses
                .iter()
                .filter_map(|g| address::to_account(g))
                .collect()
        })
    }

    /// Whether the allowlist admits `addr`.
    pub fn is_allowed(&self, addr: &str) -> bool {
        let p = &self.params;
        !p.participant_access_params.use_participant_allowlist
            || p.extension_params
                .allowed_participant_addresses
                .iter()
                .any(|x| x == addr)
    }

    /// Validator weights of the effective epoch's group.
    pub fn current_validator_weights(&self) -> BTreeMap<String, i64> {
        self.epoch_groups
            .get(&self.effective_epoch.index)
            .map(|g| g.members.clone())
            .unwrap_or_default()
    }

    /// `(combined factor, vote rules, validator weights)` for a stage, from its snapshot.
    fn stage_inputs(&self, stage: i64) -> (LegacyDec, VoteRules, BTreeMap<String, i64>) {
        let pp = &self.params.poc_params;
        let mut weights = self.current_validator_weights();
        let mut rules = VoteRules {
            guardians: self.guardian_rules(),
            slots: None,
        };
        let mut factor = LegacyDec::one();
        if let Some(snap) = self.snapshots.get(&stage) {
            if pp.validation_slots > 0 {
                rules.slots = Some((
                    hex::encode(snap.app_hash),
                    snap.validator_weights.clone(),
                    pp.validation_slots,
                ));
                weights = snap.validator_weights.iter().cloned().collect();
            }
            if pp.poc_normalization_enabled {
                factor = time_factor(snap, &self.params.epoch_params);
            }
        }
        let combined = pp.weight_scale().to_legacy().mul(&factor);
        (combined, rules, weights)
    }

    fn votes_v2(&self, stage: i64) -> BTreeMap<String, Vec<(String, i64)>> {
        let mut by: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for ((_, p, v), val) in self
            .validations_v2
            .range((stage, String::new(), String::new())..)
        {
            if val.poc_stage_start_block_height != stage {
                break;
            }
            by.entry(p.clone())
                .or_default()
                .push((v.clone(), val.validated_weight));
        }
        by
    }

    /// POC_SLOT=true node ids per participant in the effective epoch's group.
    fn inference_nodes(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if let Some(g) = self.epoch_groups.get(&self.effective_epoch.index) {
            for p in &g.participants {
                for n in p.ml_nodes.iter().filter(|n| n.poc_slot) {
                    out.entry(p.index.clone())
                        .or_default()
                        .insert(n.node_id.clone());
                }
            }
        }
        out
    }

    /// Calculator entries for a stage; `filter` applies the inference-node filter and the
    /// registration/allowlist/seed pre-checks of regular PoC.
    fn v2_entries(&self, stage: i64, regular: Option<u64>) -> Vec<CalcEntry> {
        let votes = self.votes_v2(stage);
        let inference = if regular.is_some() {
            self.inference_nodes()
        } else {
            BTreeMap::new()
        };
        let mut out = Vec::new();
        for ((_, addr), c) in self.commits.range((stage, String::new())..) {
            if c.poc_stage_start_block_height != stage {
                break;
            }
            let mut count = c.count;
            let mut distribution = self
                .distributions
                .get(&(stage, addr.clone()))
                .map(|d| d.weights.clone());
            if let Some(epoch) = regular {
                let Some(dist) = distribution.take() else {
                    continue;
                };
                let skip = inference.get(addr);
                let kept: Vec<MlNodeWeight> = dist
                    .into_iter()
                    .filter(|w| !skip.is_some_and(|s| s.contains(&w.node_id)))
                    .collect();
                let sum: u64 = kept.iter().map(|w| u64::from(w.weight)).sum();
                if sum == 0 {
                    continue;
                }
                count = u32::try_from(sum).unwrap_or(u32::MAX);
                distribution = Some(kept);
                if !self.is_allowed(addr)
                    || !self.participants.contains_key(addr)
                    || !self.seeds.contains_key(&(epoch, addr.clone()))
                {
                    continue;
                }
            }
            out.push(CalcEntry {
                address: addr.clone(),
                count,
                distribution,
                votes: votes.get(addr).cloned().unwrap_or_default(),
            });
        }
        out
    }

    /// Nodes of the effective epoch that keep their weight (POC_SLOT=true), per participant.
    fn preserved(&self, upcoming_index: u64) -> BTreeMap<String, ActiveParticipant> {
        let mut out = BTreeMap::new();
        if upcoming_index <= 1 {
            return out;
        }
        if let Some(g) = self.epoch_groups.get(&self.effective_epoch.index) {
            for p in &g.participants {
                let nodes: Vec<MlNodeAllocation> = p
                    .ml_nodes
                    .iter()
                    .filter(|n| n.poc_slot && !n.node_id.is_empty())
                    .cloned()
                    .collect();
                if nodes.is_empty() {
                    continue;
                }
                let weight = nodes.iter().map(|n| n.poc_weight).sum();
                out.insert(
                    p.index.clone(),
                    ActiveParticipant {
                        weight,
                        ml_nodes: nodes,
                        ..p.clone()
                    },
                );
            }
        }
        out
    }

    /// `ComputeNewWeights` (V2) for the upcoming epoch starting at `stage`.
    pub fn compute_new_weights_v2(
        &self,
        upcoming_index: u64,
        stage: i64,
    ) -> Vec<ActiveParticipant> {
        let (combined, rules, weights) = self.stage_inputs(stage);
        let entries = self.v2_entries(stage, Some(upcoming_index));
        let computed = calculate_v2(self, &entries, upcoming_index, &weights, &combined, &rules);
        merge(self.preserved(upcoming_index), computed)
    }

    /// The V2 confirmation calculator: `address → weight` for an event.
    pub fn confirmation_weights_v2(
        &self,
        epoch_index: u64,
        trigger_height: i64,
    ) -> BTreeMap<String, i64> {
        let (combined, rules, weights) = self.stage_inputs(trigger_height);
        let entries = self.v2_entries(trigger_height, None);
        calculate_v2(self, &entries, epoch_index, &weights, &combined, &rules)
            .into_iter()
            .map(|p| (p.index, p.weight))
            .collect()
    }

    /// `ComputeNewWeightsV1` for a stage (§5.5). `filter_inference` drops batches of the
    /// effective epoch's inference-serving nodes (regular PoC).
    pub fn compute_new_weights_v1(
        &self,
        seed_epoch: u64,
        stage: i64,
        filter_inference: bool,
    ) -> Vec<ActiveParticipant> {
        let weights = self.current_validator_weights();
        let scale = self.params.poc_params.weight_scale().to_legacy();
        let inference = if filter_inference {
            self.inference_nodes()
        } else {
            BTreeMap::new()
        };
        // participant → node → weight
        let mut per: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        let mut seen: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for ((_, addr, _), b) in self
            .batches_v1
            .range((stage, String::new(), String::new())..)
        {
            if b.poc_stage_start_block_height != stage {
                break;
            }
            if inference.get(addr).is_some_and(|s| s.contains(&b.node_id)) {
                continue;
            }
            let seen = seen.entry(addr.clone()).or_default();
            let fresh = b.nonces.iter().filter(|n| seen.insert(**n)).count() as i64;
            let w = scale.mul_i64(fresh).truncate_i64().unwrap_or(0);
            *per.entry(addr.clone())
                .or_default()
                .entry(b.node_id.clone())
                .or_default() += w;
        }
        let mut votes: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
        for ((_, p, v), val) in self
            .validations_v1
            .range((stage, String::new(), String::new())..)
        {
            if val.poc_stage_start_block_height != stage {
                break;
            }
            if weights.contains_key(v) {
                votes
                    .entry(p.clone())
                    .or_default()
                    .push((v.clone(), val.fraud_detected));
            }
        }
        let mut out = Vec::new();
        for (addr, nodes) in per {
            let total: i64 = nodes.values().sum();
            if total < 1 || !self.is_allowed(&addr) {
                continue;
            }
            let Some(p) = self.participants.get(&addr) else {
                continue;
            };
            if p.validator_key.is_empty() {
                continue;
            }
            let v = votes.get(&addr).cloned().unwrap_or_default();
            if v.is_empty() || !poc_validated_v1(&weights, &v) {
                continue;
            }
            let Some(seed) = self.seeds.get(&(seed_epoch, addr.clone())) else {
                continue;
            };
            out.push(ActiveParticipant {
                index: addr.clone(),
                validator_key: p.validator_key.clone(),
                weight: total,
                inference_url: p.inference_url.clone(),
                seed: seed.clone(),
                ml_nodes: nodes
                    .into_iter()
                    .map(|(node_id, poc_weight)| MlNodeAllocation {
                        node_id,
                        poc_weight,
                        poc_slot: false,
                    })
                    .collect(),
            });
        }
        out
    }
}

/// Merges preserved participants with PoC results: node arrays merged by node id
/// (preserved first), weight = Σ poc_weight; PoC-only participants appended.
fn merge(
    mut preserved: BTreeMap<String, ActiveParticipant>,
    computed: Vec<ActiveParticipant>,
) -> Vec<ActiveParticipant> {
    let mut out = Vec::new();
    let mut extra = Vec::new();
    for c in computed {
        match preserved.get_mut(&c.index) {
            Some(p) => {
                for n in c.ml_nodes {
                    if !p.ml_nodes.iter().any(|x| x.node_id == n.node_id) {
                        p.ml_nodes.push(n);
                    }
                }
                p.weight = p.ml_nodes.iter().map(|n| n.poc_weight).sum();
                p.seed = c.seed;
                p.validator_key = c.validator_key;
                p.inference_url = c.inference_url;
            }
            None => extra.push(c),
        }
    }
    out.extend(preserved.into_values());
    out.extend(extra);
    out
}

/// Marks which nodes keep serving inference during the next PoC (POC_SLOT=true):
/// per participant, nodes sorted by weight (descending) then id, the first
/// `floor(n × fraction)` of them — never all, so every participant still proves compute.
pub fn allocate_poc_slots(participants: &mut [ActiveParticipant], fraction: &Dec) {
    for p in participants {
        let n = p.ml_nodes.len();
        let k = Dec::from_u64(n as u64).mul(fraction).to_plain_string();
        let k: usize = k
            .split('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let k = k.min(n.saturating_sub(1));
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|a, b| {
            p.ml_nodes[*b]
                .poc_weight
                .cmp(&p.ml_nodes[*a].poc_weight)
                .then(p.ml_nodes[*a].node_id.cmp(&p.ml_nodes[*b].node_id))
        });
        for (rank, i) in order.into_iter().enumerate() {
            p.ml_nodes[i].poc_slot = rank < k;
        }
    }
}

#[cfg(test)]
mod tests;
