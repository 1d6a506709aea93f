//! # poc-calibrate: the experiment PoC v2's thresholds rest on
//!
//! Computes artifacts for the same nonces under honest variants of the model (compute
//! dtypes, FP8 weights, batch composition) and under cheaper or modified ones (4-bit
//! weights, a perturbed layer, swapped experts, skipped reflections, random vectors), or
//! reads artifact files made elsewhere; then measures the L2 distances to a reference,
//! sets the threshold at an honest percentile, and works out what the chain's binomial
//! test and weighted vote detect, and how long a generation stage must be. The analysis
//! ([`report`], [`power`], [`summary`], [`phase`]) is pure; [`variants`] and [`run`] are
//! the shell that loads models and writes `report.md`, `report.json` and the SVG plots.
//! `docs/calibrate.md` explains the method.

pub mod artifacts;
pub mod phase;
pub mod plots;
pub mod power;
pub mod render;
pub mod report;
pub mod summary;
pub mod variants;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use indicatif::{ProgressBar, ProgressStyle};
use poc_core::artifact::{Artifact, Encoding, encode_vector};
use poc_core::inputs::InputRng;
use poc_model::PocParams;

use artifacts::ArtifactSet;
use phase::Production;
use report::{Analysis, Settings, VariantDistances};
use variants::{Job, Variant};

/// What can go wrong, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("variant {0}")]
    Variant(String),
    #[error("{path}: {msg}")]
    Artifacts { path: String, msg: String },
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Settings(String),
    #[error("{0}")]
    Io(String),
}

/// An artifact file made elsewhere (a GPU, another implementation).
#[derive(Debug, Clone)]
pub struct FileVariant {
    pub name: String,
    pub path: PathBuf,
    pub honest: bool,
}

/// A whole calibration run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The checkpoint; `None` when every variant comes from a file.
    pub model: Option<PathBuf>,
    pub variants: Vec<Variant>,
    pub files: Vec<FileVariant>,
    /// The variant the others are measured against.
    pub reference: String,
    /// Nonces `0..nonces` (computed variants).
    pub nonces: usize,
    pub seq_len: usize,
    pub k_dim: usize,
    /// Nonces per forward of the reference.
    pub batch: usize,
    /// Compute dtype of the variants that do not set one.
    pub dtype: DType,
    pub block_hash: String,
    pub public_key: String,
    /// Given production rate (nonces/s); `None`: the reference's measured rate.
    pub rate: Option<f64>,
    pub block_time_s: f64,
    /// The analysis settings (`production` and `rate_source` are filled in by [`run`],
    /// and `stage_blocks` when empty: up to four times the shortest full-sample stage).
    pub settings: Settings,
    pub out: PathBuf,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> CalibrateError + '_ {
    move |e| CalibrateError::Io(format!("{what}: {e}"))
}

/// Writes a set in the ML node's JSON, so it can be fed back with `--artifacts`.
fn write_set(path: &Path, set: &ArtifactSet, k: usize) -> Result<(), CalibrateError> {
    let artifacts: Vec<Artifact> = set
        .vectors
        .iter()
        .filter_map(|(n, v)| {
            v.as_ref().map(|v| Artifact {
                nonce: *n,
                vector_b64: encode_vector(v),
            })
        })
        .collect();
    let body = serde_json::json!({"artifacts": artifacts, "encoding": Encoding::f16_le(k)});
    std::fs::write(path, body.to_string()).map_err(io("writing artifacts"))
}

