//! `report.md`: the analysis as tables, our numbers beside the reference report's.

use std::fmt::Write;
use std::path::PathBuf;

use crate::report::Analysis;

fn pct(x: f64) -> String {
    if x > 0.0 && x < 1e-4 {
        format!("{:.1e} %", x * 100.0)
    } else {
        format!("{:.2} %", x * 100.0)
    }
}

/// The Markdown report.
pub fn markdown(a: &Analysis, model: &str, plots: &[PathBuf]) -> String {
    let mut s = String::new();
    let s_ = &mut s;
    let t = &a.settings.test;
    let _ = writeln!(s_, "# PoC v2 calibration\n");
    let _ = writeln!(
        s_,
        "Model `{model}`, {} nonces, reference variant `{}`. Test: p_mismatch {}, p_value_threshold {}; threshold at the honest p{}.\n",
        a.nonces, a.reference, t.p_mismatch, t.p_value_threshold, a.settings.percentile
    );
    if let Some(ph) = a
        .phase
        .as_ref()
        .filter(|p| p.rate_source.starts_with("measured"))
    {
        let _ = writeln!(
            s_,
            "The reference computed {:.1} nonces/s on this machine.\n",
            ph.production.nonces_per_sec
        );
    }
    let _ = writeln!(s_, "## Distances to the reference\n");
    let _ = writeln!(
        s_,
        "| variant | kind | source | nonces/s | mean | p50 | p90 | p98 | p99.9 | max | non-finite | mismatch |"
    );
    let _ = writeln!(
        s_,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for v in &a.variants {
        let m = &v.summary;
        let _ = writeln!(
            s_,
            "| `{}` | {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} |",
            v.name,
            if v.honest { "honest" } else { "cheater" },
            v.source,
            v.nonces_per_sec.map_or("—".into(), |r| format!("{r:.1}")),
            m.mean,
            m.p50,
            m.p90,
            m.p98,
            m.p99_9,
            m.max,
            m.non_finite,
            pct(v.mismatch_rate)
        );
    }
    let th = &a.threshold;
    let an = &a.anchors;
    let _ = writeln!(s_, "\n## Threshold\n");
    let _ = writeln!(
        s_,
        "Honest p{} L2 = **{:.4}**; the largest honest mismatch rate there is {} (`{}`). \
         Reference report: p98 L2 {} giving {} honest mismatch; INT4 vs FP8 about {} mismatch.\n",
        th.percentile,
        th.value,
        pct(th.honest_rate),
        th.honest_worst,
        an.honest_p98_l2,
        pct(an.honest_mismatch_at_p98),
        pct(an.int4_vs_fp8_mismatch)
    );
    let _ = writeln!(s_, "## One validator\n");
    let ns: Vec<u64> = a.power.critical_k.iter().map(|c| c.0).collect();
    let head: String = ns.iter().map(|n| format!(" n = {n} |")).collect();
    let _ = writeln!(
        s_,
        "Probability that one validator sampling n nonces flags the prover (exact binomial tails). \
         A prover cheating on a fraction f of its nonces mismatches with probability \
         q = f·(cheater rate) + (1 − f)·(honest rate). Reference report: a 4 % cheater is \
         flagged by one 200-sample validator in {} of runs.\n",
        pct(an.cheater_4pct_flagged_by_one_200_sample_validator)
    );
    let _ = writeln!(s_, "| variant | f | q |{head}");
    let _ = writeln!(s_, "|---|---:|---:|{}", "---:|".repeat(ns.len()));
    let crit: String = a
        .power
        .critical_k
        .iter()
        .map(|(_, k)| format!(" {} |", k.map_or("none".into(), |k| k.to_string())))
        .collect();
    let _ = writeln!(s_, "| *flagged from k mismatches* | | |{crit}");
    for r in a.power.honest.iter().chain(&a.power.cheaters) {
        let cells: String = r
            .by_n
            .iter()
            .map(|(_, p)| format!(" {} |", pct(*p)))
            .collect();
        let honest = a.power.honest.iter().any(|h| h.variant == r.variant);
        let f = if honest {
            "honest".into()
        } else {
            format!("{:.0} %", r.fraction * 100.0)
        };
        let _ = writeln!(s_, "| `{}` | {f} | {:.4} |{cells}", r.variant, r.q);
    }
    let v = &a.votes;
    let _ = writeln!(s_, "\n## The weighted vote\n");
    let _ = writeln!(
        s_,
        "Every validator samples n = {} nonces and votes invalid when its test flags the prover; \
         the chain accepts when more than ⌊2/3⌋ of the weight votes valid. {} seeded Monte Carlo \
         rounds (seed {}) per figure.\n",
        v.sample_size, v.trials, v.seed
    );
    for (name, count, top) in &v.weight_sets {
        let _ = writeln!(
            s_,
            "- `{name}`: {count} validators, the top 10 hold {}",
            pct(*top)
        );
    }
    let _ = writeln!(
        s_,
        "\n| weights | variant | f | one validator flags | P(honest rejected) / P(cheater accepted) |"
    );
    let _ = writeln!(s_, "|---|---|---:|---:|---:|");
    for r in &v.honest_rejected {
        let _ = writeln!(
            s_,
            "| `{}` | `{}` | honest | {} | rejected {} |",
            r.weights,
            r.variant,
            pct(r.p_flag),
            pct(r.probability)
        );
    }
    for r in &v.cheater_accepted {
        let _ = writeln!(
            s_,
            "| `{}` | `{}` | {:.0} % | {} | accepted {} |",
            r.weights,
            r.variant,
            r.fraction * 100.0,
            pct(r.p_flag),
            pct(r.probability)
        );
    }
    let _ = writeln!(s_, "\n## Phase length\n");
    match &a.phase {
        Some(ph) => {
            let _ = writeln!(
                s_,
                "{:.2} nonces/s ({}), {} s blocks: {:.1} nonces per block. Sampling n = {} needs a \
                 generation stage of at least **{}** blocks. Power of one validator by stage length, \
                 {:.0} % of nonces cheated:\n",
                ph.production.nonces_per_sec,
                ph.rate_source,
                ph.production.block_time_s,
                ph.production.nonces_per_sec * ph.production.block_time_s,
                ph.sample_size,
                ph.min_stage_blocks.map_or("—".into(), |b| b.to_string()),
                ph.fraction * 100.0
            );
            if let Some(p0) = ph.curve.first() {
                let head: String = p0.power.iter().map(|(n, _)| format!(" `{n}` |")).collect();
                let _ = writeln!(s_, "| blocks | nonces |{head}");
                let _ = writeln!(s_, "|---:|---:|{}", "---:|".repeat(p0.power.len()));
            }
            for p in &ph.curve {
                let cells: String = p
                    .power
                    .iter()
                    .map(|(_, x)| format!(" {} |", pct(*x)))
                    .collect();
                let _ = writeln!(s_, "| {} | {} |{cells}", p.blocks, p.nonces);
            }
        }
        None => {
            let _ = writeln!(
                s_,
                "Not computed: the reference was read from a file, so no rate was measured; give `--rate` (e.g. `352/min`)."
            );
        }
    }
    let _ = writeln!(s_, "\n## Figures\n");
    for p in plots {
        let _ = writeln!(s_, "![{}]({})", p.display(), p.display());
    }
    s
}
