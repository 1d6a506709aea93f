//! OpenAI-style chat completions on the served weights: the checkpoint's `tokenizer.json`
//! and chat template (`tokenizer_config.json`, rendered with minijinja like Hugging Face's
//! jinja2 settings).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// Text content.
    pub content: String,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    /// Served model name.
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Most tokens to generate.
    pub max_tokens: Option<usize>,
    /// Newer name of `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Sampler seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Server-sent events instead of one response.
    #[serde(default)]
    pub stream: bool,
}

/// Tokenizer and chat template of a checkpoint.
pub struct ChatModel {
    tokenizer: Tokenizer,
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Token ids that end generation.
    pub stop_ids: Vec<u32>,
}

fn token_text(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .to_owned(),
        _ => String::new(),
    }
}

/// A chat template or tokenizer that cannot be loaded or applied; the message says which
/// file or step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChatError(pub String);

impl From<String> for ChatError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl ChatModel {
    /// Loads `tokenizer.json` and the chat template of a model directory; `Ok(None)` when the
    /// checkpoint has no tokenizer (chat is then unavailable).
    pub fn load(dir: &Path, config_eos: &[u32]) -> Result<Option<Self>, ChatError> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Ok(None);
        }
        let tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| format!("{}: {e}", tok_path.display()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => {
                serde_json::from_str(&t).map_err(|e| format!("{}: {e}", cfg_path.display()))?
            }
            Err(_) => serde_json::json!({}),
        };
        let template = match cfg.get("chat_template") {
            Some(serde_json::Value::String(t)) => t.clone(),
            _ => match std::fs::read_to_string(dir.join("chat_template.jinja")) {
                Ok(t) => t,
                Err(_) => {
                    return Err(ChatError(format!(
                        "{} has no chat_template",
                        cfg_path.display()
                    )));
                }
            },
        };
        let mut env = minijinja::Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| e.to_string())?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", template)
            .map_err(|e| format!("chat template: {e}"))?;
        let eos_token = token_text(cfg.get("eos_token"));
        let mut stop_ids: Vec<u32> = config_eos.to_vec();
        if let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            match v.get("eos_token_id") {
                Some(serde_json::Value::Number(n)) => stop_ids.extend(n.as_u64().map(|x| x as u32)),
                Some(serde_json::Value::Array(a)) => {
                    stop_ids.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32))
                }
                _ => {}
            }
        }
        if let Some(id) = tokenizer.token_to_id(&eos_token) {
            stop_ids.push(id);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Some(Self {
            tokenizer,
            env,
            bos_token: token_text(cfg.get("bos_token")),
            eos_token,
            stop_ids,
        }))
    }

    /// Renders the conversation with the generation prompt and tokenizes it.
    pub fn prompt(&self, messages: &[Message]) -> Result<Vec<u32>, ChatError> {
        let text = self
            .env
            .get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => minijinja::value::Serde(messages),
                    add_generation_prompt => true,
                    bos_token => &self.bos_token,
                    eos_token => &self.eos_token,
                })
            })
            .map_err(|e| format!("cannot apply the chat template: {e}"))?;
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| e.to_string())?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of generated tokens (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }
}