/// Runs the experiment and writes `report.json`, `report.md`, `plots/*.svg` and
/// `artifacts/<variant>.json` under `cfg.out`.
pub fn run(cfg: &Config) -> Result<Analysis, CalibrateError> {
    let computed: Vec<&Variant> = cfg.variants.iter().collect();
    let mut names: Vec<String> = computed.iter().map(|v| v.name()).collect();
    names.extend(cfg.files.iter().map(|f| f.name.clone()));
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(CalibrateError::Settings(format!(
            "variant {d:?} is given twice; name every variant once"
        )));
    }
    if !names.contains(&cfg.reference) {
        return Err(CalibrateError::Settings(format!(
            "the reference {:?} is not among the variants ({}); add it or pick one with --reference",
            cfg.reference,
            names.join(", ")
        )));
    }
    // `random` alone needs no model (a random reference is refused below).
    let needs_model = computed.iter().any(|v| **v != Variant::Random);
    if needs_model && cfg.model.is_none() {
        return Err(CalibrateError::Settings(
            "computed variants need --model DIR (or give only --artifacts files)".into(),
        ));
    }
    if cfg.nonces == 0 && !computed.is_empty() {
        return Err(CalibrateError::Settings("--nonces must be positive".into()));
    }
    let art_dir = cfg.out.join("artifacts");
    std::fs::create_dir_all(&art_dir).map_err(io("creating the output directory"))?;
    let scratch = cfg.out.join("scratch");
    let nonces: Vec<i64> = (0..cfg.nonces as i64).collect();
    let job = cfg.model.as_deref().map(|model| Job {
        model,
        scratch: &scratch,
        params: PocParams {
            block_hash: cfg.block_hash.clone(),
            public_key: cfg.public_key.clone(),
            seq_len: cfg.seq_len,
            k_dim: cfg.k_dim,
            rng: InputRng::from_stronger_flag(false),
        },
        nonces: &nonces,
        batch: cfg.batch.max(1),
        dtype: cfg.dtype,
        device: Device::Cpu,
    });
    std::fs::create_dir_all(&scratch).map_err(io("creating the scratch directory"))?;
    let style = ProgressStyle::with_template(
        "{prefix:>14} {elapsed_precise} [{bar:40}] {pos}/{len} nonces ({per_sec}, eta {eta})",
    )
    .expect("a valid template");
    let compute_one = |v: &Variant| -> Result<(ArtifactSet, f64), CalibrateError> {
        let job = job.as_ref().expect("checked: a model is given");
        let bar = ProgressBar::new(nonces.len() as u64)
            .with_style(style.clone())
            .with_prefix(v.name());
        let r = variants::compute(v, job, |done| bar.set_position(done as u64));
        bar.finish();
        r
    };
    // The reference first: the others are measured against it (and `random` takes its
    // scale from it).
    let (ref_set, ref_rate) = if let Some(f) = cfg.files.iter().find(|f| f.name == cfg.reference) {
        (ArtifactSet::read(&f.path, cfg.k_dim)?, None)
    } else {
        let v = cfg
            .variants
            .iter()
            .find(|v| v.name() == cfg.reference)
            .expect("the reference is a variant");
        if *v == Variant::Random {
            return Err(CalibrateError::Settings(
                "the reference cannot be random; pick an honest variant".into(),
            ));
        }
        let (s, rate) = compute_one(v)?;
        (s, Some(rate))
    };
    write_set(
        &art_dir.join(format!("{}.json", plots::slug(&cfg.reference))),
        &ref_set,
        cfg.k_dim,
    )?;
    // Every other set, measured against the reference as soon as it exists; all must
    // cover the reference's nonces.
    let measure = |name: String,
                   honest: bool,
                   source: String,
                   rate: Option<f64>,
                   set: &ArtifactSet| {
        if let Some(n) = set.nonce_difference(&ref_set) {
            return Err(CalibrateError::Artifacts {
                path: source,
                msg: format!(
                    "its nonces differ from the reference's (nonce {n} is in one and not the other); every set must cover the same nonces"
                ),
            });
        }
        Ok(VariantDistances {
            name,
            honest,
            source,
            nonces_per_sec: rate,
            distances: set.distances(&ref_set),
        })
    };
    let mut distances: Vec<VariantDistances> = Vec::new();
    for v in cfg.variants.iter().filter(|v| v.name() != cfg.reference) {
        let (set, rate) = if *v == Variant::Random {
            (variants::random_set(&ref_set, cfg.settings.seed), None)
        } else {
            let (s, r) = compute_one(v)?;
            (s, Some(r))
        };
        write_set(
            &art_dir.join(format!("{}.json", plots::slug(&v.name()))),
            &set,
            cfg.k_dim,
        )?;
        distances.push(measure(
            v.name(),
            v.is_honest(),
            "computed".into(),
            rate,
            &set,
        )?);
    }
    for f in cfg.files.iter().filter(|f| f.name != cfg.reference) {
        let set = ArtifactSet::read(&f.path, cfg.k_dim)?;
        distances.push(measure(
            f.name.clone(),
            f.honest,
            f.path.display().to_string(),
            None,
            &set,
        )?);
    }
    let mut settings = cfg.settings.clone();
    let (rate, source) = match (cfg.rate, ref_rate) {
        (Some(r), _) => (Some(r), "given".to_owned()),
        (None, Some(r)) => (
            Some(r),
            format!("measured: `{}` on this machine", cfg.reference),
        ),
        (None, None) => (None, String::new()),
    };
    settings.production = rate.map(|r| Production {
        nonces_per_sec: r,
        block_time_s: cfg.block_time_s,
    });
    settings.rate_source = source;
    if settings.stage_blocks.is_empty()
        && let Some(p) = settings.production
    {
        // Up to four times the shortest full-sample stage (at least 10 blocks), 40 points.
        let top = p
            .min_stage_blocks(settings.sample_size)
            .unwrap_or(10)
            .saturating_mul(4)
            .max(10);
        let step = top.div_ceil(40);
        settings.stage_blocks = (1..=top.div_ceil(step))
            .map(|i| (i * step).min(top))
            .collect();
        settings.stage_blocks.insert(0, 1);
        settings.stage_blocks.dedup();
    }
    let analysis = report::analyse(&cfg.reference, &distances, &settings)?;
    let named: Vec<(String, Vec<f64>)> = distances
        .iter()
        .map(|d| (d.name.clone(), d.distances.clone()))
        .collect();
    let figures = plots::write_all(&cfg.out, &analysis, &named)?;
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "analysis": analysis,
        "plots": figures,
    }))
    .expect("the analysis serialises");
    std::fs::write(cfg.out.join("report.json"), json).map_err(io("writing report.json"))?;
    let model = cfg
        .model
        .as_ref()
        .map_or("(artifact files)".to_owned(), |m| m.display().to_string());
    std::fs::write(
        cfg.out.join("report.md"),
        render::markdown(&analysis, &model, &figures),
    )
    .map_err(io("writing report.md"))?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(analysis)
}
