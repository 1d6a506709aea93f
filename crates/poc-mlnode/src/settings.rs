//! Node settings: command-line values plus the reference's environment variables.

use std::time::Duration;

use crate::schedule::ChatPolicy;

/// Tunables of the PoC side, with the reference's defaults (`docs/protocol/compute-v2.md` §4.11).
#[derive(Debug, Clone, PartialEq)]
pub struct PocSettings {
    /// `POC_BATCH_SIZE_DEFAULT`: nonces per forward when a request gives none.
    pub batch_size_default: usize,
    /// Largest `batch_size` a request may ask for.
    pub max_batch_size: usize,
    /// Longest `seq_len` a request may ask for.
    pub max_seq_len: usize,
    /// `POC_CALLBACK_INTERVAL_SEC`: how often generated artifacts are delivered.
    pub callback_interval: Duration,
    /// `POC_CALLBACK_MAX_ARTIFACTS`: callback buffer cap (oldest dropped beyond it).
    pub callback_max_artifacts: usize,
    /// `POC_CALLBACK_MAX_RETRIES`: attempts per callback payload before it is dropped.
    pub callback_max_retries: u32,
    /// `POC_GENERATE_RESULT_TTL_SEC`: how long finished queued results are kept.
    pub result_ttl: Duration,
    /// `POC_MAX_QUEUED_NONCES`: queue cap (429 beyond it).
    pub max_queued_nonces: usize,
    /// `POC_GENERATE_CHUNK_TIMEOUT_SEC`: per-chunk wait of `wait=true` requests (503 after).
    pub chunk_timeout: Duration,
    /// Most nonces one `/generate` request may carry.
    pub max_nonces_per_request: usize,
    /// `POC_CHAT_POLICY`: how chat and continuous generation share the model.
    pub chat_policy: ChatPolicy,
    /// `POC_CHAT_MAX_QUEUE`: most chat sessions running or waiting (429 beyond).
    pub chat_max_queue: usize,
    /// `POC_MAX_BATCH_TOKENS`: most tokens (rows) of one `mixed` step, and of a chat step.
    pub max_batch_tokens: usize,
    /// `POC_SHARE`: the fraction of the step budget PoC may take while chat waits.
    pub poc_share: f64,
}

impl Default for PocSettings {
    fn default() -> Self {
        Self {
            batch_size_default: 32,
            max_batch_size: 32,
            max_seq_len: 4096,
            callback_interval: Duration::from_secs(5),
            callback_max_artifacts: 1_000_000,
            callback_max_retries: 10,
            result_ttl: Duration::from_secs(300),
            max_queued_nonces: 100_000,
            chunk_timeout: Duration::from_secs(60),
            max_nonces_per_request: 100_000,
            chat_policy: ChatPolicy::default(),
            chat_max_queue: 256,
            max_batch_tokens: 8192,
            poc_share: 0.8,
        }
    }
}

/// A bad environment value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {name}={value:?} is not a valid {kind}")]
pub struct EnvError {
    /// Variable name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// What was expected.
    pub kind: &'static str,
}

impl PocSettings {
    /// The compute thread's scheduling settings.
    pub fn scheduler(&self) -> crate::schedule::SchedulerConfig {
        crate::schedule::SchedulerConfig {
            policy: self.chat_policy,
            chat_max_queue: self.chat_max_queue,
            max_batch_tokens: self.max_batch_tokens,
            poc_share: self.poc_share,
        }
    }

