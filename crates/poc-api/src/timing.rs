//! When to send: store commits and votes timed from the chain (`docs/api.md`, "Timing").
//!
//! A transaction counts only if a block inside its window includes it, and the windows
//! are a few blocks long: with the default local genesis the exchange window (store
//! commits) is 8 blocks and the validation window (votes) 6, i.e. 4 s and 3 s at 500 ms
//! blocks. Fixed intervals (a commit every 5 s, votes after 30 s) miss them. Here every
//! decision is a pure function of the configured interval, the window's last height, the
//! current height and the block time observed so far ([`BlockClock`]): send periodically,
//! but never later than a margin before the window closes, and give up (loudly) on what
//! can no longer land.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use poc_chain::msgs::{Msg, ValidationPayloadV2};

/// Block time assumed before two heights have been observed.
pub const DEFAULT_BLOCK_TIME: Duration = Duration::from_secs(1);
/// Least time kept between sending a transaction and its window's end (inclusion, and
/// one retry of a rejected batch).
pub const MIN_SEND_MARGIN: Duration = Duration::from_secs(2);

/// The block time seen on the chain: a moving average of the time per block between
/// observed heights.
#[derive(Debug, Clone, Default)]
pub struct BlockClock {
    last: Option<(i64, Instant)>,
    estimate: Option<Duration>,
}

impl BlockClock {
    /// Records that `height` was seen at `at`.
    pub fn observe(&mut self, height: i64, at: Instant) {
        if let Some((h, t)) = self.last {
            if height <= h {
                return;
            }
            let blocks = u32::try_from(height - h).unwrap_or(u32::MAX).max(1);
            let per_block = at.saturating_duration_since(t) / blocks;
            let per_block = per_block.clamp(Duration::from_millis(10), Duration::from_secs(600));
            self.estimate = Some(match self.estimate {
                // Weight 1/4 for the newest interval.
                Some(e) => (e * 3 + per_block) / 4,
                None => per_block,
            });
        }
        self.last = Some((height, at));
    }

    /// The estimated time per block.
    pub fn block_time(&self) -> Duration {
        self.estimate.unwrap_or(DEFAULT_BLOCK_TIME)
    }
}

/// The window of a PoC message: the chain accepts it in blocks up to `end` inclusive;
/// the window spans `blocks` blocks in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Last height whose block may include the message.
    pub end: i64,
    /// Length of the whole window, in blocks.
    pub blocks: i64,
}

impl Window {
    /// Whether a transaction sent now, seen at `height`, can still be included: the next
    /// block (`height + 1`) is the earliest that can hold it.
    pub fn open_at(&self, height: i64) -> bool {
        height < self.end
    }

    /// Time until the last block that can include a transaction sent at `height`.
    pub fn time_left(&self, height: i64, block_time: Duration) -> Duration {
        let blocks = (self.end - height).max(0);
        block_time * u32::try_from(blocks).unwrap_or(u32::MAX)
    }

    /// The margin kept before the end: a third of the window, at least three blocks and
    /// at least [`MIN_SEND_MARGIN`].
    pub fn margin(&self, block_time: Duration) -> Duration {
        let third = block_time * u32::try_from((self.blocks / 3).max(0)).unwrap_or(u32::MAX);
        third.max(block_time * 3).max(MIN_SEND_MARGIN)
    }

    /// Whether `height` is inside the final margin (send now, whatever the interval).
    pub fn closing(&self, height: i64, block_time: Duration) -> bool {
        self.time_left(height, block_time) <= self.margin(block_time)
    }

    /// `interval`, shortened so that at least four sends fit in the window.
    pub fn interval(&self, interval: Duration, block_time: Duration) -> Duration {
        let whole = block_time * u32::try_from(self.blocks.max(1)).unwrap_or(u32::MAX);
        interval.min(whole / 4).max(Duration::from_millis(50))
    }
}

/// The last store-commit attempt: when, and at which observed height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// When it was sent.
    pub at: Instant,
    /// The chain height the node saw then.
    pub height: i64,
}

/// Whether to send a store commit now: the count grew since the last commit, the window
/// is open, the chain moved on since the last attempt (it takes one commit per
/// participant per block), and either the (window-shortened) interval has passed or the
/// window is closing.
pub fn commit_due(
    grown: bool,
    last: Option<Attempt>,
    now: Instant,
    height: i64,
    window: Window,
    interval: Duration,
    block_time: Duration,
) -> bool {
    if !grown || !window.open_at(height) || last.is_some_and(|a| height <= a.height) {
        return false;
    }
    let last_sent = last.map(|a| a.at);
    let every = window.interval(interval, block_time);
    last_sent.is_none_or(|t| now.saturating_duration_since(t) >= every)
        || window.closing(height, block_time)
}

