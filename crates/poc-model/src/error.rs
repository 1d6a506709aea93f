//! Errors of checkpoint loading and model execution.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is missing, malformed or inconsistent.
    #[error("{path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An architecture this build does not implement.
    #[error(
        "unsupported architecture {0:?}: this build runs Qwen3ForCausalLM and Qwen3MoeForCausalLM checkpoints"
    )]
    UnsupportedArchitecture(String),
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("tensor {name} is missing from the checkpoint")]
    MissingTensor {
        /// Full tensor name.
        name: String,
    },
    /// A tensor has the wrong shape for the configuration.
    #[error("tensor {name} has shape {got:?}, expected {expected:?} from config.json")]
    WrongShape {
        /// Full tensor name.
        name: String,
        /// Shape in the checkpoint.
        got: Vec<usize>,
        /// Shape the configuration implies.
        expected: Vec<usize>,
    },
    /// A tensor is stored in a dtype that cannot be used.
    #[error("tensor {name} is stored as {dtype}, which cannot be loaded")]
    BadDType {
        /// Full tensor name.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// The safetensors files cannot be read.
    #[error("cannot read the safetensors weights in {dir}: {reason}")]
    Weights {
        /// The model directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A request that does not fit the model (sequence too long, k too large, ...).
    #[error("{0}")]
    Request(String),
    /// An error inside a tensor operation.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
