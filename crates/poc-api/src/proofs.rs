//! The proof API's wire format (`docs/protocol/chain-and-api.md` §6.7): request and response JSON, the
//! signature payloads (hex-of-SHA-256, then secp256k1), and the validator's strict check
//! of a response. Pure functions; the HTTP server and client live elsewhere.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use poc_chain::keys::{PrivateKey, verify_digest};
use poc_mmr::{Hash, hash_from_bytes, verify_artifact};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

/// Most leaf indices one request may ask for.
pub const MAX_INDICES: usize = 500;
/// How far a request timestamp may be from the server's clock.
pub const MAX_CLOCK_SKEW_NS: i64 = 5 * 60 * 1_000_000_000;
/// Bytes of a vector (k_dim 12, FP16).
pub const VECTOR_BYTES: usize = 24;

/// Accepts a JSON number or a numeric string.
fn num_or_str<'de, T, D>(d: D) -> Result<T, D::Error>
where
    T: std::str::FromStr + serde::de::DeserializeOwned,
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        N(T),
        S(String),
    }
    match Either::<T>::deserialize(d)? {
        Either::N(n) => Ok(n),
        Either::S(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number in range"))),
    }
}

fn vec_num_or_str<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "num_or_str")] u32);
    Ok(Vec::<W>::deserialize(d)?.into_iter().map(|w| w.0).collect())
}

/// `POST /v1/poc/proofs` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofRequest {
    /// Stage height.
    #[serde(deserialize_with = "num_or_str")]
    pub poc_stage_start_block_height: i64,
    /// The committed root, base64 (32 bytes).
    pub root_hash: String,
    /// The committed count.
    #[serde(deserialize_with = "num_or_str")]
    pub count: u32,
    /// Leaves requested.
    #[serde(deserialize_with = "vec_num_or_str")]
    pub leaf_indices: Vec<u32>,
    /// The validator's account address.
    pub validator_address: String,
    /// The address of the key that signed (the account or a grantee).
    pub validator_signer_address: String,
    /// Unix nanoseconds.
    #[serde(deserialize_with = "num_or_str")]
    pub timestamp: i64,
    /// Base64 signature.
    pub signature: String,
}

/// SHA-256 of the request's signed payload: `LE64(height) ‖ root(32) ‖ LE32(count) ‖
/// LE32(index)… ‖ LE64(timestamp) ‖ validator_address ‖ validator_signer_address`.
pub fn request_digest(
    height: i64,
    root: &[u8],
    count: u32,
    indices: &[u32],
    timestamp: i64,
    validator: &str,
    signer: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(height.to_le_bytes());
    h.update(root);
    h.update(count.to_le_bytes());
    for i in indices {
        h.update(i.to_le_bytes());
    }
    h.update(timestamp.to_le_bytes());
    h.update(validator.as_bytes());
    h.update(signer.as_bytes());
    h.finalize().into()
}

/// The Cosmos keyring convention the reference uses: the message signed is the lowercase
/// hex text of the payload digest, so the ECDSA digest is `SHA-256(hex(digest))`.
pub fn message_digest(payload_digest: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(hex::encode(payload_digest).as_bytes()).into()
}

/// Signs a payload digest the reference's way; base64 of 64-byte `r ‖ s`.
pub fn sign_payload(key: &PrivateKey, payload_digest: &[u8; 32]) -> String {
    STANDARD.encode(key.sign_digest(&message_digest(payload_digest)))
}

/// Verifies [`sign_payload`].
pub fn verify_payload(pub_key: &[u8], payload_digest: &[u8; 32], signature_b64: &str) -> bool {
    match STANDARD.decode(signature_b64) {
        Ok(sig) => verify_digest(pub_key, &message_digest(payload_digest), &sig),
        Err(_) => false,
    }
}

impl ProofRequest {
    /// Builds and signs a request.
    pub fn signed(
        key: &PrivateKey,
        validator_address: &str,
        height: i64,
        root: &[u8; 32],
        count: u32,
        leaf_indices: Vec<u32>,
        timestamp_ns: i64,
    ) -> Self {
        let signer = key.address();
        let d = request_digest(
            height,
            root,
            count,
            &leaf_indices,
            timestamp_ns,
            validator_address,
            &signer,
        );
        Self {
            poc_stage_start_block_height: height,
            root_hash: STANDARD.encode(root),
            count,
            leaf_indices,
            validator_address: validator_address.to_owned(),
            validator_signer_address: signer,
            timestamp: timestamp_ns,
            signature: sign_payload(key, &d),
        }
    }

    /// The request's payload digest (`root` already decoded).
    pub fn digest(&self, root: &[u8]) -> [u8; 32] {
        request_digest(
            self.poc_stage_start_block_height,
            root,
            self.count,
            &self.leaf_indices,
            self.timestamp,
            &self.validator_address,
            &self.validator_signer_address,
        )
    }
}

