//! Account keys and signatures: secp256k1 private keys, the Cosmos address of a key,
//! ECDSA verification of a transaction's sign digest (64-byte `r ‖ s`, low S), and the
//! [`SignatureVerifier`] a node passes to the checks (a plain one, or a bounded memo).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::address;

/// A secp256k1 private key.
#[derive(Clone)]
pub struct PrivateKey(SigningKey);

/// Why bytes are not a secret key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    /// The text is not hex.
    #[error("secret key is not hex: {0}")]
    NotHex(#[from] hex::FromHexError),
    /// Not 32 bytes, or not a scalar in `[1, n)`.
    #[error("not a valid secp256k1 secret key (32 bytes, in range)")]
    OutOfRange,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.address())
    }
}

impl PrivateKey {
    /// From 32 secret bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyError> {
        SigningKey::from_slice(b)
            .map(Self)
            .map_err(|_| KeyError::OutOfRange)
    }

    /// From 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let b = hex::decode(s.trim()).map_err(KeyError::NotHex)?;
        Self::from_bytes(&b)
    }

    /// The secret as hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// The 33-byte compressed public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.0.verifying_key().to_sec1_bytes().to_vec()
    }

    /// Lowercase hex of the compressed public key.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    /// The `gonka1…` address.
    pub fn address(&self) -> String {
        address::from_pubkey(&self.public_key())
    }

    /// Signs a 32-byte digest: 64 bytes `r ‖ s`, low S.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> [u8; 64] {
        let sig: Signature = self
            .0
            .sign_prehash(digest)
            .expect("a 32-byte prehash signs");
        let sig = sig.normalize_s();
        sig.to_bytes().into()
    }
}

/// Verifies a 64-byte low-S signature of a 32-byte digest by a compressed public key.
pub fn verify_digest(pub_key: &[u8], digest: &[u8; 32], signature: &[u8]) -> bool {
    let Ok(vk) = VerifyingKey::from_sec1_bytes(pub_key) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(signature) else {
        return false;
    };
    if sig.normalize_s() != sig {
        return false;
    }
    vk.verify_prehash(digest, &sig).is_ok()
}

/// Whether `pub_key` is a valid 33-byte compressed secp256k1 key.
pub fn valid_pubkey(pub_key: &[u8]) -> bool {
    pub_key.len() == 33 && VerifyingKey::from_sec1_bytes(pub_key).is_ok()
}

/// The account address of a compressed public key given as hex; `None` unless it is a
/// valid 33-byte secp256k1 key.
pub fn address_of_hex(hex_key: &str) -> Option<String> {
    hex::decode(hex_key)
        .ok()
        .filter(|k| valid_pubkey(k))
        .map(|k| address::from_pubkey(&k))
}

/// How the transaction checks verify signatures.
pub trait SignatureVerifier {
    /// Whether `signature` is `pub_key`'s valid low-S signature of `digest`.
    fn verify(&self, pub_key: &[u8], digest: &[u8; 32], signature: &[u8]) -> bool;
}

/// Verifies every signature afresh ([`verify_digest`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct FreshVerifier;

impl SignatureVerifier for FreshVerifier {
    fn verify(&self, pub_key: &[u8], digest: &[u8; 32], signature: &[u8]) -> bool {
        verify_digest(pub_key, digest, signature)
    }
}

/// Remembers successful verifications, so a transaction checked at CheckTx, at every
/// mempool recheck and again at DeliverTx pays for one. Keys bind the public key, digest
/// and signature; bounded, the oldest evicted first. A node owns one and passes it to
/// the checks; the result is the same as [`FreshVerifier`]'s, only faster.
#[derive(Debug)]
pub struct SignatureMemo {
    capacity: usize,
    seen: Mutex<MemoEntries>,
}

#[derive(Debug, Default)]
struct MemoEntries {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl SignatureMemo {
    /// The default bound: a few blocks' worth of full mempools.
    pub const DEFAULT_CAPACITY: usize = 200_000;

    /// Remembers at most `capacity` verifications.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: Mutex::new(MemoEntries::default()),
        }
    }

    /// Forgets every remembered verification.
    pub fn clear(&self) {
        let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        m.set.clear();
        m.order.clear();
    }
}

impl Default for SignatureMemo {
    /// A memo of [`SignatureMemo::DEFAULT_CAPACITY`] verifications.
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl SignatureVerifier for SignatureMemo {
    fn verify(&self, pub_key: &[u8], digest: &[u8; 32], signature: &[u8]) -> bool {
        let mut h = Sha256::new();
        h.update((pub_key.len() as u32).to_be_bytes());
        h.update(pub_key);
        h.update(digest);
        h.update(signature);
        let key: [u8; 32] = h.finalize().into();
        if self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set
            .contains(&key)
        {
            return true;
        }
        let ok = verify_digest(pub_key, digest, signature);
        if ok && self.capacity > 0 {
            let mut m = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if m.set.insert(key) {
                m.order.push_back(key);
                if m.order.len() > self.capacity
                    && let Some(old) = m.order.pop_front()
                {
                    m.set.remove(&old);
                }
            }
        }
        ok
    }
}
