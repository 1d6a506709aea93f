//! Errors with the reference's codes (codespace `inference`, `docs/protocol/chain-and-api.md` §2.1).

use thiserror::Error;

/// A rejected message: the reference's error code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind}: {message}")]
pub struct ChainError {
    /// The kind (carries the numeric code).
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
}

/// Error kinds and their codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 1107 `ErrPocWrongStartBlockHeight`.
    PocWrongStartBlockHeight,
    /// 1108 `ErrPocTooLate`.
    PocTooLate,
    /// 1128 `ErrUpcomingEpochNotFound`.
    UpcomingEpochNotFound,
    /// 1137 `ErrIllegalState`.
    IllegalState,
    /// 1145 `ErrPocNodeIdEmpty`.
    PocNodeIdEmpty,
    /// 1155 `ErrParticipantBlocked`.
    ParticipantBlocked,
    /// 1160 `ErrPocValidationAlreadyExists`.
    PocValidationAlreadyExists,
    /// 1161 `ErrDeprecated`.
    Deprecated,
    /// 1163 `ErrNotSupported`.
    NotSupported,
    /// 1164 `ErrInvalidAddress`.
    InvalidAddress,
    /// Basic validation of a message failed (SDK `ErrInvalidRequest`, code 18 in codespace `sdk`).
    InvalidRequest,
    /// The signer may not act for the creator (SDK `ErrUnauthorized`, 4).
    Unauthorized,
    /// Governance messages from anyone but the authority (`ErrInvalidSigner`).
    InvalidSigner,
    /// `sdk` 9: the signer has no account.
    UnknownAddress,
    /// `sdk` 21: the transaction is larger than the chain accepts.
    TxTooLarge,
    /// `sdk` 30: the transaction's timeout height has passed.
    TxTimeoutHeight,
    /// `sdk` 31: the body carries extension options.
    UnknownExtensionOptions,
    /// `sdk` 2: the transaction bytes do not decode.
    TxDecode,
    /// `sdk` 32: the account sequence does not match.
    WrongSequence,
    /// `sdk` 8: the public key is malformed.
    InvalidPubKey,
}

impl ErrorKind {
    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            Self::PocWrongStartBlockHeight => 1107,
            Self::PocTooLate => 1108,
            Self::UpcomingEpochNotFound => 1128,
            Self::IllegalState => 1137,
            Self::PocNodeIdEmpty => 1145,
            Self::ParticipantBlocked => 1155,
            Self::PocValidationAlreadyExists => 1160,
            Self::Deprecated => 1161,
            Self::NotSupported => 1163,
            Self::InvalidAddress => 1164,
            Self::InvalidRequest => 18,
            Self::Unauthorized => 4,
            Self::InvalidSigner => 1101,
            Self::UnknownAddress => 9,
            Self::TxTooLarge => 21,
            Self::TxTimeoutHeight => 30,
            Self::UnknownExtensionOptions => 31,
            Self::TxDecode => 2,
            Self::WrongSequence => 32,
            Self::InvalidPubKey => 8,
        }
    }

    /// The codespace the code belongs to.
    pub fn codespace(self) -> &'static str {
        match self {
            Self::InvalidRequest
            | Self::Unauthorized
            | Self::UnknownAddress
            | Self::TxTooLarge
            | Self::TxTimeoutHeight
            | Self::UnknownExtensionOptions
            | Self::TxDecode
            | Self::WrongSequence
            | Self::InvalidPubKey => "sdk",
            _ => "inference",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.codespace(), self.code())
    }
}

/// Shorthand constructor.
pub fn err(kind: ErrorKind, message: impl Into<String>) -> ChainError {
    ChainError {
        kind,
        message: message.into(),
    }
}

/// Result alias.
pub type ChainResult<T> = Result<T, ChainError>;

/// A parameter set (or a genesis) that breaks one of its rules; the message names the
/// field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidParams(pub String);

impl From<String> for InvalidParams {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for InvalidParams {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}
