//! Signed transactions: keys, the envelope, signing, and the checks a transaction passes
//! before its messages run (chain id, key, sequence, signature, signer/grant rules).
//!
//! Envelope (protobuf, [`crate::proto::TxProto`]): `{chain_id=1, pub_key=2 (33-byte
//! compressed secp256k1), sequence=3, messages=4 (Any), signature=5}`. The signature is
//! ECDSA over SHA-256 of the encoded [`crate::proto::SignDoc`] (the envelope without the
//! signature), 64 bytes `r ‖ s` with low S. The signer's address is the Cosmos derivation
//! of its key; messages act for their `creator`/`granter`/`authority`, which must be the
//! signer, or, inside a `MsgExec`, an account that granted the signer that message type.

use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::address;
use crate::error::{ChainError, ChainResult, ErrorKind, err};
use crate::msgs::Msg;
use crate::proto::{self, Any, DecodeError, MsgExec, SignDoc, TxProto};
use crate::state::{BlockContext, ChainState};

/// Most messages one transaction may carry.
pub const MAX_MESSAGES: usize = 64;
/// Largest accepted transaction, in bytes.
pub const MAX_TX_BYTES: usize = 2 * 1024 * 1024;

/// A secp256k1 private key.
#[derive(Clone)]
pub struct PrivateKey(SigningKey);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.address())
    }
}

impl PrivateKey {
    /// From 32 secret bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, String> {
        SigningKey::from_slice(b)
            .map(Self)
            .map_err(|_| "not a valid secp256k1 secret key (32 bytes, in range)".to_owned())
    }

    /// From 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let b = hex::decode(s.trim()).map_err(|e| format!("secret key is not hex: {e}"))?;
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

/// Signatures already verified in this process: a memo of [`verify_digest`] (a pure
/// function), so a transaction checked at CheckTx, at every mempool recheck and again
/// at DeliverTx pays for one verification. Keys bind the key, digest and signature;
/// bounded, oldest evicted first.
static VERIFIED: std::sync::Mutex<VerifiedMemo> = std::sync::Mutex::new(VerifiedMemo {
    set: None,
    order: std::collections::VecDeque::new(),
});

/// Most remembered verifications.
pub const VERIFIED_MEMO_SIZE: usize = 200_000;

struct VerifiedMemo {
    set: Option<std::collections::HashSet<[u8; 32]>>,
    order: std::collections::VecDeque<[u8; 32]>,
}

/// [`verify_digest`], remembering successes.
pub fn verify_digest_memo(pub_key: &[u8], digest: &[u8; 32], signature: &[u8]) -> bool {
    let mut h = Sha256::new();
    h.update((pub_key.len() as u32).to_be_bytes());
    h.update(pub_key);
    h.update(digest);
    h.update(signature);
    let key: [u8; 32] = h.finalize().into();
    {
        let memo = VERIFIED.lock().expect("signature memo");
        if memo.set.as_ref().is_some_and(|s| s.contains(&key)) {
            return true;
        }
    }
    let ok = verify_digest(pub_key, digest, signature);
    if ok {
        let mut memo = VERIFIED.lock().expect("signature memo");
        let memo = &mut *memo;
        let set = memo.set.get_or_insert_with(Default::default);
        if set.insert(key) {
            memo.order.push_back(key);
            if memo.order.len() > VERIFIED_MEMO_SIZE
                && let Some(old) = memo.order.pop_front()
            {
                set.remove(&old);
            }
        }
    }
    ok
}

/// Forgets every remembered verification (benchmarks of cold paths).
pub fn clear_signature_memo() {
    let mut memo = VERIFIED.lock().expect("signature memo");
    memo.set = None;
    memo.order.clear();
}

/// Whether `pub_key` is a valid 33-byte compressed secp256k1 key.
pub fn valid_pubkey(pub_key: &[u8]) -> bool {
    pub_key.len() == 33 && VerifyingKey::from_sec1_bytes(pub_key).is_ok()
}

/// A message as carried by a transaction: direct, or executed for granters.
#[derive(Debug, Clone, PartialEq)]
pub enum TxMsg {
    /// Acts for the signer.
    Direct(Msg),
    /// `MsgExec{grantee, msgs}`.
    Exec {
        /// Must be the signer.
        grantee: String,
        /// Inner messages, each acting for a granter.
        msgs: Vec<Msg>,
    },
}

/// A decoded transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Tx {
    /// Chain id.
    pub chain_id: String,
    /// Signer key.
    pub pub_key: Vec<u8>,
    /// Sequence.
    pub sequence: u64,
    /// Messages.
    pub msgs: Vec<TxMsg>,
    /// Raw `Any`s (what was signed).
    pub raw: Vec<Any>,
    /// Signature.
    pub signature: Vec<u8>,
}

