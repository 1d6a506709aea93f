use super::*;
use commonware_consensus::types::{Epoch, Round, View};
use commonware_cryptography::Signer;
use commonware_runtime::{Runner, deterministic};

fn app(
    ctx: deterministic::Context,
    dir: &std::path::Path,
) -> (App<deterministic::Context>, Arc<ChainServices>) {
    let keys = crate::traffic::participant_keys(2);
    let mut g = crate::traffic::genesis(&keys);
    // Not after the simulated clock: blocks may not run ahead of the verifier's clock.
    g.genesis_time = 0;
    let (services, _) = ChainServices::open(&dir.join("db.redb"), &g).unwrap();
    let me = ed25519::PrivateKey::from_seed(1).public_key();
    let cfg = AppConfig {
        me,
        validators: 1,
        block_time: Duration::ZERO,
        snapshot_interval: 0,
        behavior: Behavior::Honest,
    };
    let (a, _mailbox) = App::new(ctx, cfg, Arc::clone(&services));
    (a, services)
}

fn ctx(parent: [u8; 32]) -> Ctx {
    Context {
        round: Round::new(Epoch::zero(), View::new(5)),
        leader: ed25519::PrivateKey::from_seed(1).public_key(),
        parent: (View::new(4), sha256::Digest(parent)),
    }
}

#[test]
fn a_forged_body_is_never_stored_under_an_honest_header() {
    deterministic::Runner::default().start(|context| async move {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, services) = app(context, dir.path());
        let peer = ed25519::PrivateKey::from_seed(9).public_key();
        let head = services.head();
        let good = head.state.build_block(head.hash, head.state.time, vec![]);
        let mut forged = good.clone();
        forged.txs.push(vec![1, 2, 3]);
        assert_eq!(forged.header.hash(), good.header.hash());
        assert!(a.remember(forged, Origin::Relay(peer.clone())).is_none());
        let mut foreign = good.clone();
        foreign.header.chain_id = "other".into();
        assert!(a.remember(foreign, Origin::Relay(peer.clone())).is_none());
        let d = a.remember(good, Origin::Relay(peer)).unwrap();
        // The honest body verifies.
        let now = a.context.current();
        assert_eq!(a.check(&ctx(head.hash), d, now), Some(true));
    });
}

#[test]
fn a_finalized_block_is_valid_only_on_its_own_parent() {
    deterministic::Runner::default().start(|context| async move {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, services) = app(context, dir.path());
        let head = services.head();
        let b1 = head.state.build_block(head.hash, head.state.time, vec![]);
        let mut s = head.state.clone();
        let r = s.apply_block(&b1).unwrap();
        services.commit_block(&b1, &r, s, 0).unwrap();
        let d1 = b1.header.hash();
        let now = a.context.current();
        // Replayed on its own parent (after a restart): valid.
        assert_eq!(a.check(&ctx(b1.header.prev_hash), d1, now), Some(true));
        // Proposed again on top of itself (or anything else): refused.
        assert_eq!(a.check(&ctx(d1), d1, now), Some(false));
        // The genesis digest is never a block.
        assert_eq!(a.check(&ctx(d1), GENESIS.0, now), Some(false));
    });
}
