//! What the API node starts on a new block, decided from the chain alone
//! (`docs/protocol/chain-and-api.md` §6.2, §6.4, §6.8, §6.9): the epoch seed, PoC
//! generation and validation of a regular stage or a confirmation event, in v2 or v1.
//!
//! [`plan`] is a pure function of the chain view and of what was already started
//! ([`Triggers`]): each step fires once per stage (or epoch), and the [`Action`]s it
//! returns are carried out by the node's tracker, which fetches block hashes, talks to
//! the ML nodes and sends transactions. An action that cannot start (a block hash not
//! available yet, a transaction not sent) resets its trigger, so a later block retries.
//!
//! [`plan_commits`] decides, as often as the commit worker ticks, the store commits, the
//! report of artifacts that missed the commit window and the weight distribution of the
//! current v2 stage (§6.6), from the chain view, the store's count and the clock, with
//! what it remembers of the stage in a [`CommitMemo`]; the commit worker carries them out.

use poc_chain::confirmation::ConfirmationPhase;
use poc_chain::epoch::Phase;

use std::time::{Duration, Instant};

use crate::phase::ChainView;
use crate::timing::{Attempt, Window, commit_due};

/// A one-shot step of the PoC timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `MsgSubmitSeed` for the upcoming epoch.
    Seed,
    /// Generation of the regular stage.
    Generation,
    /// Validation of the regular stage.
    Validation,
    /// Generation of a confirmation event.
    ConfirmationGeneration,
    /// Validation of a confirmation event.
    ConfirmationValidation,
}

/// Which steps were already started: the epoch of the seed, the stage height of the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triggers {
    seed: Option<i64>,
    generation: Option<i64>,
    validation: Option<i64>,
    confirmation_generation: Option<i64>,
    confirmation_validation: Option<i64>,
}

impl Triggers {
    fn slot(&mut self, trigger: Trigger) -> &mut Option<i64> {
        match trigger {
            Trigger::Seed => &mut self.seed,
            Trigger::Generation => &mut self.generation,
            Trigger::Validation => &mut self.validation,
            Trigger::ConfirmationGeneration => &mut self.confirmation_generation,
            Trigger::ConfirmationValidation => &mut self.confirmation_validation,
        }
    }

    /// Records `trigger` for `key` (an epoch for [`Trigger::Seed`], else a stage height)
    /// and says whether it was not recorded for it before.
    fn fire(&mut self, trigger: Trigger, key: i64) -> bool {
        self.slot(trigger).replace(key) != Some(key)
    }

    /// Forgets that `trigger` fired, so the next block's plan starts it again.
    pub fn reset(&mut self, trigger: Trigger) {
        *self.slot(trigger) = None;
    }
}

/// Where the seed block hash of a stage comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedHash {
    /// The hash of the block at this height (a regular stage: its first block).
    BlockAt(i64),
    /// Known from the chain (a confirmation event's `poc_seed_block_hash`).
    Known(String),
}

/// A step to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `MsgSubmitSeed` for `epoch`.
    SubmitSeed {
        /// The upcoming epoch.
        epoch: u64,
    },
    /// Start PoC v2 generation on the ML nodes.
    Generate {
        /// The trigger to reset if it cannot start.
        trigger: Trigger,
        /// Stage height.
        stage: i64,
        /// Seed block hash.
        seed: SeedHash,
        /// The last height the stage takes commits at; `None`: no commit window (nothing
        /// to start).
        expires: Option<i64>,
    },
    /// Validate every committed participant of a v2 stage.
    Validate {
        /// The trigger to reset if it cannot start.
        trigger: Trigger,
        /// Stage height.
        stage: i64,
        /// Seed block hash.
        seed: SeedHash,
        /// Height of the block whose hash seeds the sampling.
        sampling_at: i64,
        /// The window votes may land in; `None`: none (reset and retry).
        window: Option<Window>,
    },
    /// Start PoC v1 generation on the ML nodes.
    GenerateV1 {
        /// The trigger to reset if it cannot start.
        trigger: Trigger,
        /// Stage height.
        stage: i64,
        /// Seed block hash.
        seed: SeedHash,
        /// The last height batches are accepted at.
        expires: i64,
    },
    /// Validate the v1 batches of a stage.
    ValidateV1 {
        /// The trigger to reset if it cannot start.
        trigger: Trigger,
        /// Stage height.
        stage: i64,
        /// Seed block hash.
        seed: SeedHash,
        /// Height of the block whose hash seeds the sampling.
        sampling_at: i64,
        /// The last height votes are accepted at.
        deadline: i64,
    },
}