impl Tx {
    /// The signer's address.
    pub fn signer(&self) -> String {
        address::from_pubkey(&self.pub_key)
    }

    /// SHA-256 of the sign doc.
    pub fn sign_digest(&self) -> [u8; 32] {
        sign_digest(&self.chain_id, &self.pub_key, self.sequence, &self.raw)
    }

    /// The inner messages, flattened.
    pub fn inner(&self) -> impl Iterator<Item = &Msg> {
        self.msgs.iter().flat_map(|m| match m {
            TxMsg::Direct(m) => std::slice::from_ref(m).iter(),
            TxMsg::Exec { msgs, .. } => msgs.iter(),
        })
    }
}

fn sign_digest(chain_id: &str, pub_key: &[u8], sequence: u64, messages: &[Any]) -> [u8; 32] {
    let doc = SignDoc {
        chain_id: chain_id.to_owned(),
        pub_key: pub_key.to_vec(),
        sequence,
        messages: messages.to_vec(),
    };
    Sha256::digest(doc.encode_to_vec()).into()
}

/// Builds and signs a transaction.
pub fn sign(key: &PrivateKey, chain_id: &str, sequence: u64, msgs: &[TxMsg]) -> Vec<u8> {
    let raw: Vec<Any> = msgs
        .iter()
        .map(|m| match m {
            TxMsg::Direct(m) => proto::to_any(m),
            TxMsg::Exec { grantee, msgs } => Any {
                type_url: proto::MSG_EXEC.into(),
                value: MsgExec {
                    grantee: grantee.clone(),
                    msgs: msgs.iter().map(proto::to_any).collect(),
                }
                .encode_to_vec(),
            },
        })
        .collect();
    let pub_key = key.public_key();
    let digest = sign_digest(chain_id, &pub_key, sequence, &raw);
    TxProto {
        chain_id: chain_id.to_owned(),
        pub_key,
        sequence,
        messages: raw,
        signature: key.sign_digest(&digest).to_vec(),
    }
    .encode_to_vec()
}

fn decode_err(e: DecodeError) -> ChainError {
    match e {
        DecodeError::Unknown(t) => err(
            ErrorKind::UnknownRequest,
            format!("unknown message type {t:?}"),
        ),
        DecodeError::Malformed(m) => err(ErrorKind::TxDecode, format!("malformed message: {m}")),
    }
}

/// Decodes transaction bytes (no state checks).
pub fn decode(bytes: &[u8]) -> ChainResult<Tx> {
    if bytes.len() > MAX_TX_BYTES {
        return Err(err(
            ErrorKind::TxDecode,
            format!(
                "transaction is {} bytes; the limit is {MAX_TX_BYTES}",
                bytes.len()
            ),
        ));
    }
    let t = TxProto::decode(bytes).map_err(|e| {
        err(
            ErrorKind::TxDecode,
            format!("transaction does not decode: {e}"),
        )
    })?;
    if t.messages.is_empty() || t.messages.len() > MAX_MESSAGES {
        return Err(err(
            ErrorKind::InvalidRequest,
            format!(
                "a transaction carries 1..={MAX_MESSAGES} messages, got {}",
                t.messages.len()
            ),
        ));
    }
    let mut msgs = Vec::with_capacity(t.messages.len());
    for a in &t.messages {
        if a.type_url == proto::MSG_EXEC {
            let e = MsgExec::decode(a.value.as_slice())
                .map_err(|e| err(ErrorKind::TxDecode, format!("malformed MsgExec: {e}")))?;
            if e.msgs.is_empty() || e.msgs.len() > MAX_MESSAGES {
                return Err(err(
                    ErrorKind::InvalidRequest,
                    "MsgExec must carry 1..=64 messages",
                ));
            }
            let inner = e
                .msgs
                .iter()
                .map(proto::from_any)
                .collect::<Result<Vec<_>, _>>()
                .map_err(decode_err)?;
            msgs.push(TxMsg::Exec {
                grantee: e.grantee,
                msgs: inner,
            });
        } else {
            msgs.push(TxMsg::Direct(proto::from_any(a).map_err(decode_err)?));
        }
    }
    Ok(Tx {
        chain_id: t.chain_id,
        pub_key: t.pub_key,
        sequence: t.sequence,
        msgs,
        raw: t.messages,
        signature: t.signature,
    })
}

/// The outcome of a transaction (`code` 0 = success), Cosmos-style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxResult {
    /// Uppercase hex SHA-256 of the transaction bytes.
    pub txhash: String,
    /// 0 on success.
    pub code: u32,
    /// `sdk` or `inference` when `code != 0`.
    pub codespace: String,
    /// What happened.
    pub raw_log: String,
}