    /// Applies the reference's environment variables on top of `self`, reading them with
    /// `get` (`std::env::var` in production).
    pub fn with_env(mut self, get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let num = |name: &str| -> Result<Option<f64>, EnvError> {
            match get(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .map(Some)
                    .ok_or(EnvError {
                        name: name.into(),
                        value: v,
                        kind: "non-negative number",
                    }),
            }
        };
        if let Some(v) = num("POC_BATCH_SIZE_DEFAULT")? {
            self.batch_size_default = (v as usize).max(1);
        }
        if let Some(v) = num("POC_CALLBACK_INTERVAL_SEC")? {
            self.callback_interval = Duration::from_secs_f64(v.max(0.01));
        }
        if let Some(v) = num("POC_CALLBACK_MAX_ARTIFACTS")? {
            self.callback_max_artifacts = (v as usize).max(1);
        }
        if let Some(v) = num("POC_CALLBACK_MAX_RETRIES")? {
            self.callback_max_retries = (v as u32).max(1);
        }
        if let Some(v) = num("POC_GENERATE_RESULT_TTL_SEC")? {
            self.result_ttl = Duration::from_secs_f64(v);
        }
        if let Some(v) = num("POC_MAX_QUEUED_NONCES")? {
            self.max_queued_nonces = v as usize;
        }
        if let Some(v) = num("POC_GENERATE_CHUNK_TIMEOUT_SEC")? {
            self.chunk_timeout = Duration::from_secs_f64(v.max(0.01));
        }
        if let Some(v) = num("POC_CHAT_MAX_QUEUE")? {
            self.chat_max_queue = (v as usize).max(1);
        }
        if let Some(v) = num("POC_MAX_BATCH_TOKENS")? {
            self.max_batch_tokens = (v as usize).max(1);
        }
        if let Some(v) = num("POC_SHARE")? {
            if v > 1.0 {
                return Err(EnvError {
                    name: "POC_SHARE".into(),
                    value: v.to_string(),
                    kind: "fraction between 0 and 1",
                });
            }
            self.poc_share = v;
        }
        if let Some(v) = get("POC_CHAT_POLICY") {
            self.chat_policy = ChatPolicy::from_name(&v).ok_or(EnvError {
                name: "POC_CHAT_POLICY".into(),
                value: v,
                kind: "chat policy (mixed, poc-priority, chat-priority)",
            })?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides() {
        let env = |k: &str| match k {
            "POC_BATCH_SIZE_DEFAULT" => Some("8".to_owned()),
            "POC_CALLBACK_INTERVAL_SEC" => Some("0.5".to_owned()),
            "POC_MAX_QUEUED_NONCES" => Some("10".to_owned()),
            _ => None,
        };
        let s = PocSettings::default().with_env(env).unwrap();
        assert_eq!(s.batch_size_default, 8);
        assert_eq!(s.callback_interval, Duration::from_millis(500));
        assert_eq!(s.max_queued_nonces, 10);
        assert_eq!(s.result_ttl, Duration::from_secs(300));
        assert_eq!(s.chat_policy, ChatPolicy::Mixed);
        assert_eq!((s.max_batch_tokens, s.poc_share), (8192, 0.8));
        let chat = |k: &str| (k == "POC_CHAT_POLICY").then(|| "chat-priority".to_owned());
        assert_eq!(
            PocSettings::default().with_env(chat).unwrap().chat_policy,
            ChatPolicy::ChatPriority
        );
        let odd = |k: &str| (k == "POC_CHAT_POLICY").then(|| "whatever".to_owned());
        assert!(PocSettings::default().with_env(odd).is_err());
        let budget = |k: &str| match k {
            "POC_MAX_BATCH_TOKENS" => Some("2048".to_owned()),
            "POC_SHARE" => Some("0.5".to_owned()),
            _ => None,
        };
        let s = PocSettings::default().with_env(budget).unwrap();
        assert_eq!((s.max_batch_tokens, s.poc_share), (2048, 0.5));
        let greedy = |k: &str| (k == "POC_SHARE").then(|| "1.5".to_owned());
        assert!(PocSettings::default().with_env(greedy).is_err());
        let bad = |k: &str| (k == "POC_CALLBACK_INTERVAL_SEC").then(|| "soon".to_owned());
        let e = PocSettings::default().with_env(bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable POC_CALLBACK_INTERVAL_SEC=\"soon\" is not a valid non-negative number"
        );
    }
}
