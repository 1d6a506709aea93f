//! The replicated chain's hot paths:
//!
//! - `consensus::loopback`: four validators (one process, real TCP on loopback, the same
//!   code as `poc chain start --validator-key`), no block-time pacing. Empty blocks
//!   finalized per second, and PoC store commits finalized per second with a full
//!   mempool (submitted to one validator, gossiped to the others). The validators' mean
//!   finalization latency is printed after each.
//! - `consensus::replay`: replaying 10,000 blocks of synthetic PoC traffic (16
//!   participants, 40-block epochs: seeds, commits, distributions, votes) from the
//!   database, every app hash checked — what a restarted or new node does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use poc_chain::genesis::{ConsensusValidator, Genesis};
use poc_chain::keys::PrivateKey;
use poc_chain::msgs::Msg;
use poc_chain::state::ChainState;
use poc_chain::tx::{self, TxMsg};
use poc_chain_node::{ChainServices, NodeConfig, db::ChainDb, home};
use poc_consensus::node::{ReplicatedChain, ReplicatedConfig};
use poc_consensus::{Behavior, keys, traffic};

const VALIDATORS: usize = 4;
const PARTICIPANTS: usize = 40;

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Cluster {
    nodes: Vec<ReplicatedChain>,
    _dir: tempfile::TempDir,
    participants: Vec<PrivateKey>,
    sequences: Vec<u64>,
    counts: Vec<u32>,
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let participants = traffic::participant_keys(PARTICIPANTS);
        let mut g: Genesis = traffic::genesis(&participants);
        // One PoC stage that stays open for the whole run: store commits always valid.
        g.params.epoch_params.epoch_length = 1_000_000;
        g.params.epoch_params.epoch_shift = 1_000_000 - 3;
        g.params.epoch_params.poc_stage_duration = 500_000;
        let vkeys: Vec<_> = (0..VALIDATORS).map(|_| keys::generate().unwrap()).collect();
        g.consensus_validators = vkeys
            .iter()
            .enumerate()
            .map(|(i, k)| ConsensusValidator {
                name: format!("validator-{i}"),
                public_key: keys::public_hex(k),
            })
            .collect();
        let p2p: Vec<_> = (0..VALIDATORS).map(|_| free_addr()).collect();
        let mut nodes = Vec::new();
        for (i, k) in vkeys.into_iter().enumerate() {
            let h = dir.path().join(format!("v{i}"));
            home::init(&h, Some(g.clone()), "", 0).unwrap();
            nodes.push(
                poc_consensus::node::start(ReplicatedConfig {
                    node: NodeConfig {
                        home: h,
                        rpc: None,
                        block_time: Duration::ZERO,
                        rest: "127.0.0.1:0".parse().unwrap(),
                        snapshot_interval: 1000,
                        http: Default::default(),
                    },
                    signer: k,
                    p2p: p2p[i],
                    peers: (0..VALIDATORS)
                        .filter(|&j| j != i)
                        .map(|j| format!("validator-{j}@{}", p2p[j]))
                        .collect(),
                    behavior: Behavior::Honest,
                })
                .await
                .unwrap(),
            );
        }
        let c = Cluster {
            nodes,
            _dir: dir,
            participants,
            sequences: vec![0; PARTICIPANTS],
            counts: vec![0; PARTICIPANTS],
        };
        c.wait_all(5).await;
        c
    }

    fn services(&self, i: usize) -> &Arc<ChainServices> {
        &self.nodes[i].chain.services
    }

    fn min_height(&self) -> i64 {
        (0..VALIDATORS)
            .map(|i| self.services(i).head().state.height)
            .min()
            .unwrap()
    }

    async fn wait_all(&self, h: i64) {
        while self.min_height() < h {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// `per` store commits from every participant, signed in sequence.
    fn commits(&mut self, per: usize) -> Vec<Vec<u8>> {
        let head = self.services(0).head();
        let stage = head.state.upcoming_ctx().unwrap().start_of_poc();
        let numbers: Vec<u64> = self
            .participants
            .iter()
            .map(|k| head.state.account_number(&k.address()).unwrap())
            .collect();
        let mut out = Vec::new();
        for _ in 0..per {
            for (i, &account_number) in numbers.iter().enumerate() {
                self.counts[i] += 100;
                let m = Msg::PocV2StoreCommit {
                    creator: self.participants[i].address(),
                    poc_stage_start_block_height: stage,
                    count: self.counts[i],
                    root_hash: vec![i as u8; 32],
                };
                let signer = tx::SignerData {
                    chain_id: "poc-traffic",
                    account_number,
                    sequence: self.sequences[i],
                };
                out.push(tx::sign(
                    &self.participants[i],
                    &signer,
                    &[TxMsg::Direct(m)],
                ));
                self.sequences[i] += 1;
            }
        }
        out
    }

    fn latency_ms(&self) -> f64 {
        (0..VALIDATORS)
            .filter_map(|i| self.services(i).consensus.read().unwrap().clone())
            .map(|c| c.mean_finalization_latency_ms)
            .sum::<f64>()
            / VALIDATORS as f64
    }

    async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
    }
}

