//! Deterministic simulation: whole validator clusters in one process on commonware's
//! deterministic runtime and simulated network. Time is simulated, so minutes of chain
//! run in well under a second of wall time, and every run is reproducible.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use commonware_cryptography::{Signer, ed25519};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{Clock, Runner, Supervisor, deterministic};
use commonware_utils::{NZUsize, probability};
use poc_chain::genesis::{ConsensusValidator, Genesis, GenesisParticipant};
use poc_chain::keys::PrivateKey;
use poc_chain::msgs::Msg;
use poc_chain::tx::{self, TxMsg};
use poc_chain_node::{ChainServices, home};
use poc_consensus::validator::{self, ValidatorConfig, channel_quota};
use poc_consensus::{Behavior, PublicKey, ValidatorHandles, codec};

const BLOCK_TIME: Duration = Duration::from_millis(200);

fn account(name: &str) -> PrivateKey {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_mut(8).enumerate() {
        let mut h = DefaultHasher::new();
        (name, i).hash(&mut h);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    PrivateKey::from_bytes(&seed).unwrap()
}

fn genesis(validators: &[ed25519::PrivateKey], accounts: &[PrivateKey]) -> Genesis {
    Genesis {
        chain_id: "poc-sim".into(),
        // Not after the simulated clock's start: blocks may not run ahead of it.
        genesis_time: 0,
        authority: account("authority").address(),
        params: home::local_params(),
        consensus_validators: validators
            .iter()
            .enumerate()
            .map(|(i, k)| ConsensusValidator {
                name: format!("v{i}"),
                public_key: hex::encode(k.public_key().as_ref()),
            })
            .collect(),
        participants: accounts
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisParticipant {
                address: k.address(),
                hex_pub_key: k.public_key_hex(),
                inference_url: format!("http://p{i}.example:8080"),
                validator_key: format!("vk{i}"),
                weight: 10,
            })
            .collect(),
    }
}

/// A grant transaction: distinct per `(i, n)`, valid at any height for sequence `n`,
/// from the first genesis participant (account number 0).
fn grant_tx(chain_id: &str, from: &PrivateKey, n: u64) -> Vec<u8> {
    let grantee = account(&format!("grantee-{n}")).address();
    let m = TxMsg::Direct(Msg::Grant {
        granter: from.address(),
        grantee,
        msg_type_url: "/inference.inference.MsgPoCV2StoreCommit".into(),
    });
    let signer = tx::SignerData {
        chain_id,
        account_number: 0,
        sequence: n,
    };
    tx::sign(from, &signer, &[m])
}

struct Cluster {
    context: deterministic::Context,
    oracle: Oracle<PublicKey, deterministic::Context>,
    keys: Vec<ed25519::PrivateKey>,
    genesis: Genesis,
    dir: tempfile::TempDir,
    nodes: Vec<Option<(Arc<ChainServices>, ValidatorHandles)>>,
    link: Link,
}

