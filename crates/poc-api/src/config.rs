//! `poc api` configuration (TOML). Every field can also be set by a command-line flag or
//! an environment variable (the binary applies those over the file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration that does not parse or breaks a rule.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML for this schema.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A value breaks a rule; the message names the field.
    #[error("{0}")]
    Invalid(String),
}

impl From<crate::callbacks::BadAllowEntry> for ConfigError {
    fn from(e: crate::callbacks::BadAllowEntry) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<String> for ConfigError {
    fn from(s: String) -> Self {
        Self::Invalid(s)
    }
}

/// One ML node this API node drives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlNodeEntry {
    /// Stable id (reported in the weight distribution).
    pub id: String,
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
}

/// Validation tuning (defaults are the reference's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Participants validated in parallel.
    pub workers: usize,
    /// Proof request timeout, seconds.
    pub request_timeout_s: f64,
    /// Attempts per participant on transient failures.
    pub max_retries: u32,
    /// Pause between attempts, seconds.
    pub retry_backoff_s: f64,
    /// Attempts to find an eligible ML node.
    pub node_retries: u32,
    /// Pause between those attempts, seconds.
    pub node_retry_delay_s: f64,
    /// Votes pending before a flush.
    pub flush_size: usize,
    /// Seconds after the first pending vote of a stage before a flush (at most; shortened
    /// so that votes land well inside the chain's validation window).
    pub flush_timeout_s: f64,
    /// Largest proof response accepted, bytes.
    pub max_response_bytes: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            workers: 10,
            request_timeout_s: 20.0,
            max_retries: 15,
            retry_backoff_s: 3.0,
            node_retries: 30,
            node_retry_delay_s: 5.0,
            flush_size: 10,
            flush_timeout_s: 30.0,
            max_response_bytes: 4 * 1024 * 1024,
        }
    }
}

/// PoC v1 round settings (the chain of this implementation does not carry the v1
/// model parameters, so the API node sends these to its ML nodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct V1Config {
    /// Parameter set: `mainnet`, `testnet` or `tiny`.
    pub params: String,
    /// Distance threshold.
    pub r_target: f64,
    /// Fraud threshold of the v1 binomial test.
    pub fraud_threshold: f64,
}

impl Default for V1Config {
    fn default() -> Self {
        Self {
            params: "mainnet".into(),
            r_target: 1.401_356_466_045_817_3,
            fraud_threshold: 1e-7,
        }
    }
}

impl V1Config {
    /// The model parameters as the ML node's JSON.
    pub fn model_params(&self) -> serde_json::Value {
        serde_json::to_value(
            poc_v1::params::V1Params::by_name(&self.params)
                .unwrap_or_else(poc_v1::params::V1Params::mainnet),
        )
        .expect("params serialise")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Chain node REST URL: the module's queries and the Cosmos SDK gateway (a Gonka
    /// node's port 1317).
    pub chain_url: String,
    /// Chain node CometBFT RPC URL (a Gonka node's port 26657), read for the latest
    /// block; without it the SDK gateway's `blocks/latest` is read instead.
    #[serde(default)]
    pub chain_rpc_url: Option<String>,
    /// Account (cold) key file: registers, grants, owns the weight.
    pub account_key: PathBuf,
    /// Operational (warm) key file: signs PoC transactions through MsgExec.
    pub operational_key: PathBuf,
    /// The public URL other participants reach this node at (proof API).
    pub public_url: String,
    /// Listen address of the public server (proof API, health, metrics).
    pub public_listen: SocketAddr,
    /// Listen address of the ML callback server.
    pub ml_listen: SocketAddr,
    /// Base URL ML nodes post callbacks to; default `http://<ml_listen>`.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Data directory (artifact stores, one per stage).
    pub data_dir: PathBuf,
    #[serde(default)]
    pub ml_nodes: Vec<MlNodeEntry>,
    /// Seconds between store commits while artifacts arrive (at most: shortened to fit
    /// the chain's exchange window, and a final commit is sent as the window closes).
    #[serde(default = "default_commit_interval")]
    pub commit_interval_s: f64,
    /// Seconds between chain polls.
    #[serde(default = "default_poll")]
    pub chain_poll_s: f64,
    /// Seconds between ML node health checks.
    #[serde(default = "default_health")]
    pub health_interval_s: f64,
    /// Allow proof requests to private and loopback addresses (devnets only).
    #[serde(default)]
    pub allow_private_targets: bool,
    /// Stage stores kept on disk.
    #[serde(default = "default_keep")]
    pub keep_stages: usize,
    /// Proof requests per second per client IP (reference: 5).
    #[serde(default = "default_rate")]
    pub proof_rate_per_sec: f64,
    /// Burst of proof requests per client IP (reference: 30).
    #[serde(default = "default_burst")]
    pub proof_rate_burst: f64,
    /// Take the client IP of a proof request from `X-Forwarded-For` / `X-Real-IP` when
    /// present, as the reference does (right behind a reverse proxy). Turn off when the
    /// public port is reachable directly, so a client cannot choose its own bucket.
    #[serde(default = "yes")]
    pub trust_forwarded_headers: bool,
    /// Networks the ML callback server accepts requests from (`10.0.0.0/8`,
    /// `192.168.1.7`, ...). Empty (the default): loopback and the ML nodes' addresses.
    #[serde(default)]
    pub callback_allow: Vec<String>,
    /// Header/idle and body timeouts and the connection cap of both HTTP servers.
    #[serde(default)]
    pub http: poc_http::HttpLimits,
    /// Validation tuning.
    #[serde(default)]
    pub validation: ValidationConfig,
    /// PoC v1 settings.
    #[serde(default)]
    pub v1: V1Config,
}

fn default_commit_interval() -> f64 {
    5.0
}
fn default_poll() -> f64 {
    0.5
}
fn default_health() -> f64 {
    10.0
}
fn default_keep() -> usize {
    10
}
fn default_rate() -> f64 {
    5.0
}
fn default_burst() -> f64 {
    30.0
}
fn yes() -> bool {
    true
}

/// Seconds to a duration (clamped to ≥ 1 ms).
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.max(0.001) } else { 1.0 })
}

