//! What goes into the next engine step (`docs/mlnode.md`, "Scheduling"): a pure decision
//! from the work waiting and the token budget, executed by the compute thread.
//!
//! Under the `mixed` policy one step is one forward over PoC sequences (full-length
//! prefill rows, no cache) and chat rows (one decode token per running chat, then prefill
//! chunks of new prompts). No step holds more than the budget's tokens, except a single
//! PoC sequence longer than the budget; while chat waits, PoC takes at most its share of
//! the budget and chat at least the rest.

/// How chat requests and continuous PoC generation share the compute thread
/// (`docs/mlnode.md`, "Scheduling").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChatPolicy {
    /// Every step is one forward over PoC sequences and chat rows together, within a
    /// token budget of which PoC takes at most a share while chat waits.
    #[default]
    Mixed,
    /// PoC owns the thread while it generates: chat gets 503 with the reference's error
    /// body and running chats are aborted (the reference's vLLM node).
    PocPriority,
    /// Chat is served during PoC and has priority: PoC batches wait while any chat is
    /// pending or running (the reference's `gm/poc-layers` node).
    ChatPriority,
}

impl ChatPolicy {
    /// Every policy.
    pub const ALL: [ChatPolicy; 3] = [Self::Mixed, Self::PocPriority, Self::ChatPriority];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mixed => "mixed",
            Self::PocPriority => "poc-priority",
            Self::ChatPriority => "chat-priority",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name.trim())
    }
}

/// How the compute thread shares the model between chat and PoC (from
/// [`crate::PocSettings::scheduler`], which holds the defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    /// Which of the three ways.
    pub policy: ChatPolicy,
    /// Most chat sessions running or waiting (429 beyond).
    pub chat_max_queue: usize,
    /// Most tokens (rows) of one step.
    pub max_batch_tokens: usize,
    /// The fraction of the budget PoC may take while chat waits (`mixed`).
    pub poc_share: f64,
}

/// PoC work that is waiting: continuous generation or a `/generate` job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PocWork {
    /// Positions per sequence (`seq_len`).
    pub seq_len: usize,
    /// Most nonces one forward may take (the request's batch size).
    pub batch_size: usize,
    /// Nonces still to do (`usize::MAX` for continuous generation).
    pub remaining: usize,
}

/// One chat session as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatWork {
    /// Tokens not yet fed to the model (the rest of the prompt, or the last sampled token).
    pub pending: usize,
    /// Whether the prompt has been fed completely (the session is decoding).
    pub decoding: bool,
}

/// Rows of one step by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepRows {
    /// PoC rows (nonces × `seq_len`).
    pub poc: usize,
    /// Chat prompt rows.
    pub chat_prefill: usize,
    /// Chat decode rows (one per generating chat).
    pub chat_decode: usize,
}

/// The contents of one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// PoC nonces in this step (0: none).
    pub poc_nonces: usize,
    /// `(session index, tokens fed)`, in ascending session order.
    pub chat: Vec<(usize, usize)>,
}

impl StepPlan {
    /// Chat rows that are decode tokens, and rows that are prefill: `(decode, prefill)`.
    pub fn chat_rows(&self, chats: &[ChatWork]) -> (usize, usize) {
        self.chat.iter().fold((0, 0), |(d, p), &(i, n)| {
            if chats[i].decoding {
                (d + n, p)
            } else {
                (d, p + n)
            }
        })
    }
}

/// Nonces of a PoC-only step: as many whole sequences as the budget holds (at least
/// one), at most the request's batch size and what is left of the work.
pub fn poc_only(budget: usize, work: PocWork) -> usize {
    (budget / work.seq_len.max(1))
        .clamp(1, work.batch_size.max(1))
        .min(work.remaining)
}

