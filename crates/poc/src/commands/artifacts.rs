//! `poc artifacts ...`

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use poc_core::artifact::decode_vector_f32;
use poc_core::projection::artifact_from_hidden;
use poc_core::validation::compare_artifacts;
use poc_core::{Artifact, Encoding, StatTest};
use serde::Deserialize;

use crate::cli::{CompareArgs, ProjectArgs};

/// Largest artifact file accepted (a million artifacts is about 60 MB of JSON).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// The ML node's artifact response shape; other keys are ignored.
#[derive(Debug, Deserialize)]
struct ArtifactFile {
    artifacts: Vec<Artifact>,
    #[serde(default)]
    encoding: Option<Encoding>,
}

/// Reads a JSON input file of at most [`MAX_FILE_BYTES`].
fn read_json_text(path: &Path, what: &str) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        bail!(
            "{what} file {} is {} bytes; the limit is {MAX_FILE_BYTES}",
            path.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))
}

fn read_artifact_file(path: &Path) -> anyhow::Result<ArtifactFile> {
    let text = read_json_text(path, "artifact")?;
    let file: ArtifactFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not an artifact file: expected JSON like \
             {{\"artifacts\": [{{\"nonce\": 0, \"vector_b64\": \"...\"}}]}}",
            path.display()
        )
    })?;
    if let Some(enc) = &file.encoding
        && !enc.is_f16_le()
    {
        bail!(
            "{}: unsupported encoding {{dtype: {:?}, endian: {:?}}}; only f16 little-endian exists",
            path.display(),
            enc.dtype,
            enc.endian
        );
    }
    Ok(file)
}

/// Decodes the validator's own vectors; any defect there is an input error, not a mismatch.
fn decode_computed(path: &Path, file: &ArtifactFile) -> anyhow::Result<Vec<(i64, Vec<f32>)>> {
    let expected_k = file.encoding.as_ref().map(|e| e.k_dim);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(file.artifacts.len());
    let mut k_dim = expected_k;
    for a in &file.artifacts {
        if !seen.insert(a.nonce) {
            bail!(
                "{}: nonce {} appears more than once",
                path.display(),
                a.nonce
            );
        }
        let v = decode_vector_f32(&a.vector_b64, k_dim)
            .with_context(|| format!("{}: artifact for nonce {}", path.display(), a.nonce))?;
        k_dim.get_or_insert(v.len());
        out.push((a.nonce, v));
    }
    Ok(out)
}

pub fn compare(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let stat = StatTest {
        dist_threshold: args.dist_threshold,
        p_mismatch: args.p_mismatch,
        fraud_threshold: args.fraud_threshold,
    };
    stat.validate()
        .context("invalid statistical test options")?;
    let computed_file = read_artifact_file(&args.computed)?;
    let computed = decode_computed(&args.computed, &computed_file)?;
    let received = read_artifact_file(&args.received)?;
    let mut seen = HashSet::new();
    if let Some(dup) = received.artifacts.iter().find(|a| !seen.insert(a.nonce)) {
        bail!(
            "{}: nonce {} appears more than once",
            args.received.display(),
            dup.nonce
        );
    }
    let result = compare_artifacts(&computed, &received.artifacts, &stat)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(if args.fail_on_fraud && result.fraud_detected {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One nonce's last-token hidden state.
#[derive(Debug, Deserialize)]
struct HiddenState {
    nonce: i64,
    values: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct HiddenStateFile {
    hidden_states: Vec<HiddenState>,
}

pub fn project(args: &ProjectArgs) -> anyhow::Result<()> {
    let text = read_json_text(&args.hidden, "hidden-state")?;
    let file: HiddenStateFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a hidden-state file: expected JSON like \
             {{\"hidden_states\": [{{\"nonce\": 0, \"values\": [0.1, ...]}}]}}",
            args.hidden.display()
        )
    })?;
    let hidden_size = file.hidden_states.first().map(|h| h.values.len());
    let mut seen = HashSet::new();
    let mut artifacts = Vec::with_capacity(file.hidden_states.len());
    for h in &file.hidden_states {
        if !seen.insert(h.nonce) {
            bail!(
                "{}: nonce {} appears more than once",
                args.hidden.display(),
                h.nonce
            );
        }
        if Some(h.values.len()) != hidden_size {
            bail!(
                "{}: nonce {} has {} values but the first hidden state has {}; all must have the model's hidden size",
                args.hidden.display(),
                h.nonce,
                h.values.len(),
                hidden_size.unwrap_or(0)
            );
        }
        let a = artifact_from_hidden(
            &args.seeds.block_hash,
            &args.seeds.public_key,
            h.nonce,
            &h.values,
            args.k_dim,
        )
        .with_context(|| format!("nonce {}", h.nonce))?;
        artifacts.push(a);
    }
    let out = serde_json::json!({
        "artifacts": artifacts,
        "encoding": Encoding::f16_le(args.k_dim),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