/// What to start at this chain view. Records every step it returns in `triggers`.
pub fn plan(v: &ChainView, triggers: &mut Triggers) -> Vec<Action> {
    let mut out = Vec::new();
    let ctx = v.latest_ctx();
    let info = &v.info;
    let upcoming = v.upcoming();
    let s = ctx.start_of_poc();
    let phase = v.phase();
    let generating = matches!(phase, Phase::PoCGenerate | Phase::PoCGenerateWindDown);
    let validating = matches!(phase, Phase::PoCValidate | Phase::PoCValidateWindDown);
    let epoch = info.latest_epoch.index;
    if upcoming
        && (generating || validating)
        && triggers.fire(Trigger::Seed, i64::try_from(epoch).unwrap_or(i64::MAX))
    {
        out.push(Action::SubmitSeed { epoch });
    }
    let v2 = v.should_use_v2();
    // Regular PoC.
    if upcoming && generating && v.accept_generated() && triggers.fire(Trigger::Generation, s) {
        out.push(if v2 {
            Action::Generate {
                trigger: Trigger::Generation,
                stage: s,
                seed: SeedHash::BlockAt(s),
                expires: v.commit_window(s).map(|w| w.end),
            }
        } else {
            Action::GenerateV1 {
                trigger: Trigger::Generation,
                stage: s,
                seed: SeedHash::BlockAt(s),
                expires: ctx.end_of_poc_validation(),
            }
        });
    }
    // The v1 flow waits for the first block of validation: its sampling hash.
    let validation_open = v2 || v.height > ctx.start_of_poc_validation();
    if upcoming && validating && validation_open && triggers.fire(Trigger::Validation, s) {
        out.push(if v2 {
            Action::Validate {
                trigger: Trigger::Validation,
                stage: s,
                seed: SeedHash::BlockAt(s),
                sampling_at: ctx.start_of_poc_validation(),
                window: v.vote_window(s),
            }
        } else {
            Action::ValidateV1 {
                trigger: Trigger::Validation,
                stage: s,
                seed: SeedHash::BlockAt(s),
                sampling_at: ctx.start_of_poc_validation(),
                deadline: ctx.end_of_poc_validation(),
            }
        });
    }
    // Confirmation PoC.
    if let Some(e) = v.event() {
        let ep = &info.params.epoch_params;
        let t_h = e.trigger_height;
        let seed = SeedHash::Known(e.poc_seed_block_hash.clone());
        if e.phase == ConfirmationPhase::Generation
            && e.in_batch_window(v.height, ep)
            && triggers.fire(Trigger::ConfirmationGeneration, t_h)
        {
            let trigger = Trigger::ConfirmationGeneration;
            out.push(if v2 {
                Action::Generate {
                    trigger,
                    stage: t_h,
                    seed: seed.clone(),
                    expires: v.commit_window(t_h).map(|w| w.end),
                }
            } else {
                Action::GenerateV1 {
                    trigger,
                    stage: t_h,
                    seed: seed.clone(),
                    expires: e.validation_end(ep),
                }
            });
        }
        if e.phase == ConfirmationPhase::Validation
            && triggers.fire(Trigger::ConfirmationValidation, t_h)
        {
            let trigger = Trigger::ConfirmationValidation;
            out.push(if v2 {
                Action::Validate {
                    trigger,
                    stage: t_h,
                    seed,
                    sampling_at: e.validation_start(ep),
                    window: v.vote_window(t_h),
                }
            } else {
                Action::ValidateV1 {
                    trigger,
                    stage: t_h,
                    seed,
                    sampling_at: e.validation_start(ep),
                    deadline: e.validation_end(ep),
                }
            });
        }
    }
    out
}