/// One proven leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofItem {
    pub leaf_index: u32,
    pub nonce_value: i32,
    /// Base64 of the raw vector.
    pub vector_bytes: String,
    /// Base64 hashes: siblings, then the other peaks.
    pub proof: Vec<String>,
}

/// `POST /v1/poc/proofs` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofResponse {
    /// One per requested index, in request order.
    pub proofs: Vec<ProofItem>,
    /// The server's signing address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_address: Option<String>,
    /// Unix nanoseconds of the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Base64 signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// `proofs_hash`: SHA-256 over each item's `LE32(leaf_index) ‖ LE32(nonce) ‖
/// vector_bytes (base64 text) ‖ each proof hash (base64 text)`.
pub fn proofs_hash(items: &[ProofItem]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in items {
        h.update(p.leaf_index.to_le_bytes());
        h.update(p.nonce_value.to_le_bytes());
        h.update(p.vector_bytes.as_bytes());
        for s in &p.proof {
            h.update(s.as_bytes());
        }
    }
    h.finalize().into()
}

/// SHA-256 of the response payload: `LE64(height) ‖ root ‖ LE32(count) ‖ proofs_hash ‖
/// LE64(timestamp) ‖ signer_address`.
pub fn response_digest(
    height: i64,
    root: &[u8],
    count: u32,
    items: &[ProofItem],
    timestamp: i64,
    signer: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(height.to_le_bytes());
    h.update(root);
    h.update(count.to_le_bytes());
    h.update(proofs_hash(items));
    h.update(timestamp.to_le_bytes());
    h.update(signer.as_bytes());
    h.finalize().into()
}

/// A verified sample: `(nonce, vector base64 as received)` per requested leaf.
pub type VerifiedSample = Vec<(i32, String)>;

/// Why a response fails verification. All of these are permanent (the participant
/// answered, and the answer is wrong): the validator votes invalid at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Missing, extra, duplicated or reordered leaves.
    #[error("incomplete coverage: {0}")]
    Coverage(String),
    /// A vector that is not 24 bytes of finite FP16.
    #[error("invalid vector data at leaf {leaf}: {why}")]
    Vector { leaf: u32, why: String },
    /// A proof that does not lead to the committed root.
    #[error("proof verification failed at leaf {leaf}: {why}")]
    Proof { leaf: u32, why: String },
    /// Two leaves carry the same nonce.
    #[error("duplicate nonce {0} in the sample")]
    DuplicateNonce(i32),
    /// The response signature is present but wrong.
    #[error("bad response signature: {0}")]
    Signature(String),
}

/// Whether 24 bytes are 12 finite FP16 values (exponent bits not all ones).
pub fn check_vector(bytes: &[u8]) -> Result<(), VectorError> {
    if bytes.len() != VECTOR_BYTES {
        return Err(VectorError::Length(bytes.len()));
    }
    for (i, c) in bytes.chunks_exact(2).enumerate() {
        let v = u16::from_le_bytes([c[0], c[1]]);
        if v & 0x7C00 == 0x7C00 {
            return Err(VectorError::NotFinite(i));
        }
    }
    Ok(())
}

/// Why bytes are not an artifact vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VectorError {
    /// Not [`VECTOR_BYTES`] long.
    #[error("{0} bytes, expected {VECTOR_BYTES}")]
    Length(usize),
    /// Value `i` is NaN or infinite.
    #[error("value {0} is NaN or infinite")]
    NotFinite(usize),
}