impl TxResult {
    fn new(bytes: &[u8], r: ChainResult<()>) -> Self {
        let txhash = tx_hash(bytes);
        match r {
            Ok(()) => Self {
                txhash,
                code: 0,
                codespace: String::new(),
                raw_log: String::new(),
            },
            Err(e) => Self {
                txhash,
                code: e.kind.code(),
                codespace: e.kind.codespace().into(),
                raw_log: e.message,
            },
        }
    }
}

/// Uppercase hex SHA-256 of transaction bytes.
pub fn tx_hash(bytes: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(bytes))
}

/// The stateful checks shared by CheckTx and DeliverTx; `expected_sequence` is the
/// account's next sequence (the mempool passes its own view).
pub fn authenticate(state: &ChainState, tx: &Tx, expected_sequence: u64) -> ChainResult<String> {
    if tx.chain_id != state.chain_id {
        return Err(err(
            ErrorKind::InvalidChainId,
            format!(
                "transaction is for chain {:?}, this is {:?}",
                tx.chain_id, state.chain_id
            ),
        ));
    }
    if !valid_pubkey(&tx.pub_key) {
        return Err(err(
            ErrorKind::InvalidPubKey,
            "pub_key must be a 33-byte compressed secp256k1 key",
        ));
    }
    let signer = tx.signer();
    if tx.sequence != expected_sequence {
        return Err(err(
            ErrorKind::WrongSequence,
            format!(
                "account sequence mismatch: expected {expected_sequence}, got {}",
                tx.sequence
            ),
        ));
    }
    if !verify_digest_memo(&tx.pub_key, &tx.sign_digest(), &tx.signature) {
        return Err(err(
            ErrorKind::Unauthorized,
            "signature verification failed: check the key, chain id and sequence",
        ));
    }
    for m in &tx.msgs {
        match m {
            TxMsg::Direct(m) => {
                if m.signer() != signer {
                    return Err(err(
                        ErrorKind::Unauthorized,
                        format!(
                            "{} must be signed by {}, not {signer}",
                            m.type_url(),
                            m.signer()
                        ),
                    ));
                }
            }
            TxMsg::Exec { grantee, msgs } => {
                if *grantee != signer {
                    return Err(err(
                        ErrorKind::Unauthorized,
                        format!("MsgExec grantee {grantee} is not the signer {signer}"),
                    ));
                }
                for inner in msgs {
                    if inner.signer() != signer
                        && !state.is_granted(inner.signer(), &signer, inner.type_url())
                    {
                        return Err(err(
                            ErrorKind::Unauthorized,
                            format!(
                                "{} has not granted {signer} {}",
                                inner.signer(),
                                inner.type_url()
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(signer)
}

/// CheckTx: decoding, authentication and the ante rules of §1.5, against `state` (the
/// last committed block) and the mempool's expected sequence. Never changes state.
pub fn check_tx(
    state: &ChainState,
    bytes: &[u8],
    expected_sequence: Option<u64>,
) -> (TxResult, Option<(String, u64)>) {
    let r = (|| {
        let tx = decode(bytes)?;
        let seq = expected_sequence
            .unwrap_or_else(|| state.sequences.get(&tx.signer()).copied().unwrap_or(0));
        let signer = authenticate(state, &tx, seq)?;
        let next = state.height + 1;
        for m in tx.inner() {
            state.ante_check(next, m)?;
        }
        Ok((signer, tx.sequence))
    })();
    match r {
        Ok(v) => (TxResult::new(bytes, Ok(())), Some(v)),
        Err(e) => (TxResult::new(bytes, Err(e)), None),
    }
}

/// DeliverTx: authenticates, bumps the sequence, then runs the messages all-or-nothing.
pub fn deliver_tx(state: &mut ChainState, ctx: &BlockContext, bytes: &[u8]) -> TxResult {
    let tx = match decode(bytes) {
        Ok(t) => t,
        Err(e) => return TxResult::new(bytes, Err(e)),
    };
    let seq = state.sequences.get(&tx.signer()).copied().unwrap_or(0);
    let signer = match authenticate(state, &tx, seq) {
        Ok(s) => s,
        Err(e) => return TxResult::new(bytes, Err(e)),
    };
    state.sequences.insert(signer.clone(), seq + 1);
    state
        .accounts
        .entry(signer)
        .or_insert_with(|| hex::encode(&tx.pub_key));
    let msgs: Vec<&Msg> = tx.inner().collect();
    let r = if msgs.len() == 1 {
        state.deliver(ctx, msgs[0])
    } else {
        let backup = state.clone();
        let r = msgs.iter().try_for_each(|m| state.deliver(ctx, m));
        if r.is_err() {
            *state = backup;
        }
        r
    };
    TxResult::new(bytes, r)
}
