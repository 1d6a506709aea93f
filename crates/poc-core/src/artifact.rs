//! The artifact wire format (`docs/protocol/compute-v2.md` §2.10, §2.5): k FP16 values, little-endian,
//! standard base64 with padding, and the `encoding` metadata that travels with them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use half::f16;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The production `k_dim` (and the chain-side verifier's hard-coded `DefaultKDim`).
pub const DEFAULT_K_DIM: usize = 12;

/// One nonce's artifact as it travels in JSON: `{"nonce": n, "vector_b64": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The nonce the vector was computed for.
    pub nonce: i64,
    /// Standard base64 of the k FP16 little-endian values.
    pub vector_b64: String,
}

/// `{"dtype": "f16", "k_dim": k, "endian": "le"}`, the only encoding the protocol has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encoding {
    /// Always `"f16"`.
    pub dtype: String,
    /// Number of values per vector.
    pub k_dim: usize,
    /// Always `"le"`.
    pub endian: String,
}

impl Encoding {
    /// The encoding metadata for vectors of `k_dim` values.
    pub fn f16_le(k_dim: usize) -> Self {
        Self {
            dtype: "f16".into(),
            k_dim,
            endian: "le".into(),
        }
    }

    /// Whether this metadata describes FP16 little-endian vectors (any `k_dim`).
    pub fn is_f16_le(&self) -> bool {
        self.dtype == "f16" && self.endian == "le"
    }
}

impl Default for Encoding {
    fn default() -> Self {
        Self::f16_le(DEFAULT_K_DIM)
    }
}

/// Why a received vector is unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The string is not standard, padded base64.
    #[error("vector_b64 is not valid standard base64 ({0})")]
    Base64(String),
    /// The base64 text is longer than the expected vector could ever be.
    #[error("vector_b64 is {got} characters long; a {k}-value FP16 vector is {expected}")]
    TextLength {
        /// Length of the received text.
        got: usize,
        /// Length of the base64 text of `k` FP16 values.
        expected: usize,
        /// Expected number of values.
        k: usize,
    },
    /// The decoded bytes are not a whole number of FP16 values.
    #[error("vector has {0} bytes, which is not a whole number of 2-byte FP16 values")]
    OddLength(usize),
    /// The vector has the wrong number of values.
    #[error("vector has {got} FP16 values, expected k_dim = {expected}")]
    WrongLength {
        /// Values received.
        got: usize,
        /// Values expected.
        expected: usize,
    },
    /// A value is NaN or ±Inf (FP16 exponent 0x1f).
    #[error("vector value {index} is not finite (FP16 bits {bits:#06x})")]
    NonFinite {
        /// Position of the first bad value.
        index: usize,
        /// Its FP16 bit pattern.
        bits: u16,
    },
}

/// f32 → f16 (round to nearest, ties to even) → little-endian bytes.
pub fn vector_to_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

/// Standard base64 (with padding) of the FP16 little-endian bytes of `values`.
pub fn encode_vector(values: &[f32]) -> String {
    STANDARD.encode(vector_to_bytes(values))
}

/// Standard base64 of already-rounded FP16 values.
pub fn encode_f16(values: &[f16]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    STANDARD.encode(bytes)
}

/// Length of the padded base64 text of `k` FP16 values.
pub fn base64_len(k: usize) -> usize {
    (2 * k).div_ceil(3) * 4
}

/// Interprets raw bytes as FP16 little-endian values, rejecting odd lengths, a wrong
/// count (when `expected_k` is given) and NaN/Inf (exponent 0x1f). Subnormals and ±0 are
/// accepted.
pub fn vector_from_bytes(bytes: &[u8], expected_k: Option<usize>) -> Result<Vec<f16>, DecodeError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(DecodeError::OddLength(bytes.len()));
    }
    let k = bytes.len() / 2;
    if let Some(expected) = expected_k
        && k != expected
    {
        return Err(DecodeError::WrongLength { got: k, expected });
    }
    bytes
        .chunks_exact(2)
        .enumerate()
        .map(|(index, b)| {
            let bits = u16::from_le_bytes([b[0], b[1]]);
            if bits & 0x7c00 == 0x7c00 {
                Err(DecodeError::NonFinite { index, bits })
            } else {
                Ok(f16::from_bits(bits))
            }
        })
        .collect()
}

