//! From the variants' distances to the report: summaries, threshold, mismatch rates,
//! single-validator power, the weighted vote and the phase length. Pure: the same
//! distances and settings give the same report (`docs/calibrate.md`).

use serde::{Deserialize, Serialize};

use crate::CalibrateError;
use crate::phase::Production;
use crate::power::{Test, Weights, mixed_rate, rejection_probability};
use crate::summary::{Summary, mismatch_rate, percentile, sorted_finite};

/// The settings of the analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Honest percentile the threshold is set at (98: the reference report's).
    pub percentile: f64,
    pub test: Test,
    /// Validator sample sizes `n` for the power table.
    pub sample_sizes: Vec<u64>,
    /// Cheated fractions of nonces.
    pub fractions: Vec<f64>,
    /// The sample size of the vote simulation and of the phase length.
    pub sample_size: u64,
    /// Monte Carlo rounds per vote probability.
    pub trials: u32,
    pub seed: u64,
    pub weights: Vec<Weights>,
    /// Production rate and block time for the phase length; `None`: not computed.
    pub production: Option<Production>,
    /// Where the rate came from (`measured: <variant>` or `given`).
    pub rate_source: String,
    /// Stage lengths (blocks) of the power-vs-stage curve.
    pub stage_blocks: Vec<u64>,
    /// The cheated fraction the phase-length curve is drawn for.
    pub phase_fraction: f64,
}

