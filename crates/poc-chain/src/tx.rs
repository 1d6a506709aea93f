//! The transaction envelope, as Cosmos SDK has it (`docs/chain.md`, "Transactions"):
//! encoding, signing and decoding, with no state checks (those are in [`crate::ante`]).
//!
//! A transaction is `cosmos.tx.v1beta1.TxRaw{body_bytes, auth_info_bytes, signatures}`.
//! The body is a `TxBody` whose messages are `Any`s with the reference's type URLs; the
//! auth info is an `AuthInfo` with one `SignerInfo` (a `/cosmos.crypto.secp256k1.PubKey`,
//! `SIGN_MODE_DIRECT`, the account sequence) and a `Fee` (gas limit; no fee is charged
//! here). The one signature is ECDSA over SHA-256 of the `SignDoc{body_bytes,
//! auth_info_bytes, chain_id, account_number}`, 64 bytes `r ‖ s` with low S: the chain id
//! and the account number are signed but not carried. The signer's address is the Cosmos
//! derivation of its key; messages act for their `creator`/`granter`/`authority`, which
//! must be the signer, or, inside a `MsgExec`, an account that granted the signer that
//! message type.

use cosmos_sdk_proto::cosmos::crypto::secp256k1::PubKey;
use cosmos_sdk_proto::cosmos::tx::signing::v1beta1::SignMode;
use cosmos_sdk_proto::cosmos::tx::v1beta1::mode_info::{Single, Sum};
use cosmos_sdk_proto::cosmos::tx::v1beta1::{
    AuthInfo, Fee, ModeInfo, SignDoc, SignerInfo, TxBody, TxRaw,
};
use cosmos_sdk_proto::prost::Message as _;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::address;
use crate::error::{ChainError, ChainResult, ErrorKind, err};
use crate::keys::PrivateKey;
use crate::msgs::Msg;
use crate::proto::{self, Any, DecodeError, MsgExec};

/// Most messages one transaction may carry.
pub const MAX_MESSAGES: usize = 64;
/// Largest accepted transaction, in bytes.
pub const MAX_TX_BYTES: usize = 2 * 1024 * 1024;
/// Type URL of a secp256k1 public key.
pub const SECP256K1_PUBKEY: &str = "/cosmos.crypto.secp256k1.PubKey";
/// The gas limit our signers put in the fee. Gas is not metered on this chain; a chain
/// that meters it needs a limit this size for the PoC messages.
pub const DEFAULT_GAS_LIMIT: u64 = 2_000_000;

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

/// What a signature commits to beyond the transaction bytes (Cosmos `SignerData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignerData<'a> {
    pub chain_id: &'a str,
    /// The signer's account number (`x/auth`).
    pub account_number: u64,
    /// The signer's next sequence.
    pub sequence: u64,
}

/// A decoded transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Tx {
    /// `TxRaw.body_bytes`, as signed.
    pub body_bytes: Vec<u8>,
    /// `TxRaw.auth_info_bytes`, as signed.
    pub auth_info_bytes: Vec<u8>,
    /// Signer key (33-byte compressed secp256k1).
    pub pub_key: Vec<u8>,
    pub sequence: u64,
    /// Messages.
    pub msgs: Vec<TxMsg>,
    /// The body's `Any`s.
    pub raw: Vec<Any>,
    pub memo: String,
    /// Last height at which the transaction may be included (0: none).
    pub timeout_height: u64,
    /// The fee's gas limit (not metered here).
    pub gas_limit: u64,
    pub signature: Vec<u8>,
}

impl Tx {
    /// The signer's address.
    pub fn signer(&self) -> String {
        address::from_pubkey(&self.pub_key)
    }

    /// SHA-256 of the sign doc on chain `chain_id` for account `account_number`.
    pub fn sign_digest(&self, chain_id: &str, account_number: u64) -> [u8; 32] {
        sign_digest(
            &self.body_bytes,
            &self.auth_info_bytes,
            chain_id,
            account_number,
        )
    }