/// Decodes `vector_b64` into FP16 values with the checks of [`vector_from_bytes`]. With
/// `expected_k`, over-long text is refused before it is decoded.
pub fn decode_vector(b64: &str, expected_k: Option<usize>) -> Result<Vec<f16>, DecodeError> {
    if let Some(k) = expected_k {
        let expected = base64_len(k);
        if b64.len() > expected {
            return Err(DecodeError::TextLength {
                got: b64.len(),
                expected,
                k,
            });
        }
    }
    let bytes = STANDARD
        .decode(b64)
        .map_err(|e| DecodeError::Base64(e.to_string()))?;
    vector_from_bytes(&bytes, expected_k)
}

/// [`decode_vector`], widened to f32 (exact).
pub fn decode_vector_f32(b64: &str, expected_k: Option<usize>) -> Result<Vec<f32>, DecodeError> {
    Ok(decode_vector(b64, expected_k)?
        .into_iter()
        .map(f16::to_f32)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_metadata() {
        let v = [0.5f32, -0.25, 0.125];
        assert_eq!(
            decode_vector_f32(&encode_vector(&v), Some(3)).unwrap(),
            v.to_vec()
        );
        assert_eq!(
            serde_json::to_string(&Encoding::default()).unwrap(),
            r#"{"dtype":"f16","k_dim":12,"endian":"le"}"#
        );
        assert!(Encoding::f16_le(4).is_f16_le());
    }

    #[test]
    fn f16_rounding_is_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even gives 1.
        assert_eq!(vector_to_bytes(&[1.0 + 2f32.powi(-11)]), vec![0x00, 0x3c]);
        // 1 + 3 * 2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9: even is 1 + 2^-9.
        assert_eq!(
            vector_to_bytes(&[1.0 + 3.0 * 2f32.powi(-11)]),
            vec![0x02, 0x3c]
        );
    }

    #[test]
    fn decoding_rejects_bad_input() {
        assert!(matches!(
            decode_vector("not base64!", None),
            Err(DecodeError::Base64(_))
        ));
        // Missing padding is not standard base64.
        assert!(matches!(
            decode_vector("ADw", None),
            Err(DecodeError::Base64(_))
        ));
        assert_eq!(decode_vector("AA==", None), Err(DecodeError::OddLength(1)));
        assert_eq!(
            decode_vector("ADw=", Some(12)),
            Err(DecodeError::WrongLength {
                got: 1,
                expected: 12
            })
        );
        let long = encode_vector(&[1.0; 13]);
        assert_eq!(
            decode_vector(&long, Some(12)),
            Err(DecodeError::TextLength {
                got: 36,
                expected: 32,
                k: 12
            })
        );
        // +Inf, -Inf, NaN.
        for (bits, index) in [(0x7c00u16, 1usize), (0xfc00, 1), (0x7e00, 1)] {
            let mut bytes = vector_to_bytes(&[1.0, 1.0]);
            bytes[2..4].copy_from_slice(&bits.to_le_bytes());
            assert_eq!(
                vector_from_bytes(&bytes, Some(2)),
                Err(DecodeError::NonFinite { index, bits })
            );
        }
        // Subnormals and signed zeros are fine.
        let ok = vector_from_bytes(&[0x01, 0x00, 0x00, 0x80], Some(2)).unwrap();
        assert_eq!(ok[0].to_bits(), 1);
        assert_eq!(ok[1].to_bits(), 0x8000);
        assert_eq!(
            DecodeError::NonFinite {
                index: 3,
                bits: 0x7c00
            }
            .to_string(),
            "vector value 3 is not finite (FP16 bits 0x7c00)"
        );
    }

    #[test]
    fn artifact_json_shape() {
        let a = Artifact {
            nonce: 7,
            vector_b64: "ADw=".into(),
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"nonce":7,"vector_b64":"ADw="}"#
        );
    }
}
