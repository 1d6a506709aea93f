//! One variant's artifacts: a vector per nonce, computed here or read from a file in the
//! ML node's JSON (`{"artifacts": [{"nonce", "vector_b64"}], "encoding"}`), and the L2
//! distances between two sets over the same nonces.

use std::collections::BTreeMap;
use std::path::Path;

use poc_core::artifact::{Artifact, Encoding, decode_vector_f32};
use poc_core::validation::l2_distance;
use serde::Deserialize;

use crate::CalibrateError;

/// Vectors by nonce; `None` where the variant produced no finite vector (it then
/// mismatches at every threshold).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArtifactSet {
    pub vectors: BTreeMap<i64, Option<Vec<f32>>>,
}

#[derive(Deserialize)]
struct File {
    artifacts: Vec<Artifact>,
    #[serde(default)]
    encoding: Option<Encoding>,
}

impl ArtifactSet {
    /// Reads an artifact file; refuses duplicate nonces, undecodable and non-finite
    /// vectors and a `k_dim` other than `k_dim`, naming the file and the nonce.
    pub fn read(path: &Path, k_dim: usize) -> Result<Self, CalibrateError> {
        let bad = |msg: String| CalibrateError::Artifacts {
            path: path.display().to_string(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let f: File = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "not an artifact file ({{\"artifacts\": [{{\"nonce\", \"vector_b64\"}}]}}): {e}"
            ))
        })?;
        if let Some(e) = &f.encoding
            && (!e.is_f16_le() || e.k_dim != k_dim)
        {
            return Err(bad(format!(
                "encoding is {}/{}/k_dim {}, expected f16/le/k_dim {k_dim} (set --k-dim)",
                e.dtype, e.endian, e.k_dim
            )));
        }
        let mut vectors = BTreeMap::new();
        for a in f.artifacts {
            let v = decode_vector_f32(&a.vector_b64, Some(k_dim))
                .map_err(|e| bad(format!("nonce {}: {e}", a.nonce)))?;
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                return Err(bad(format!(
                    "nonce {} has a non-finite value ({x}); an ML node never sends one",
                    a.nonce
                )));
            }
            if vectors.insert(a.nonce, Some(v)).is_some() {
                return Err(bad(format!("nonce {} appears twice", a.nonce)));
            }
        }
        if vectors.is_empty() {
            return Err(bad("holds no artifacts".into()));
        }
        Ok(Self { vectors })
    }

    /// The nonces, ascending.
    pub fn nonces(&self) -> Vec<i64> {
        self.vectors.keys().copied().collect()
    }

    /// L2 distance per nonce from `reference` to `self`, in nonce order; `+inf` where
    /// either side has no vector. Both must hold the same nonces.
    pub fn distances(&self, reference: &ArtifactSet) -> Vec<f64> {
        reference
            .vectors
            .iter()
            .map(
                |(n, r)| match (r, self.vectors.get(n).and_then(Option::as_ref)) {
                    (Some(r), Some(v)) if r.len() == v.len() => f64::from(l2_distance(r, v)),
                    _ => f64::INFINITY,
                },
            )
            .collect()
    }

    /// The first nonce one set has and the other lacks, if any.
    pub fn nonce_difference(&self, other: &ArtifactSet) -> Option<i64> {
        self.vectors
            .keys()
            .find(|n| !other.vectors.contains_key(n))
            .or_else(|| other.vectors.keys().find(|n| !self.vectors.contains_key(n)))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poc_core::artifact::encode_vector;

    fn write(dir: &Path, name: &str, body: serde_json::Value) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body.to_string()).unwrap();
        p
    }

    #[test]
    fn files_are_read_and_bad_ones_refused_with_the_nonce() {
        let d = tempfile::tempdir().unwrap();
        let v = |x: f32| encode_vector(&[x; 4]);
        let ok = write(
            d.path(),
            "ok.json",
            serde_json::json!({"artifacts": [{"nonce": 1, "vector_b64": v(0.5)}, {"nonce": 2, "vector_b64": v(0.25)}], "encoding": {"dtype": "f16", "k_dim": 4, "endian": "le"}}),
        );
        let s = ArtifactSet::read(&ok, 4).unwrap();
        assert_eq!(s.nonces(), vec![1, 2]);
        let nan = write(
            d.path(),
            "nan.json",
            serde_json::json!({"artifacts": [{"nonce": 7, "vector_b64": v(f32::NAN)}]}),
        );
        let e = ArtifactSet::read(&nan, 4).unwrap_err().to_string();
        assert!(e.contains("nonce 7") && e.contains("finite"), "{e}");
        let dup = write(
            d.path(),
            "dup.json",
            serde_json::json!({"artifacts": [{"nonce": 1, "vector_b64": v(0.5)}, {"nonce": 1, "vector_b64": v(0.5)}]}),
        );
        assert!(
            ArtifactSet::read(&dup, 4)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let e = ArtifactSet::read(&ok, 12).unwrap_err().to_string();
        assert!(e.contains("k_dim 4"), "{e}");
        let junk = write(d.path(), "junk.json", serde_json::json!({"x": 1}));
        assert!(
            ArtifactSet::read(&junk, 4)
                .unwrap_err()
                .to_string()
                .contains("junk.json")
        );
    }

    #[test]
    fn distances_are_l2_and_missing_vectors_infinite() {
        let mut a = ArtifactSet::default();
        let mut b = ArtifactSet::default();
        a.vectors.insert(1, Some(vec![0.0, 0.0]));
        a.vectors.insert(2, Some(vec![1.0, 1.0]));
        b.vectors.insert(1, Some(vec![3.0, 4.0]));
        b.vectors.insert(2, None);
        assert_eq!(b.distances(&a), vec![5.0, f64::INFINITY]);
        assert_eq!(a.nonce_difference(&b), None);
        b.vectors.insert(3, None);
        assert_eq!(a.nonce_difference(&b), Some(3));
    }
}
