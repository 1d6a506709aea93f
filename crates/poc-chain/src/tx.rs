//! The transaction envelope: encoding, signing and decoding (no state checks; those are
//! in [`crate::ante`]).
//!
//! Envelope (protobuf, [`crate::proto::TxProto`]): `{chain_id=1, pub_key=2 (33-byte
//! compressed secp256k1), sequence=3, messages=4 (Any), signature=5}`. The signature is
//! ECDSA over SHA-256 of the encoded [`crate::proto::SignDoc`] (the envelope without the
//! signature), 64 bytes `r ‖ s` with low S. The signer's address is the Cosmos derivation
//! of its key; messages act for their `creator`/`granter`/`authority`, which must be the
//! signer, or, inside a `MsgExec`, an account that granted the signer that message type.

use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::address;
use crate::error::{ChainError, ChainResult, ErrorKind, err};
use crate::keys::PrivateKey;
use crate::msgs::Msg;
use crate::proto::{self, Any, DecodeError, MsgExec, SignDoc, TxProto};

/// Most messages one transaction may carry.
pub const MAX_MESSAGES: usize = 64;
/// Largest accepted transaction, in bytes.
pub const MAX_TX_BYTES: usize = 2 * 1024 * 1024;

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
    pub chain_id: String,
    /// Signer key.
    pub pub_key: Vec<u8>,
    pub sequence: u64,
    /// Messages.
    pub msgs: Vec<TxMsg>,
    /// Raw `Any`s (what was signed).
    pub raw: Vec<Any>,
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
    /// The result of `r` for the transaction `bytes`.
    pub fn new(bytes: &[u8], r: ChainResult<()>) -> Self {
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