/// The votes of one stage waiting to be sent.
#[derive(Debug, Clone)]
struct StageVotes {
    votes: Vec<ValidationPayloadV2>,
    first: Instant,
    window: Window,
}

/// What [`VoteQueue::take`] hands out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VoteFlush {
    /// One batch per stage whose window is open.
    pub send: Vec<VoteBatch>,
    /// `(stage, votes)` dropped because their window has closed.
    pub expired: Vec<(i64, usize)>,
}

/// The votes of one stage, to be sent in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct VoteBatch {
    /// The stage height.
    pub stage: i64,
    /// How many votes `msg` carries.
    pub votes: usize,
    /// The window in which the chain accepts them.
    pub window: Window,
    /// The `MsgSubmitPocValidationsV2`.
    pub msg: Msg,
}

/// Pending votes, merged per stage: flushed when `flush_size` are pending, when the
/// oldest has waited `flush_timeout` (shortened to fit the window), or when a stage's
/// window is closing; votes whose window has closed are dropped.
#[derive(Debug, Clone)]
pub struct VoteQueue {
    by_stage: BTreeMap<i64, StageVotes>,
    flush_size: usize,
    flush_timeout: Duration,
}

impl VoteQueue {
    /// An empty queue.
    pub fn new(flush_size: usize, flush_timeout: Duration) -> Self {
        Self {
            by_stage: BTreeMap::new(),
            flush_size: flush_size.max(1),
            flush_timeout,
        }
    }

    /// Queues a vote for `stage`, whose votes the chain accepts inside `window`.
    pub fn push(
        &mut self,
        stage: i64,
        window: Window,
        participant: String,
        weight: i64,
        now: Instant,
    ) {
        let e = self.by_stage.entry(stage).or_insert_with(|| StageVotes {
            votes: Vec::new(),
            first: now,
            window,
        });
        e.votes.push(ValidationPayloadV2 {
            participant_address: participant,
            validated_weight: weight,
        });
    }

    /// Votes waiting.
    pub fn len(&self) -> usize {
        self.by_stage.values().map(|s| s.votes.len()).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.by_stage.is_empty()
    }

    /// Whether a flush is due at `now`, with the chain at `height`.
    pub fn due(&self, now: Instant, height: i64, block_time: Duration) -> bool {
        if self.is_empty() {
            return false;
        }
        self.len() >= self.flush_size
            || self.by_stage.values().any(|s| {
                !s.window.open_at(height)
                    || s.window.closing(height, block_time)
                    || now.saturating_duration_since(s.first)
                        >= s.window.interval(self.flush_timeout, block_time)
            })
    }