    /// The inner messages, flattened.
    pub fn inner(&self) -> impl Iterator<Item = &Msg> {
        self.msgs.iter().flat_map(|m| match m {
            TxMsg::Direct(m) => std::slice::from_ref(m).iter(),
            TxMsg::Exec { msgs, .. } => msgs.iter(),
        })
    }
}

fn sign_digest(body: &[u8], auth_info: &[u8], chain_id: &str, account_number: u64) -> [u8; 32] {
    let doc = SignDoc {
        body_bytes: body.to_vec(),
        auth_info_bytes: auth_info.to_vec(),
        chain_id: chain_id.to_owned(),
        account_number,
    };
    Sha256::digest(doc.encode_to_vec()).into()
}

fn cosmos_any(a: Any) -> cosmos_sdk_proto::Any {
    cosmos_sdk_proto::Any {
        type_url: a.type_url,
        value: a.value,
    }
}

/// The `Any` of a transaction message.
pub fn msg_any(m: &TxMsg) -> Any {
    match m {
        TxMsg::Direct(m) => proto::to_any(m),
        TxMsg::Exec { grantee, msgs } => Any {
            type_url: proto::MSG_EXEC.into(),
            value: MsgExec {
                grantee: grantee.clone(),
                msgs: msgs.iter().map(proto::to_any).collect(),
            }
            .encode_to_vec(),
        },
    }
}

/// Builds and signs a transaction (`SIGN_MODE_DIRECT`, no memo, no fee amount,
/// [`DEFAULT_GAS_LIMIT`]).
pub fn sign(key: &PrivateKey, signer: &SignerData<'_>, msgs: &[TxMsg]) -> Vec<u8> {
    let body = TxBody {
        messages: msgs.iter().map(|m| cosmos_any(msg_any(m))).collect(),
        ..TxBody::default()
    };
    sign_body(key, signer, &body)
}

/// Signs a transaction with the given body (any messages, memo or timeout height), as
/// [`sign`] does.
pub fn sign_body(key: &PrivateKey, signer: &SignerData<'_>, body: &TxBody) -> Vec<u8> {
    let body = body.encode_to_vec();
    let auth_info = AuthInfo {
        signer_infos: vec![SignerInfo {
            public_key: Some(cosmos_sdk_proto::Any {
                type_url: SECP256K1_PUBKEY.into(),
                value: PubKey {
                    key: key.public_key(),
                }
                .encode_to_vec(),
            }),
            mode_info: Some(ModeInfo {
                sum: Some(Sum::Single(Single {
                    mode: SignMode::Direct as i32,
                })),
            }),
            sequence: signer.sequence,
        }],
        fee: Some(Fee {
            amount: vec![],
            gas_limit: DEFAULT_GAS_LIMIT,
            payer: String::new(),
            granter: String::new(),
        }),
        ..AuthInfo::default()
    }
    .encode_to_vec();
    let digest = sign_digest(&body, &auth_info, signer.chain_id, signer.account_number);
    TxRaw {
        body_bytes: body,
        auth_info_bytes: auth_info,
        signatures: vec![key.sign_digest(&digest).to_vec()],
    }
    .encode_to_vec()
}

fn decode_err(e: DecodeError) -> ChainError {
    match e {
        DecodeError::Unknown(t) => err(
            ErrorKind::TxDecode,
            format!("unable to resolve type URL {t}: tx parse error"),
        ),
        DecodeError::Malformed(m) => err(ErrorKind::TxDecode, format!("malformed message: {m}")),
    }
}

fn parse_err(what: &str, e: impl std::fmt::Display) -> ChainError {
    err(
        ErrorKind::TxDecode,
        format!("{what} does not decode: {e}: tx parse error"),
    )
}