/// How long a weight distribution that failed waits before it is tried again.
pub const DISTRIBUTION_RETRY: Duration = Duration::from_secs(30);

/// What the commit worker remembers of the current stage (reset when the stage changes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitMemo {
    stage: i64,
    /// The count of the last store commit the chain included.
    pub last_committed: u64,
    /// The last commit sent (when and at what height).
    pub last_attempt: Option<Attempt>,
    /// Whether the end of the stage's commit window was already reported.
    window_closed: bool,
    distribution_attempt: Option<Instant>,
    /// Whether the weight distribution was sent (or found on chain).
    pub distributed: bool,
}

/// A step of the commit worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitAction {
    /// Flush the stage's store and, if its flushed count passed the last commit, commit
    /// it before `window` closes.
    Commit {
        /// The stage height.
        stage: i64,
        /// The window the chain accepts the commit in.
        window: Window,
    },
    /// The commit window closed with `late` stored artifacts never committed.
    ReportLate {
        /// The stage height.
        stage: i64,
        /// The count of the last included commit (0: none).
        committed: u64,
        /// Artifacts stored beyond it.
        late: u64,
    },
    /// Send the stage's weight distribution.
    Distribute {
        /// The stage height.
        stage: i64,
    },
}

/// The clock and the settings a commit plan reads.
#[derive(Debug, Clone, Copy)]
pub struct CommitClock {
    pub now: Instant,
    /// `commit_interval_s`: the longest time between two commits of a growing store.
    pub interval: Duration,
    /// The chain's observed block time.
    pub block_time: Duration,
}