impl ApiConfig {
    /// The required settings, everything else at its default (what a TOML file with
    /// only these keys gives).
    pub fn new(
        chain_url: impl Into<String>,
        account_key: impl Into<PathBuf>,
        operational_key: impl Into<PathBuf>,
        public_listen: SocketAddr,
        ml_listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            chain_url: chain_url.into(),
            chain_rpc_url: None,
            account_key: account_key.into(),
            operational_key: operational_key.into(),
            public_url: format!("http://{public_listen}"),
            public_listen,
            ml_listen,
            callback_url: None,
            data_dir: data_dir.into(),
            ml_nodes: Vec::new(),
            commit_interval_s: default_commit_interval(),
            chain_poll_s: default_poll(),
            health_interval_s: default_health(),
            allow_private_targets: false,
            keep_stages: default_keep(),
            proof_rate_per_sec: default_rate(),
            proof_rate_burst: default_burst(),
            trust_forwarded_headers: true,
            callback_allow: Vec::new(),
            http: poc_http::HttpLimits::default(),
            validation: ValidationConfig::default(),
            v1: V1Config::default(),
        }
    }

    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// The callback base URL.
    pub fn callback_base(&self) -> String {
        self.callback_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.ml_listen))
    }

    /// Checks values a typo would break.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rpc = self.chain_rpc_url.as_ref().map(|u| ("chain_rpc_url", u));
        for (name, url) in [
            ("chain_url", &self.chain_url),
            ("public_url", &self.public_url),
        ]
        .into_iter()
        .chain(rpc)
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be an http(s) URL, got {url:?}"
                )));
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for n in &self.ml_nodes {
            if n.id.is_empty() || n.id.len() > 128 {
                return Err(ConfigError::Invalid(format!(
                    "ml_nodes: id {:?} must be 1..=128 characters",
                    n.id
                )));
            }
            if !ids.insert(&n.id) {
                return Err(ConfigError::Invalid(format!(
                    "ml_nodes: id {:?} is listed twice",
                    n.id
                )));
            }
            if !n.url.starts_with("http://") && !n.url.starts_with("https://") {
                return Err(ConfigError::Invalid(format!(
                    "ml_nodes[{}].url must be an http(s) URL",
                    n.id
                )));
            }
        }
        if !(self.proof_rate_per_sec.is_finite() && self.proof_rate_per_sec > 0.0) {
            return Err(ConfigError::Invalid(format!(
                "proof_rate_per_sec must be a positive number of requests per second, got {}",
                self.proof_rate_per_sec
            )));
        }
        if !(self.proof_rate_burst.is_finite() && self.proof_rate_burst >= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "proof_rate_burst must be at least 1 request, got {}",
                self.proof_rate_burst
            )));
        }
        if self.commit_interval_s <= 0.0 || self.chain_poll_s <= 0.0 {
            return Err(ConfigError::Invalid(
                "commit_interval_s and chain_poll_s must be positive".into(),
            ));
        }
        if poc_v1::params::V1Params::by_name(&self.v1.params).is_none() {
            return Err(ConfigError::Invalid(format!(
                "v1.params {:?} must be mainnet, testnet or tiny",
                self.v1.params
            )));
        }
        self.http.validate().map_err(|e| format!("http: {e}"))?;
        crate::callbacks::AllowList::parse(&self.callback_allow)?;
        if self.validation.workers == 0 || self.validation.flush_size == 0 {
            return Err(ConfigError::Invalid(
                "validation.workers and validation.flush_size must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// The documented example (`examples/api.toml` is the same text).
pub const EXAMPLE: &str = include_str!("../../../examples/api.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_gives_the_file_defaults() {
        let from_file = ApiConfig::from_toml(
            r#"
            chain_url = "http://127.0.0.1:1317"
            account_key = "a.key"
            operational_key = "o.key"
            public_url = "http://127.0.0.1:9000"
            public_listen = "127.0.0.1:9000"
            ml_listen = "127.0.0.1:9100"
            data_dir = "d"
            "#,
        )
        .unwrap();
        let made = ApiConfig::new(
            "http://127.0.0.1:1317",
            "a.key",
            "o.key",
            "127.0.0.1:9000".parse().unwrap(),
            "127.0.0.1:9100".parse().unwrap(),
            "d",
        );
        assert_eq!(made, from_file);
    }

    #[test]
    fn the_example_parses_and_validates() {
        let c = ApiConfig::from_toml(EXAMPLE).unwrap();
        c.validate().unwrap();
        assert_eq!(c.ml_nodes.len(), 1);
        assert_eq!(c.validation.workers, 10);
        assert!(ApiConfig::from_toml(&format!("{EXAMPLE}\nunknown_field = 1\n")).is_err());
    }

    #[test]
    fn proof_rates_must_be_positive() {
        let ok = ApiConfig::from_toml(EXAMPLE).unwrap();
        for (rate, burst) in [(0.0, 30.0), (-1.0, 30.0), (f64::NAN, 30.0), (5.0, 0.5)] {
            let c = ApiConfig {
                proof_rate_per_sec: rate,
                proof_rate_burst: burst,
                ..ok.clone()
            };
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains("proof_rate"), "{e}");
        }
    }
}