fn loopback(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = std::cell::RefCell::new(rt.block_on(Cluster::start()));
    let mut g = c.benchmark_group("consensus::loopback");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    const BLOCKS: i64 = 50;
    g.throughput(Throughput::Elements(BLOCKS as u64));
    g.bench_function("4 validators, empty blocks", |b| {
        b.iter_custom(|iters| {
            let cl = cluster.borrow();
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let h = cl.min_height();
                    cl.wait_all(h + BLOCKS).await;
                }
                start.elapsed()
            })
        })
    });
    eprintln!(
        "  mean finalization latency (first sight to commit): {:.1} ms",
        cluster.borrow().latency_ms()
    );
    const PER: usize = 100;
    let txs_per_iter = (PER * PARTICIPANTS) as u64;
    g.throughput(Throughput::Elements(txs_per_iter));
    g.bench_function("4 validators, PoC store commits", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let txs = cluster.borrow_mut().commits(PER);
                let cl = cluster.borrow();
                let last = tx::tx_hash(txs.last().unwrap());
                let first = tx::tx_hash(&txs[0]);
                total += rt.block_on(async {
                    let start = Instant::now();
                    {
                        let s = cl.services(0);
                        let head = s.head();
                        let mut pool = s.mempool.lock().unwrap();
                        for t in txs {
                            let r = pool.add(&head.state, t);
                            assert_eq!(r.code, 0, "{r:?}");
                        }
                    }
                    loop {
                        let done = (0..VALIDATORS).all(|i| {
                            let db = cl.services(i).db().unwrap();
                            db.tx_location(&last).unwrap().is_some()
                                && db.tx_location(&first).unwrap().is_some()
                        });
                        if done {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    start.elapsed()
                });
            }
            total
        })
    });
    g.finish();
    let cl = cluster.into_inner();
    eprintln!(
        "  mean finalization latency (first sight to commit): {:.1} ms; height {}",
        cl.latency_ms(),
        cl.min_height()
    );
    rt.block_on(cl.shutdown());
}

fn replay(c: &mut Criterion) {
    const BLOCKS: i64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let keys = traffic::participant_keys(16);
    let g = traffic::genesis(&keys);
    home::init(dir.path(), Some(g.clone()), "", 0).unwrap();
    let h = home::Home::new(dir.path());
    let built = Instant::now();
    let txs = {
        let db = ChainDb::open(&h.db_path(), &g).unwrap();
        let mut s = ChainState::genesis_state(&g);
        let mut t = traffic::Traffic::new(keys);
        let mut prev = [0u8; 32];
        let mut n = 0;
        while s.height < BLOCKS {
            let txs = t.next_block(&s, &g);
            n += txs.len();
            let b = s.build_block(prev, s.time + 1, txs);
            let r = s.apply_block(&b).unwrap();
            assert!(r.tx_results.iter().all(|x| x.code == 0));
            prev = b.header.hash();
            db.append(&b, &r, None).unwrap();
        }
        n
    };
    eprintln!(
        "  built {BLOCKS} blocks with {txs} PoC transactions in {:.1} s",
        built.elapsed().as_secs_f64()
    );
    let mut group = c.benchmark_group("consensus::replay");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));
    group.throughput(Throughput::Elements(BLOCKS as u64));
    group.bench_function("10k blocks of PoC traffic", |b| {
        b.iter_batched(
            // Cold, as a fresh process: a replay verifies every signature afresh.
            || (),
            |()| {
                let r = poc_chain_node::replay_all(&h, |_, _| {}).unwrap();
                assert_eq!(r.blocks, BLOCKS);
                r
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, loopback, replay);
criterion_main!(benches);