impl Cluster {
    async fn new(context: deterministic::Context, n: usize) -> Self {
        let keys: Vec<ed25519::PrivateKey> = (0..n)
            .map(|i| ed25519::PrivateKey::from_seed(i as u64))
            .collect();
        let accounts: Vec<PrivateKey> = (0..2).map(|i| account(&format!("acct{i}"))).collect();
        let genesis = genesis(&keys, &accounts);
        let (network, oracle) = Network::new_with_peers(
            context.child("network"),
            simulated::Config {
                max_size: codec::MAX_MESSAGE_BYTES as u32,
                max_peers_per_set: NZUsize!(n + 1),
                disconnect_on_block: false,
                tracked_peer_sets: NZUsize!(1),
            },
            keys.iter().map(|k| k.public_key()),
        )
        .await;
        network.start();
        let mut c = Cluster {
            context,
            oracle,
            keys,
            genesis,
            dir: tempfile::tempdir().unwrap(),
            nodes: (0..n).map(|_| None).collect(),
            link: Link {
                latency: Duration::from_millis(10),
                jitter: Duration::from_millis(3),
                success_rate: probability!(1.0),
            },
        };
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    c.link(i, j).await;
                }
            }
        }
        c
    }

    async fn link(&mut self, i: usize, j: usize) {
        self.oracle
            .add_link(
                self.keys[i].public_key(),
                self.keys[j].public_key(),
                self.link.clone(),
            )
            .await
            .unwrap();
    }

    async fn unlink(&mut self, i: usize, j: usize) {
        let _ = self
            .oracle
            .remove_link(self.keys[i].public_key(), self.keys[j].public_key())
            .await;
    }

    fn db_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("v{i}.redb"))
    }

    async fn start(&mut self, i: usize, behavior: Behavior) {
        let pk = self.keys[i].public_key();
        let control = self.oracle.control(pk.clone());
        let mut nets = Vec::new();
        for ch in [
            validator::CHANNEL_VOTES,
            validator::CHANNEL_CERTIFICATES,
            validator::CHANNEL_RESOLVER,
            validator::CHANNEL_APP,
        ] {
            nets.push(control.register(ch, channel_quota()).await.unwrap());
        }
        let (services, _) = ChainServices::open(&self.db_path(i), &self.genesis).unwrap();
        let mut cfg = ValidatorConfig::new(
            &self.genesis.chain_id,
            self.keys[i].clone(),
            self.keys.iter().map(|k| k.public_key()).collect(),
            BLOCK_TIME,
        );
        cfg.partition = format!("consensus-{i}");
        cfg.snapshot_interval = 10;
        cfg.behavior = behavior;
        let mut nets = nets.into_iter();
        let handles = validator::start(
            self.context.child("validator").with_attribute("index", i),
            Arc::clone(&services),
            cfg,
            control,
            nets.next().unwrap(),
            nets.next().unwrap(),
            nets.next().unwrap(),
            nets.next().unwrap(),
        )
        .unwrap();
        self.nodes[i] = Some((services, handles));
    }

    /// Kills validator `i` (no clean shutdown) and cuts its links.
    async fn crash(&mut self, i: usize) {
        let (services, handles) = self.nodes[i].take().unwrap();
        handles.abort();
        services.close_db();
        drop(services);
        for j in 0..self.keys.len() {
            if j != i {
                self.unlink(i, j).await;
                self.unlink(j, i).await;
            }
        }
        // Let the aborted tasks wind down before the database is reopened.
        self.context.sleep(Duration::from_millis(50)).await;
    }

    async fn restart(&mut self, i: usize) {
        for j in 0..self.keys.len() {
            if j != i {
                self.link(i, j).await;
                self.link(j, i).await;
            }
        }
        self.start(i, Behavior::Honest).await;
    }

    fn services(&self, i: usize) -> &Arc<ChainServices> {
        &self.nodes[i].as_ref().unwrap().0
    }

    fn height(&self, i: usize) -> i64 {
        self.services(i).head().state.height
    }

    /// Waits (simulated time) until every listed validator reaches `h`.
    async fn wait_all(&self, which: &[usize], h: i64, limit: Duration) {
        let start = self.context.current();
        loop {
            if which.iter().all(|&i| self.height(i) >= h) {
                return;
            }
            let waited = self.context.current().duration_since(start).unwrap();
            assert!(
                waited < limit,
                "heights {:?} did not all reach {h} in {limit:?}",
                which.iter().map(|&i| self.height(i)).collect::<Vec<_>>()
            );
            self.context.sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every listed validator holds the same block hash and app hash at heights 1..=h.
    fn assert_same_chain(&self, which: &[usize], h: i64) {
        let reference = which[0];
        let db0 = self.services(reference).db().unwrap();
        for height in 1..=h {
            let b0 = db0.block(height).unwrap().expect("block stored");
            let r0 = db0.result(height).unwrap().expect("result stored");
            for &i in &which[1..] {
                let db = self.services(i).db().unwrap();
                let b = db.block(height).unwrap().expect("block stored");
                let r = db.result(height).unwrap().expect("result stored");
                assert_eq!(b.header.hash(), b0.header.hash(), "block {height} on {i}");
                assert_eq!(r.app_hash, r0.app_hash, "app hash {height} on {i}");
            }
        }
    }

    fn submit(&self, i: usize, tx: Vec<u8>) {
        let s = self.services(i);
        let head = s.head();
        let r = s.mempool.lock().unwrap().add(&head.state, tx);
        assert_eq!(r.code, 0, "{r:?}");
    }
}

fn run(seed: u64, f: impl AsyncFnOnce(deterministic::Context) + Send + 'static) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cfg = deterministic::Config::new()
        .with_seed(seed)
        .with_timeout(Some(Duration::from_secs(3600)));
    deterministic::Runner::new(cfg).start(|context| async move { f(context).await });
}

#[test]
fn four_validators_finalize_the_same_blocks_and_include_gossiped_transactions() {
    run(1, async |context| {
        let mut c = Cluster::new(context, 4).await;
        for i in 0..4 {
            c.start(i, Behavior::Honest).await;
        }
        c.wait_all(&[0, 1, 2, 3], 3, Duration::from_secs(30)).await;
        // Transactions sent to validator 0 only; every validator includes them in turn.
        let from = account("acct0");
        let txs: Vec<Vec<u8>> = (0..20).map(|n| grant_tx("poc-sim", &from, n)).collect();
        for t in &txs {
            c.submit(0, t.clone());
        }
        let target = c.height(0) + 20;
        c.wait_all(&[0, 1, 2, 3], target, Duration::from_secs(60))
            .await;
        c.assert_same_chain(&[0, 1, 2, 3], target);
        for i in 0..4 {
            let db = c.services(i).db().unwrap();
            for t in &txs {
                let (h, idx) = db
                    .tx_location(&tx::tx_hash(t))
                    .unwrap()
                    .expect("transaction included");
                let r = db.result(h).unwrap().unwrap();
                assert_eq!(r.tx_results[idx as usize].code, 0);
            }
            assert_eq!(c.services(i).head().state.sequences[&from.address()], 20);
        }
        // Blocks came from more than one proposer: gossip reached the others.
        let db = c.services(1).db().unwrap();
        let with_txs: BTreeSet<i64> = txs
            .iter()
            .map(|t| db.tx_location(&tx::tx_hash(t)).unwrap().unwrap().0)
            .collect();
        assert!(!with_txs.is_empty());
        let status = c.services(2).consensus.read().unwrap().clone().unwrap();
        assert!(status.validating);
        assert_eq!(status.validators, 4);
        assert_eq!(status.peers.len(), 3);
        assert!(status.finalized_blocks >= target as u64);
    });
}

#[test]
fn a_crashed_validator_restarts_and_catches_up_while_the_rest_go_on() {
    run(2, async |context| {
        let mut c = Cluster::new(context, 4).await;
        for i in 0..4 {
            c.start(i, Behavior::Honest).await;
        }
        c.wait_all(&[0, 1, 2, 3], 10, Duration::from_secs(60)).await;
        c.crash(3).await;
        // Three of four (= n - f) keep finalizing.
        let target = c.height(0) + 40;
        c.wait_all(&[0, 1, 2], target, Duration::from_secs(120))
            .await;
        c.restart(3).await;
        // It replays its own storage, then fetches the blocks it missed from peers.
        let target = c.height(0) + 10;
        c.wait_all(&[0, 1, 2, 3], target, Duration::from_secs(120))
            .await;
        c.assert_same_chain(&[0, 1, 2, 3], target);
    });
}

#[test]
fn a_byzantine_proposer_of_invalid_blocks_cannot_break_safety_or_liveness() {
    run(3, async |context| {
        let mut c = Cluster::new(context, 4).await;
        for i in 0..3 {
            c.start(i, Behavior::Honest).await;
        }
        c.start(3, Behavior::InvalidBlocks).await;
        c.wait_all(&[0, 1, 2], 30, Duration::from_secs(120)).await;
        c.assert_same_chain(&[0, 1, 2], 30);
        // No finalized block came from the byzantine leader: each applies, and the
        // byzantine node (which cannot execute its own blocks) agrees on what was finalized.
        let db = c.services(0).db().unwrap();
        let mut prev = [0u8; 32];
        for h in 1..=30 {
            let b = db.block(h).unwrap().unwrap();
            assert_eq!(b.header.prev_hash, prev);
            prev = b.header.hash();
        }
        // The byzantine leader's views were skipped: views ran ahead of heights.
        let st = c.services(0).consensus.read().unwrap().clone().unwrap();
        assert!(
            st.view as i64 >= c.height(0) + 5,
            "view {} at height {}",
            st.view,
            c.height(0)
        );
        let h3 = c.height(3);
        assert!(h3 > 0);
        c.assert_same_chain(&[0, 3], h3.min(30));
    });
}

#[test]
fn a_partition_stalls_finality_and_heals() {
    run(4, async |context| {
        let mut c = Cluster::new(context, 4).await;
        for i in 0..4 {
            c.start(i, Behavior::Honest).await;
        }
        c.wait_all(&[0, 1, 2, 3], 5, Duration::from_secs(60)).await;
        // Split 2 | 2: neither side has a quorum of 3.
        for i in [0, 1] {
            for j in [2, 3] {
                c.unlink(i, j).await;
                c.unlink(j, i).await;
            }
        }
        c.context.sleep(Duration::from_secs(2)).await;
        let stalled: Vec<i64> = (0..4).map(|i| c.height(i)).collect();
        c.context.sleep(Duration::from_secs(20)).await;
        let later: Vec<i64> = (0..4).map(|i| c.height(i)).collect();
        // At most the blocks already certified before the split finalize.
        for i in 0..4 {
            assert!(later[i] <= stalled[i] + 2, "{stalled:?} -> {later:?}");
        }
        for i in [0, 1] {
            for j in [2, 3] {
                c.link(i, j).await;
                c.link(j, i).await;
            }
        }
        let target = later.iter().max().unwrap() + 10;
        c.wait_all(&[0, 1, 2, 3], target, Duration::from_secs(180))
            .await;
        c.assert_same_chain(&[0, 1, 2, 3], target);
    });
}

#[test]
fn a_single_validator_chain_finalizes_alone_at_the_block_time() {
    run(5, async |context| {
        let mut c = Cluster::new(context, 1).await;
        c.start(0, Behavior::Honest).await;
        let t0 = c.context.current();
        c.wait_all(&[0], 20, Duration::from_secs(60)).await;
        let elapsed = c.context.current().duration_since(t0).unwrap();
        // Paced: at most one block per block time.
        assert!(
            elapsed >= BLOCK_TIME * 19,
            "20 blocks in {elapsed:?} at a {BLOCK_TIME:?} block time"
        );
        let status = c.services(0).consensus.read().unwrap().clone().unwrap();
        assert!(status.synced && status.peers.is_empty());
    });
}

#[test]
fn the_same_seed_gives_the_same_chain() {
    let chain = |seed: u64| {
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let o = out.clone();
        run(seed, async move |context| {
            let mut c = Cluster::new(context, 4).await;
            for i in 0..4 {
                c.start(i, Behavior::Honest).await;
            }
            c.wait_all(&[0, 1, 2, 3], 15, Duration::from_secs(60)).await;
            let db = c.services(0).db().unwrap();
            let hashes: Vec<[u8; 32]> = (1..=15)
                .map(|h| db.block(h).unwrap().unwrap().header.hash())
                .collect();
            *o.lock().unwrap() = hashes;
        });
        out.lock().unwrap().clone()
    };
    assert_eq!(chain(7), chain(7));
}