    /// Takes everything pending: messages for `creator` for the stages still open, and
    /// the counts dropped for the closed ones.
    pub fn take(&mut self, height: i64, creator: &str) -> VoteFlush {
        let mut out = VoteFlush::default();
        for (stage, s) in std::mem::take(&mut self.by_stage) {
            if s.window.open_at(height) {
                out.send.push(VoteBatch {
                    stage,
                    votes: s.votes.len(),
                    window: s.window,
                    msg: Msg::SubmitPocValidationsV2 {
                        creator: creator.to_owned(),
                        poc_stage_start_block_height: stage,
                        validations: s.votes,
                    },
                });
            } else {
                out.expired.push((stage, s.votes.len()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_clock_follows_the_chain() {
        let t0 = Instant::now();
        let mut c = BlockClock::default();
        assert_eq!(c.block_time(), DEFAULT_BLOCK_TIME);
        c.observe(10, t0);
        assert_eq!(c.block_time(), DEFAULT_BLOCK_TIME);
        c.observe(12, t0 + 1000 * MS);
        assert_eq!(c.block_time(), 500 * MS);
        for i in 1..40 {
            c.observe(12 + i, t0 + 1000 * MS + 100 * MS * i as u32);
        }
        assert!(
            (c.block_time().as_millis() as i64 - 100).abs() <= 2,
            "{:?}",
            c.block_time()
        );
        c.observe(5, t0); // older heights are ignored
        assert!((c.block_time().as_millis() as i64 - 100).abs() <= 2);
        c.observe(51 + (1 << 32), t0 + 2000 * MS); // 51: the last height seen
        assert!(
            c.block_time() >= Duration::from_millis(10),
            "a jump of 2^32 blocks does not divide by zero"
        );
    }

    #[test]
    fn windows_shorten_intervals_and_keep_a_margin() {
        // The default local genesis at 500 ms blocks: votes for heights up to 13 blocks
        // after the stage start, a 6-block window.
        let w = Window {
            end: 113,
            blocks: 6,
        };
        let bt = 500 * MS;
        assert_eq!(w.margin(bt), MIN_SEND_MARGIN);
        assert_eq!(w.interval(Duration::from_secs(30), bt), 750 * MS);
        assert!(!w.closing(108, bt) && w.closing(109, bt));
        assert!(w.open_at(112) && !w.open_at(113));
        // A long mainnet-like window keeps the configured interval and a third as margin.
        let w = Window {
            end: 1000,
            blocks: 600,
        };
        let bt = Duration::from_secs(6);
        assert_eq!(
            w.interval(Duration::from_secs(30), bt),
            Duration::from_secs(30)
        );
        assert_eq!(w.margin(bt), Duration::from_secs(1200));
    }

    #[test]
    fn commits_fit_the_exchange_window() {
        let t0 = Instant::now();
        let bt = 500 * MS;
        // Exchange window [S+1, S+8] of the default local genesis, S = 100.
        let w = Window {
            end: 108,
            blocks: 8,
        };
        let five = Duration::from_secs(5);
        assert!(commit_due(true, None, t0, 101, w, five, bt));
        assert!(
            !commit_due(false, None, t0, 101, w, five, bt),
            "nothing new"
        );
        let at = |h| Some(Attempt { at: t0, height: h });
        // The 5 s interval shrinks to 1 s in a 4 s window.
        assert!(!commit_due(true, at(101), t0 + 900 * MS, 102, w, five, bt));
        assert!(commit_due(true, at(101), t0 + 1000 * MS, 103, w, five, bt));
        // Inside the closing margin every grown count is committed at once, but once per
        // block: the chain takes one commit per participant per block.
        assert!(commit_due(true, at(103), t0 + 10 * MS, 104, w, five, bt));
        assert!(!commit_due(true, at(104), t0 + 10 * MS, 104, w, five, bt));
        assert!(!commit_due(true, at(104), t0 + 2000 * MS, 104, w, five, bt));
        // A commit seen at the last height would land after it.
        assert!(!commit_due(true, None, t0, 108, w, five, bt));
    }

    #[test]
    fn votes_flush_before_their_window_closes() {
        let t0 = Instant::now();
        let bt = 500 * MS;
        let mut q = VoteQueue::new(10, Duration::from_secs(30));
        let w = Window {
            end: 113,
            blocks: 6,
        };
        assert!(!q.due(t0, 107, bt));
        q.push(100, w, "a".into(), 40, t0);
        assert_eq!(q.len(), 1);
        assert!(!q.due(t0, 107, bt), "one vote, window wide open");
        assert!(
            q.due(t0 + 750 * MS, 107, bt),
            "the 30 s timeout shrinks to the window"
        );
        assert!(q.due(t0, 109, bt), "closing");
        let f = q.take(109, "v");
        assert_eq!(f.send.len(), 1);
        assert!(f.expired.is_empty());
        match &f.send[0].msg {
            Msg::SubmitPocValidationsV2 {
                creator,
                poc_stage_start_block_height,
                validations,
            } => assert_eq!(
                (
                    creator.as_str(),
                    *poc_stage_start_block_height,
                    validations.len()
                ),
                ("v", 100, 1)
            ),
            m => panic!("{m:?}"),
        }
        assert!(q.is_empty());
        // Size triggers a flush; closed windows are dropped, not sent.
        let mut q = VoteQueue::new(3, Duration::from_secs(3600));
        let long = Window {
            end: 10_000,
            blocks: 600,
        };
        q.push(100, w, "a".into(), 1, t0);
        q.push(200, long, "b".into(), -1, t0);
        assert!(!q.due(t0, 50, bt));
        q.push(200, long, "c".into(), 5, t0);
        assert!(q.due(t0, 50, bt));
        let f = q.take(113, "v");
        assert_eq!(f.expired, vec![(100, 1)]);
        assert_eq!(f.send.len(), 1);
        assert_eq!(f.send[0].window, long);
    }
}