/// The validator's strict check of a response against the on-chain `(root, count)`:
/// exactly one item per requested index in request order, valid vectors, MMR proofs,
/// distinct nonces, and — when the response is signed — a valid signature by
/// `signer_pubkey(signer_address)` (the participant's key or one it granted).
pub fn verify_response(
    resp: &ProofResponse,
    height: i64,
    root: &Hash,
    count: u32,
    indices: &[u32],
    signer_pubkey: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<VerifiedSample, ProofError> {
    if resp.proofs.len() != indices.len() {
        return Err(ProofError::Coverage(format!(
            "{} proofs for {} indices",
            resp.proofs.len(),
            indices.len()
        )));
    }
    let mut nonces = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(indices.len());
    for (item, want) in resp.proofs.iter().zip(indices) {
        if item.leaf_index != *want {
            return Err(ProofError::Coverage(format!(
                "leaf {} where {want} was requested",
                item.leaf_index
            )));
        }
        let leaf = item.leaf_index;
        let vector = STANDARD
            .decode(&item.vector_bytes)
            .map_err(|e| ProofError::Vector {
                leaf,
                why: format!("not base64: {e}"),
            })?;
        check_vector(&vector).map_err(|why| ProofError::Vector {
            leaf,
            why: why.to_string(),
        })?;
        let mut hashes = Vec::with_capacity(item.proof.len());
        for s in &item.proof {
            let b = STANDARD.decode(s).map_err(|e| ProofError::Proof {
                leaf,
                why: format!("hash not base64: {e}"),
            })?;
            hashes.push(
                hash_from_bytes("proof hash", &b).map_err(|e| ProofError::Proof {
                    leaf,
                    why: e.to_string(),
                })?,
            );
        }
        verify_artifact(
            root,
            u64::from(count),
            u64::from(leaf),
            item.nonce_value,
            &vector,
            &hashes,
        )
        .map_err(|e| ProofError::Proof {
            leaf,
            why: e.to_string(),
        })?;
        if !nonces.insert(item.nonce_value) {
            return Err(ProofError::DuplicateNonce(item.nonce_value));
        }
        out.push((item.nonce_value, item.vector_bytes.clone()));
    }
    if let Some(sig) = &resp.signature {
        let (Some(signer), Some(ts)) = (&resp.signer_address, resp.timestamp) else {
            return Err(ProofError::Signature(
                "signature without signer_address or timestamp".into(),
            ));
        };
        let key = signer_pubkey(signer).ok_or_else(|| {
            ProofError::Signature(format!(
                "{signer} is not the participant or one of its grantees"
            ))
        })?;
        let d = response_digest(height, root, count, &resp.proofs, ts, signer);
        if !verify_payload(&key, &d, sig) {
            return Err(ProofError::Signature("does not verify".into()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PrivateKey {
        PrivateKey::from_bytes(&[9u8; 32]).unwrap()
    }

    #[test]
    fn request_json_accepts_numbers_and_strings() {
        let j = r#"{"poc_stage_start_block_height":"100","root_hash":"AA==","count":5,"leaf_indices":[1,"2"],
            "validator_address":"a","validator_signer_address":"b","timestamp":"1700000000000000000","signature":"x"}"#;
        let r: ProofRequest = serde_json::from_str(j).unwrap();
        assert_eq!(
            (
                r.poc_stage_start_block_height,
                r.count,
                r.leaf_indices.clone(),
                r.timestamp
            ),
            (100, 5, vec![1, 2], 1_700_000_000_000_000_000)
        );
        assert!(serde_json::from_str::<ProofRequest>(&j.replace("\"100\"", "\"1e2\"")).is_err());
        assert!(
            serde_json::from_str::<ProofRequest>(&j.replace("\"count\":5", "\"count\":-5"))
                .is_err()
        );
    }

    #[test]
    fn request_signature_follows_the_hex_then_sign_convention() {
        let k = key();
        let root = [3u8; 32];
        let r = ProofRequest::signed(&k, &k.address(), 100, &root, 7, vec![0, 3], 42);
        let d = r.digest(&root);
        // By hand: the payload bytes, SHA-256, lowercase hex, SHA-256 again, ECDSA.
        let mut payload = Vec::new();
        payload.extend_from_slice(&100i64.to_le_bytes());
        payload.extend_from_slice(&root);
        payload.extend_from_slice(&7u32.to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        payload.extend_from_slice(&3u32.to_le_bytes());
        payload.extend_from_slice(&42i64.to_le_bytes());
        payload.extend_from_slice(k.address().as_bytes());
        payload.extend_from_slice(k.address().as_bytes());
        assert_eq!(d, <[u8; 32]>::from(Sha256::digest(&payload)));
        let sig = STANDARD.decode(&r.signature).unwrap();
        let m: [u8; 32] = Sha256::digest(hex::encode(d).as_bytes()).into();
        assert!(verify_digest(&k.public_key(), &m, &sig));
        assert!(verify_payload(&k.public_key(), &d, &r.signature));
        let mut tampered = r.clone();
        tampered.leaf_indices.push(9);
        assert!(!verify_payload(
            &k.public_key(),
            &tampered.digest(&root),
            &r.signature
        ));
    }

    #[test]
    fn vectors_must_be_24_bytes_of_finite_fp16() {
        assert!(check_vector(&[0u8; 24]).is_ok());
        assert!(check_vector(&[0u8; 22]).is_err());
        let mut v = [0u8; 24];
        v[5] = 0x7C; // +inf in value 2
        assert!(
            check_vector(&v)
                .unwrap_err()
                .to_string()
                .contains("value 2")
        );
        v[5] = 0xFE; // NaN
        assert!(check_vector(&v).is_err());
        v[5] = 0x7B; // 65504, finite
        assert!(check_vector(&v).is_ok());
    }
}