/// The commit worker's steps at one tick: a store commit when due
/// ([`commit_due`]) while the stage's commit window is open; once it has closed, one
/// report of the artifacts that came too late; then the weight distribution when the
/// chain expects it, retried every [`DISTRIBUTION_RETRY`] until it is sent. `stored` is
/// the count of the current stage's store (`None`: there is no store, nothing to do).
pub fn plan_commits(
    memo: &mut CommitMemo,
    v: &ChainView,
    stored: Option<u64>,
    clock: CommitClock,
) -> Vec<CommitAction> {
    if !v.should_use_v2() {
        return Vec::new();
    }
    let stage = v.current_stage().height();
    if memo.stage != stage {
        *memo = CommitMemo {
            stage,
            ..CommitMemo::default()
        };
    }
    let Some(stored) = stored else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let window = v.commit_window(stage);
    if let Some(w) = window
        && v.accept_store_commit(stage)
    {
        let grown = stored > memo.last_committed;
        if commit_due(
            grown,
            memo.last_attempt,
            clock.now,
            v.height,
            w,
            clock.interval,
            clock.block_time,
        ) {
            out.push(CommitAction::Commit { stage, window: w });
        }
    } else if window.is_some_and(|w| !w.open_at(v.height)) && !memo.window_closed {
        memo.window_closed = true;
        let late = stored.saturating_sub(memo.last_committed);
        if late > 0 {
            out.push(CommitAction::ReportLate {
                stage,
                committed: memo.last_committed,
                late,
            });
        }
    }
    if v.should_distribute()
        && !memo.distributed
        && memo
            .distribution_attempt
            .is_none_or(|t| clock.now.saturating_duration_since(t) >= DISTRIBUTION_RETRY)
    {
        memo.distribution_attempt = Some(clock.now);
        out.push(CommitAction::Distribute { stage });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use poc_chain::confirmation::ConfirmationEvent;

    /// Stage S = 200 of epoch 2 (epoch 1 effective): generation [200, 208), wind-down
    /// [208, 212), validation from 212 (StartOfPoCValidation), end 222.
    fn view(h: i64, v2: bool, event: Option<ConfirmationEvent>) -> ChainView {
        crate::phase::tests::view(h, 200, 1, event, v2, v2)
    }

    #[test]
    fn a_regular_v2_stage_seeds_generates_then_validates_once_each() {
        let mut t = Triggers::default();
        assert_eq!(plan(&view(199, true, None), &mut t), vec![]);
        let a = plan(&view(201, true, None), &mut t);
        assert_eq!(
            a,
            vec![
                Action::SubmitSeed { epoch: 2 },
                Action::Generate {
                    trigger: Trigger::Generation,
                    stage: 200,
                    seed: SeedHash::BlockAt(200),
                    expires: Some(212),
                },
            ]
        );
        // Nothing again while the stage generates.
        assert_eq!(plan(&view(205, true, None), &mut t), vec![]);
        let a = plan(&view(213, true, None), &mut t);
        assert_eq!(
            a,
            vec![Action::Validate {
                trigger: Trigger::Validation,
                stage: 200,
                seed: SeedHash::BlockAt(200),
                sampling_at: 212,
                window: view(213, true, None).vote_window(200),
            }]
        );
        assert_eq!(plan(&view(215, true, None), &mut t), vec![]);
    }

    #[test]
    fn a_reset_trigger_fires_again_on_the_next_block() {
        let mut t = Triggers::default();
        let first = plan(&view(213, true, None), &mut t);
        assert!(matches!(
            first[..],
            [Action::SubmitSeed { .. }, Action::Validate { .. }]
        ));
        t.reset(Trigger::Validation);
        let again = plan(&view(214, true, None), &mut t);
        assert!(matches!(again[..], [Action::Validate { stage: 200, .. }]));
        t.reset(Trigger::Seed);
        assert_eq!(
            plan(&view(215, true, None), &mut t),
            vec![Action::SubmitSeed { epoch: 2 }]
        );
    }

    #[test]
    fn the_v1_flow_waits_for_the_sampling_block_and_runs_to_the_end_of_validation() {
        let mut t = Triggers::default();
        let a = plan(&view(201, false, None), &mut t);
        assert_eq!(
            a[1],
            Action::GenerateV1 {
                trigger: Trigger::Generation,
                stage: 200,
                seed: SeedHash::BlockAt(200),
                expires: 222,
            }
        );
        // At StartOfPoCValidation itself its block hash (the sampling seed) is not final.
        assert_eq!(plan(&view(212, false, None), &mut t), vec![]);
        assert_eq!(
            plan(&view(213, false, None), &mut t),
            vec![Action::ValidateV1 {
                trigger: Trigger::Validation,
                stage: 200,
                seed: SeedHash::BlockAt(200),
                sampling_at: 212,
                deadline: 222,
            }]
        );
    }

    #[test]
    fn confirmation_events_use_their_seed_hash_and_own_windows() {
        let ep = view(0, true, None).info.params.epoch_params;
        let ev = |phase| ConfirmationEvent {
            epoch_index: 1,
            event_sequence: 1,
            trigger_height: 150,
            generation_start_height: 151,
            phase,
            poc_seed_block_hash: "ab".into(),
        };
        let gen_ev = ev(ConfirmationPhase::Generation);
        let (lo, hi) = (gen_ev.batch_window(&ep).start, gen_ev.batch_window(&ep).end);
        let mut t = Triggers::default();
        // Before its batch window nothing starts; inside, generation once.
        assert_eq!(
            plan(&view(lo - 1, true, Some(gen_ev.clone())), &mut t),
            vec![]
        );
        let at = view(lo, true, Some(gen_ev.clone()));
        let a = plan(&at, &mut t);
        assert_eq!(
            a,
            vec![Action::Generate {
                trigger: Trigger::ConfirmationGeneration,
                stage: 150,
                seed: SeedHash::Known("ab".into()),
                expires: at.commit_window(150).map(|w| w.end),
            }]
        );
        assert_eq!(plan(&view(hi, true, Some(gen_ev)), &mut t), vec![]);
        let val_ev = ev(ConfirmationPhase::Validation);
        let h = val_ev.validation_start(&ep);
        let at = view(h, false, Some(val_ev.clone()));
        assert_eq!(
            plan(&at, &mut t),
            vec![Action::ValidateV1 {
                trigger: Trigger::ConfirmationValidation,
                stage: 150,
                seed: SeedHash::Known("ab".into()),
                sampling_at: h,
                deadline: val_ev.validation_end(&ep),
            }]
        );
    }

    fn clock(now: Instant) -> CommitClock {
        CommitClock {
            now,
            interval: Duration::from_secs(5),
            block_time: Duration::from_secs(1),
        }
    }

    #[test]
    fn commits_while_the_window_is_open_then_reports_the_late_artifacts_once() {
        let t0 = Instant::now();
        let mut m = CommitMemo::default();
        let v = view(201, true, None);
        let w = v.commit_window(200).expect("the stage has a commit window");
        // No store yet: nothing, but the memo is the stage's.
        assert_eq!(plan_commits(&mut m, &v, None, clock(t0)), vec![]);
        // Nothing stored: nothing to commit.
        assert_eq!(plan_commits(&mut m, &v, Some(0), clock(t0)), vec![]);
        let a = plan_commits(&mut m, &v, Some(10), clock(t0));
        assert_eq!(
            a,
            vec![CommitAction::Commit {
                stage: 200,
                window: w
            }]
        );
        // The worker sent it and the chain included it.
        m.last_attempt = Some(Attempt {
            at: t0,
            height: 201,
        });
        m.last_committed = 10;
        // The store did not grow: nothing; it grew, but the interval has not passed and
        // the chain did not move on: nothing.
        assert_eq!(
            plan_commits(&mut m, &view(202, true, None), Some(10), clock(t0)),
            vec![]
        );
        assert_eq!(plan_commits(&mut m, &v, Some(15), clock(t0)), vec![]);
        // The window closed with 5 never committed: one report, not two.
        let after = view(w.end + 1, true, None);
        assert_eq!(after.current_stage().height(), 200);
        let a = plan_commits(&mut m, &after, Some(15), clock(t0));
        assert_eq!(
            a.first(),
            Some(&CommitAction::ReportLate {
                stage: 200,
                committed: 10,
                late: 5,
            })
        );
        let again = plan_commits(&mut m, &after, Some(15), clock(t0));
        assert!(
            !again
                .iter()
                .any(|a| matches!(a, CommitAction::ReportLate { .. }))
        );
    }

    #[test]
    fn the_distribution_is_retried_until_sent_and_a_new_stage_starts_afresh() {
        let t0 = Instant::now();
        let mut m = CommitMemo::default();
        // Validation of stage 200: the chain expects the distribution.
        let v = view(214, true, None);
        assert!(v.should_distribute());
        let d = CommitAction::Distribute { stage: 200 };
        assert!(plan_commits(&mut m, &v, Some(10), clock(t0)).contains(&d));
        // Failed: not again before the retry time, then again.
        assert!(
            !plan_commits(&mut m, &v, Some(10), clock(t0 + Duration::from_secs(5))).contains(&d)
        );
        assert!(plan_commits(&mut m, &v, Some(10), clock(t0 + DISTRIBUTION_RETRY)).contains(&d));
        m.distributed = true;
        assert!(
            !plan_commits(&mut m, &v, Some(10), clock(t0 + 3 * DISTRIBUTION_RETRY)).contains(&d)
        );
        // v1 stages have no commits.
        let mut v1 = CommitMemo::default();
        assert_eq!(
            plan_commits(&mut v1, &view(201, false, None), Some(10), clock(t0)),
            vec![]
        );
        // The next stage forgets the last one.
        let mut next = m.clone();
        let later = crate::phase::tests::view(401, 400, 2, None, true, true);
        assert_eq!(later.current_stage().height(), 400);
        plan_commits(&mut next, &later, None, clock(t0));
        assert_eq!(next.last_committed, 0);
        assert!(!next.distributed);
    }
}