/// The one signer's key and sequence, from the auth info.
fn signer_info(auth: &AuthInfo) -> ChainResult<(Vec<u8>, u64)> {
    let [si] = auth.signer_infos.as_slice() else {
        return Err(err(
            ErrorKind::Unauthorized,
            format!(
                "wrong number of signers; expected 1, got {}",
                auth.signer_infos.len()
            ),
        ));
    };
    let direct = matches!(
        &si.mode_info,
        Some(ModeInfo { sum: Some(Sum::Single(Single { mode })) }) if *mode == SignMode::Direct as i32
    );
    if !direct {
        return Err(err(
            ErrorKind::Unauthorized,
            "only single-signer SIGN_MODE_DIRECT signatures are accepted",
        ));
    }
    let pk = si.public_key.as_ref().ok_or_else(|| {
        err(
            ErrorKind::InvalidPubKey,
            "the signer info carries no public key",
        )
    })?;
    if pk.type_url != SECP256K1_PUBKEY {
        return Err(err(
            ErrorKind::InvalidPubKey,
            format!(
                "public key type {:?} is not {SECP256K1_PUBKEY}",
                pk.type_url
            ),
        ));
    }
    let key = PubKey::decode(pk.value.as_slice())
        .map_err(|e| parse_err("public key", e))?
        .key;
    if !crate::keys::valid_pubkey(&key) {
        return Err(err(
            ErrorKind::InvalidPubKey,
            "the public key is not a 33-byte compressed secp256k1 key",
        ));
    }
    Ok((key, si.sequence))
}

/// Decodes transaction bytes (no state checks).
pub fn decode(bytes: &[u8]) -> ChainResult<Tx> {
    if bytes.len() > MAX_TX_BYTES {
        return Err(err(
            ErrorKind::TxTooLarge,
            format!(
                "tx too large: {} bytes; the limit is {MAX_TX_BYTES}",
                bytes.len()
            ),
        ));
    }
    if bytes.is_empty() {
        return Err(err(
            ErrorKind::TxDecode,
            "tx bytes are empty: tx parse error",
        ));
    }
    let raw = TxRaw::decode(bytes).map_err(|e| parse_err("transaction", e))?;
    let body = TxBody::decode(raw.body_bytes.as_slice()).map_err(|e| parse_err("tx body", e))?;
    let auth =
        AuthInfo::decode(raw.auth_info_bytes.as_slice()).map_err(|e| parse_err("auth info", e))?;
    if !body.extension_options.is_empty() {
        return Err(err(
            ErrorKind::UnknownExtensionOptions,
            "unknown extension options",
        ));
    }
    if body.messages.is_empty() || body.messages.len() > MAX_MESSAGES {
        return Err(err(
            ErrorKind::InvalidRequest,
            format!(
                "a transaction carries 1..={MAX_MESSAGES} messages, got {}",
                body.messages.len()
            ),
        ));
    }
    let (pub_key, sequence) = signer_info(&auth)?;
    let [signature] = raw.signatures.as_slice() else {
        return Err(err(
            ErrorKind::Unauthorized,
            format!(
                "invalid number of signatures; expected 1, got {}",
                raw.signatures.len()
            ),
        ));
    };
    let anys: Vec<Any> = body
        .messages
        .into_iter()
        .map(|a| Any {
            type_url: a.type_url,
            value: a.value,
        })
        .collect();
    let mut msgs = Vec::with_capacity(anys.len());
    for a in &anys {
        if a.type_url == proto::MSG_EXEC {
            let e = MsgExec::decode(a.value.as_slice()).map_err(|e| parse_err("MsgExec", e))?;
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
        body_bytes: raw.body_bytes,
        auth_info_bytes: raw.auth_info_bytes,
        pub_key,
        sequence,
        msgs,
        raw: anys,
        memo: body.memo,
        timeout_height: body.timeout_height,
        gas_limit: auth.fee.map_or(0, |f| f.gas_limit),
        signature: signature.clone(),
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
