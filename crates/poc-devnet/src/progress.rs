//! The live view on stderr: a bar for the chain and one per participant.

use poc_chain::api::EpochInfoResponse;
use poc_chain::epoch::Phase;
use poc_chain_client::ChainClient;

use crate::{Member, received};

/// The live view on stderr.
pub(crate) struct Progress {
    bars: Option<(
        indicatif::MultiProgress,
        indicatif::ProgressBar,
        Vec<indicatif::ProgressBar>,
    )>,
}

impl Progress {
    pub(crate) fn new(on: bool, members: &[Member]) -> Self {
        if !on {
            return Self { bars: None };
        }
        let mp = indicatif::MultiProgress::with_draw_target(
            indicatif::ProgressDrawTarget::stderr_with_hz(4),
        );
        let style = indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("template");
        let head = mp.add(indicatif::ProgressBar::new_spinner().with_style(style.clone()));
        let rows = members
            .iter()
            .map(|m| {
                let b = mp.add(indicatif::ProgressBar::new_spinner().with_style(style.clone()));
                b.set_message(format!(
                    "p{} {}",
                    m.index,
                    m.cheat.map(|c| c.name()).unwrap_or("honest")
                ));
                b
            })
            .collect();
        Self {
            bars: Some((mp, head, rows)),
        }
    }

    pub(crate) async fn update(
        &self,
        h: i64,
        info: &EpochInfoResponse,
        phase: Phase,
        members: &[Member],
        c: &ChainClient,
    ) {
        let Some((_, head, rows)) = &self.bars else {
            return;
        };
        let ev = info
            .active_confirmation_poc_event
            .as_ref()
            .map(|e| {
                format!(
                    " | confirmation {}/{} {:?}",
                    e.epoch_index, e.event_sequence, e.phase
                )
            })
            .unwrap_or_default();
        head.set_message(format!(
            "height {h} | epoch {} (effective {}) | {}{ev}",
            info.latest_epoch.index,
            info.effective_epoch.index,
            phase.as_str()
        ));
        head.tick();
        let stage = info.latest_epoch.poc_start_block_height;
        let votes = c.validations_v2(stage).await.ok();
        for (m, b) in members.iter().zip(rows) {
            let addr = m.account.address();
            let committed = c
                .store_commit(stage, &addr)
                .await
                .map(|s| s.count)
                .unwrap_or(0);
            let (v, i) = votes
                .as_ref()
                .and_then(|v| v.poc_validation.iter().find(|r| r.participant == addr))
                .map(|r| {
                    (
                        r.poc_validation
                            .iter()
                            .filter(|x| x.validated_weight > 0)
                            .count(),
                        r.poc_validation
                            .iter()
                            .filter(|x| x.validated_weight <= 0)
                            .count(),
                    )
                })
                .unwrap_or((0, 0));
            b.set_message(format!(
                "p{} {:<15} artifacts {:>7} | committed {:>7} | votes +{v} -{i}",
                m.index,
                m.cheat.map(|c| c.name()).unwrap_or("honest"),
                received(m),
                committed
            ));
            b.tick();
        }
    }

    pub(crate) fn finish(&self) {
        if let Some((mp, head, rows)) = &self.bars {
            head.finish_and_clear();
            for r in rows {
                r.finish_and_clear();
            }
            let _ = mp.clear();
        }
    }
}