/// One variant's distances from the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantDistances {
    pub name: String,
    pub honest: bool,
    /// `computed` or the file it was read from.
    pub source: String,
    /// Nonces per second, for computed variants.
    pub nonces_per_sec: Option<f64>,
    pub distances: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantRow {
    pub name: String,
    pub honest: bool,
    pub source: String,
    pub nonces_per_sec: Option<f64>,
    pub summary: Summary,
    /// Share of nonces above the threshold.
    pub mismatch_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub percentile: f64,
    /// The distance at that percentile of every honest variant's distances together.
    pub value: f64,
    /// The honest mismatch rate the power uses: the largest honest variant's.
    pub honest_rate: f64,
    /// The variant it came from.
    pub honest_worst: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerRow {
    pub variant: String,
    /// Cheated fraction (1.0 for an honest row).
    pub fraction: f64,
    /// Per-sample mismatch probability.
    pub q: f64,
    /// `(n, probability that one validator flags it)`.
    pub by_n: Vec<(u64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Power {
    /// `(n, smallest flagged mismatch count)`, `None` when nothing can be flagged.
    pub critical_k: Vec<(u64, Option<u64>)>,
    /// False alarms: honest variants.
    pub honest: Vec<PowerRow>,
    pub cheaters: Vec<PowerRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteRow {
    pub weights: String,
    pub variant: String,
    pub fraction: f64,
    /// One validator's flag probability at the vote's sample size.
    pub p_flag: f64,
    /// Honest rows: probability of rejection; cheater rows: of acceptance.
    pub probability: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Votes {
    pub sample_size: u64,
    pub trials: u32,
    pub seed: u64,
    /// `(name, validators, share of the top 10)`.
    pub weight_sets: Vec<(String, usize, f64)>,
    pub honest_rejected: Vec<VoteRow>,
    pub cheater_accepted: Vec<VoteRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePoint {
    pub blocks: u64,
    pub nonces: u64,
    /// `(cheater variant, one validator's flag probability sampling min(n, nonces))`.
    pub power: Vec<(String, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseLength {
    pub production: Production,
    pub rate_source: String,
    pub sample_size: u64,
    pub fraction: f64,
    /// Shortest stage producing the full sample.
    pub min_stage_blocks: Option<u64>,
    pub curve: Vec<StagePoint>,
}

/// Facts from the reference's calibration report, printed beside ours (not our results).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anchors {
    pub honest_p98_l2: f64,
    pub honest_mismatch_at_p98: f64,
    pub int4_vs_fp8_mismatch: f64,
    pub cheater_4pct_flagged_by_one_200_sample_validator: f64,
}

/// The reference report's numbers.
pub const ANCHORS: Anchors = Anchors {
    honest_p98_l2: 0.1737,
    honest_mismatch_at_p98: 0.020,
    int4_vs_fp8_mismatch: 0.77,
    cheater_4pct_flagged_by_one_200_sample_validator: 0.515,
};

/// The whole analysis (`report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub reference: String,
    pub nonces: usize,
    pub settings: Settings,
    pub variants: Vec<VariantRow>,
    pub threshold: Threshold,
    pub power: Power,
    pub votes: Votes,
    pub phase: Option<PhaseLength>,
    pub anchors: Anchors,
}

fn stat(e: poc_core::stats::BinomialError) -> CalibrateError {
    CalibrateError::Settings(e.to_string())
}

/// Analyses the distances of every variant from `reference`.
pub fn analyse(
    reference: &str,
    variants: &[VariantDistances],
    s: &Settings,
) -> Result<Analysis, CalibrateError> {
    let honest: Vec<&VariantDistances> = variants.iter().filter(|v| v.honest).collect();
    if honest.is_empty() {
        return Err(CalibrateError::Settings(
            "no honest variant besides the reference: add one (e.g. bf16, batch=1) to measure honest noise".into(),
        ));
    }
    let pooled: Vec<f64> = honest
        .iter()
        .flat_map(|v| v.distances.iter().copied())
        .collect();
    let sorted = sorted_finite(&pooled);
    let value = percentile(&sorted, s.percentile).unwrap_or(0.0);
    let rows: Vec<VariantRow> = variants
        .iter()
        .map(|v| VariantRow {
            name: v.name.clone(),
            honest: v.honest,
            source: v.source.clone(),
            nonces_per_sec: v.nonces_per_sec,
            summary: Summary::of(&v.distances),
            mismatch_rate: mismatch_rate(&v.distances, value),
        })
        .collect();
    let worst = rows
        .iter()
        .filter(|r| r.honest)
        .max_by(|a, b| a.mismatch_rate.total_cmp(&b.mismatch_rate))
        .expect("an honest row");
    let threshold = Threshold {
        percentile: s.percentile,
        value,
        honest_rate: worst.mismatch_rate,
        honest_worst: worst.name.clone(),
    };
    let h = threshold.honest_rate;
    let by_n = |q: f64| -> Result<Vec<(u64, f64)>, CalibrateError> {
        s.sample_sizes
            .iter()
            .map(|&n| Ok((n, s.test.flag_probability(n, q).map_err(stat)?)))
            .collect()
    };
    let mut power = Power {
        critical_k: s
            .sample_sizes
            .iter()
            .map(|&n| Ok((n, s.test.critical_k(n).map_err(stat)?)))
            .collect::<Result<_, CalibrateError>>()?,
        honest: Vec::new(),
        cheaters: Vec::new(),
    };
    for r in &rows {
        if r.honest {
            power.honest.push(PowerRow {
                variant: r.name.clone(),
                fraction: 1.0,
                q: r.mismatch_rate,
                by_n: by_n(r.mismatch_rate)?,
            });
        } else {
            for &f in &s.fractions {
                let q = mixed_rate(f, r.mismatch_rate, h);
                power.cheaters.push(PowerRow {
                    variant: r.name.clone(),
                    fraction: f,
                    q,
                    by_n: by_n(q)?,
                });
            }
        }
    }
    let n = s.sample_size;
    let mut votes = Votes {
        sample_size: n,
        trials: s.trials,
        seed: s.seed,
        weight_sets: s
            .weights
            .iter()
            .map(|w| (w.name.clone(), w.weights.len(), w.top_share(10)))
            .collect(),
        honest_rejected: Vec::new(),
        cheater_accepted: Vec::new(),
    };
    for (wi, w) in s.weights.iter().enumerate() {
        // One seed per probability, derived from the settings' seed.
        let mut round = 0u64;
        let mut next_seed = || {
            round += 1;
            s.seed ^ ((wi as u64) << 40) ^ round
        };
        for r in rows.iter().filter(|r| r.honest) {
            let p = s.test.flag_probability(n, r.mismatch_rate).map_err(stat)?;
            votes.honest_rejected.push(VoteRow {
                weights: w.name.clone(),
                variant: r.name.clone(),
                fraction: 1.0,
                p_flag: p,
                probability: rejection_probability(&w.weights, p, s.trials, next_seed()),
            });
        }
        for r in rows.iter().filter(|r| !r.honest) {
            for &f in &s.fractions {
                let p = s
                    .test
                    .flag_probability(n, mixed_rate(f, r.mismatch_rate, h))
                    .map_err(stat)?;
                votes.cheater_accepted.push(VoteRow {
                    weights: w.name.clone(),
                    variant: r.name.clone(),
                    fraction: f,
                    p_flag: p,
                    probability: 1.0 - rejection_probability(&w.weights, p, s.trials, next_seed()),
                });
            }
        }
    }
    let phase = match s.production {
        Some(prod) => {
            let mut curve = Vec::new();
            for &b in &s.stage_blocks {
                let produced = prod.nonces(b);
                let m = n.min(produced);
                let mut pw = Vec::new();
                for r in rows.iter().filter(|r| !r.honest) {
                    let q = mixed_rate(s.phase_fraction, r.mismatch_rate, h);
                    pw.push((r.name.clone(), s.test.flag_probability(m, q).map_err(stat)?));
                }
                curve.push(StagePoint {
                    blocks: b,
                    nonces: produced,
                    power: pw,
                });
            }
            Some(PhaseLength {
                production: prod,
                rate_source: s.rate_source.clone(),
                sample_size: n,
                fraction: s.phase_fraction,
                min_stage_blocks: prod.min_stage_blocks(n),
                curve,
            })
        }
        None => None,
    };
    Ok(Analysis {
        reference: reference.to_owned(),
        nonces: variants.first().map_or(0, |v| v.distances.len()),
        settings: s.clone(),
        variants: rows,
        threshold,
        power,
        votes,
        phase,
        anchors: ANCHORS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            percentile: 98.0,
            test: Test {
                p_mismatch: 0.1,
                p_value_threshold: 0.05,
            },
            sample_sizes: vec![50, 200],
            fractions: vec![0.04, 1.0],
            sample_size: 200,
            trials: 200,
            seed: 1,
            weights: vec![Weights::uniform(10)],
            production: Some(Production {
                nonces_per_sec: 1.0,
                block_time_s: 5.0,
            }),
            rate_source: "given".into(),
            stage_blocks: vec![10, 40, 80],
            phase_fraction: 1.0,
        }
    }

    fn v(name: &str, honest: bool, d: Vec<f64>) -> VariantDistances {
        VariantDistances {
            name: name.into(),
            honest,
            source: "computed".into(),
            nonces_per_sec: None,
            distances: d,
        }
    }

    #[test]
    fn threshold_power_votes_and_phase_follow_from_the_distances() {
        let honest: Vec<f64> = (0..100).map(|i| f64::from(i) / 1000.0).collect();
        let cheat: Vec<f64> = (0..100).map(|i| 1.0 + f64::from(i)).collect();
        let a = analyse(
            "f32",
            &[v("bf16", true, honest), v("int4", false, cheat)],
            &settings(),
        )
        .unwrap();
        // p98 of 0.000..0.099 = 0.09702; two honest values lie above it.
        assert!((a.threshold.value - 0.09702).abs() < 1e-12);
        assert_eq!(a.variants[0].mismatch_rate, 0.02);
        assert_eq!(a.variants[1].mismatch_rate, 1.0);
        assert_eq!(a.power.critical_k, vec![(50, Some(10)), (200, Some(28))]);
        let full = &a.power.cheaters[1];
        assert_eq!((full.fraction, full.q), (1.0, 1.0));
        assert_eq!(full.by_n, vec![(50, 1.0), (200, 1.0)]);
        let honest_fa = a.power.honest[0].by_n[1].1;
        assert!(honest_fa < 1e-6, "2 % against a 10 % null: {honest_fa}");
        assert_eq!(a.votes.cheater_accepted.len(), 2);
        assert_eq!(a.votes.cheater_accepted[1].probability, 0.0);
        assert_eq!(a.votes.honest_rejected[0].probability, 0.0);
        let ph = a.phase.unwrap();
        assert_eq!(ph.min_stage_blocks, Some(40));
        // 10 blocks: 50 nonces, enough to flag an all-out cheater.
        assert_eq!(ph.curve[0].nonces, 50);
        assert_eq!(ph.curve[0].power[0].1, 1.0);
    }

    #[test]
    fn an_analysis_needs_an_honest_variant() {
        let e = analyse("f32", &[v("int4", false, vec![1.0])], &settings()).unwrap_err();
        assert!(e.to_string().contains("honest"), "{e}");
    }
}