/// The next step under `mixed` (and the chat step of the other policies, `poc = None`).
/// `cursor` rotates which decoding sessions go first when they exceed the chat budget.
pub fn plan(
    budget: usize,
    poc_share: f64,
    poc: Option<PocWork>,
    chats: &[ChatWork],
    cursor: usize,
) -> StepPlan {
    let budget = budget.max(1);
    let chat_waiting = chats.iter().any(|c| c.pending > 0);
    let share = poc_share.clamp(0.0, 1.0);
    let poc_nonces = match poc {
        None => 0,
        Some(w) if !chat_waiting => poc_only(budget, w),
        Some(w) => poc_only((budget as f64 * share) as usize, w),
    };
    if !chat_waiting {
        return StepPlan {
            poc_nonces,
            chat: vec![],
        };
    }
    let poc_tokens = poc.map_or(0, |w| poc_nonces * w.seq_len);
    let reserved = ((budget as f64 * (1.0 - share)) as usize).max(1);
    let mut left = budget.saturating_sub(poc_tokens).max(reserved);
    let mut chat = Vec::new();
    // Decode tokens first: one per running chat, in rotation.
    let n = chats.len();
    for k in 0..n {
        let i = (cursor + k) % n;
        if left == 0 {
            break;
        }
        if chats[i].decoding && chats[i].pending > 0 {
            chat.push((i, 1));
            left -= 1;
        }
    }
    // Then prefill chunks, oldest session first.
    for (i, c) in chats.iter().enumerate() {
        if left == 0 {
            break;
        }
        if !c.decoding && c.pending > 0 {
            let take = c.pending.min(left);
            chat.push((i, take));
            left -= take;
        }
    }
    chat.sort_unstable();
    StepPlan { poc_nonces, chat }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoding(n: usize) -> Vec<ChatWork> {
        vec![
            ChatWork {
                pending: 1,
                decoding: true
            };
            n
        ]
    }

    const GEN: PocWork = PocWork {
        seq_len: 1024,
        batch_size: 32,
        remaining: usize::MAX,
    };

    #[test]
    fn poc_alone_fills_the_budget_with_whole_sequences() {
        let p = plan(8192, 0.8, Some(GEN), &[], 0);
        assert_eq!(p.poc_nonces, 8);
        assert!(p.chat.is_empty());
        // A sequence longer than the budget still runs, one at a time.
        assert_eq!(plan(100, 0.8, Some(GEN), &[], 0).poc_nonces, 1);
        // Never more than the request's batch size or what is left of a job.
        let small = PocWork {
            seq_len: 16,
            batch_size: 4,
            remaining: 3,
        };
        assert_eq!(plan(8192, 0.8, Some(small), &[], 0).poc_nonces, 3);
    }

    #[test]
    fn with_chat_poc_takes_its_share_and_every_decoding_chat_gets_a_token() {
        let chats = decoding(4);
        let p = plan(8192, 0.8, Some(GEN), &chats, 0);
        assert_eq!(p.poc_nonces, 6); // floor(0.8 * 8192 / 1024)
        assert_eq!(p.chat, vec![(0, 1), (1, 1), (2, 1), (3, 1)]);
        assert_eq!(p.chat_rows(&chats), (4, 0));
    }

    #[test]
    fn prefill_is_chunked_to_what_the_budget_leaves() {
        let chats = vec![
            ChatWork {
                pending: 1,
                decoding: true,
            },
            ChatWork {
                pending: 5000,
                decoding: false,
            },
            ChatWork {
                pending: 300,
                decoding: false,
            },
        ];
        let p = plan(8192, 0.8, Some(GEN), &chats, 0);
        // 6 sequences take 6144 tokens; chat gets the other 2048: one decode token, then
        // 2047 tokens of the oldest prompt; the newer prompt waits.
        assert_eq!(p.poc_nonces, 6);
        assert_eq!(p.chat, vec![(0, 1), (1, 2047)]);
        assert_eq!(p.chat_rows(&chats), (1, 2047));
        // Without PoC, chat has the whole budget.
        let p = plan(8192, 0.8, None, &chats, 0);
        assert_eq!(p.chat, vec![(0, 1), (1, 5000), (2, 300)]);
        let p = plan(4000, 0.8, None, &chats, 0);
        assert_eq!(p.chat, vec![(0, 1), (1, 3999)]);
    }

    #[test]
    fn chat_keeps_its_reserve_when_poc_sequences_exceed_the_share() {
        // One 1024-token sequence is more than 0.8 of a 512 budget: it still runs, and
        // chat keeps floor(0.2 * 512) = 102 rows.
        let chats = vec![ChatWork {
            pending: 500,
            decoding: false,
        }];
        let p = plan(512, 0.8, Some(GEN), &chats, 0);
        assert_eq!(p.poc_nonces, 1);
        assert_eq!(p.chat, vec![(0, 102)]);
        // A share of 1.0 still leaves chat one row per step.
        let p = plan(512, 1.0, Some(GEN), &chats, 0);
        assert_eq!(p.chat, vec![(0, 1)]);
    }

    #[test]
    fn decode_tokens_rotate_when_chats_exceed_the_budget() {
        let chats = decoding(5);
        let a = plan(3, 0.8, None, &chats, 0);
        assert_eq!(a.chat, vec![(0, 1), (1, 1), (2, 1)]);
        let b = plan(3, 0.8, None, &chats, 3);
        assert_eq!(b.chat, vec![(0, 1), (3, 1), (4, 1)]);
    }

    #[test]
    fn idle_sessions_and_no_work_plan_nothing() {
        let idle = vec![ChatWork {
            pending: 0,
            decoding: true,
        }];
        assert_eq!(plan(8192, 0.8, None, &idle, 0), StepPlan::default());
        assert_eq!(plan(8192, 0.8, None, &[], 0), StepPlan::default());
    }
}
