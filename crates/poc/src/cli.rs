//! Argument groups several commands share (HTTP server limits, device and model
//! selection, nonce ranges) and their parsers. Each command's own arguments sit beside
//! its implementation in [`crate::commands`].

use std::path::PathBuf;

use clap::Args;

/// Limits of an HTTP server (docs/http.md). Unset values keep the configuration's, or
/// the defaults: 10 s header/idle timeout, 60 s body and write timeouts, 1024
/// connections, 256 per client address.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Seconds a client has to send a request head after connecting or after its previous
    /// response (so also the keep-alive idle timeout); then the connection is closed
    /// [default: 10].
    #[arg(long, value_name = "SECS", env = "POC_HTTP_HEADER_TIMEOUT")]
    pub http_header_timeout: Option<f64>,
    /// Seconds a client has to send a request body after its head [default: 60].
    #[arg(long, value_name = "SECS", env = "POC_HTTP_BODY_TIMEOUT")]
    pub http_body_timeout: Option<f64>,
    /// Seconds a response write may make no progress (the client stopped reading) before
    /// the connection is closed [default: 60].
    #[arg(long, value_name = "SECS", env = "POC_HTTP_WRITE_TIMEOUT")]
    pub http_write_timeout: Option<f64>,
    /// Connections served at once; further clients wait in the kernel's accept queue
    /// [default: 1024].
    #[arg(long, value_name = "N", env = "POC_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// Connections served at once from one client address; more are closed at once
    /// [default: 256].
    #[arg(long, value_name = "N", env = "POC_HTTP_MAX_CONNECTIONS_PER_IP")]
    pub http_max_connections_per_ip: Option<usize>,
}

impl HttpArgs {
    /// `base` with the flags applied, checked.
    pub fn apply(&self, base: poc_http::HttpLimits) -> anyhow::Result<poc_http::HttpLimits> {
        let l = poc_http::HttpLimits {
            header_timeout_s: self.http_header_timeout.unwrap_or(base.header_timeout_s),
            body_timeout_s: self.http_body_timeout.unwrap_or(base.body_timeout_s),
            write_timeout_s: self.http_write_timeout.unwrap_or(base.write_timeout_s),
            max_connections: self.http_max_connections.unwrap_or(base.max_connections),
            max_connections_per_ip: self
                .http_max_connections_per_ip
                .unwrap_or(base.max_connections_per_ip),
        };
        l.validate()
            .map_err(|e| anyhow::anyhow!("invalid HTTP limit: {e}"))?;
        Ok(l)
    }
}

/// Parses `1s`, `500ms`, `2.5s`, `1m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(format!("{s:?}: give a unit, e.g. 1s, 500ms, 1m"));
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(v * mult))
}

/// Which nonces to compute: an explicit list or a half-open range.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct NonceSelection {
    /// Comma-separated nonces, e.g. `0,5,9`.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub nonces: Vec<i64>,
    /// A half-open range `START..END`, e.g. `0..100`.
    #[arg(long, value_name = "START..END")]
    pub nonce_range: Option<String>,
}

/// Names of the built-in presets.
pub const PRESETS: [&str; 5] = [
    "tiny-moe",
    "tiny-dense",
    "bench-dense-0.6b",
    "bench-moe-30b-a3b-2l",
    "qwen3-235b-a22b-fp8",
];

/// Where the model runs and how FP8 weights are kept.
#[derive(Debug, Args, Clone)]
pub struct DeviceArgs {
    /// Devices, comma-separated: `cpu`, `cuda`, `cuda:N`. Several devices form a layer
    /// pipeline in that order (contiguous layer ranges placed by the memory planner,
    /// batches flowing from device to device), e.g. `cuda:0,cuda:1`. Default: the first
    /// GPU in a CUDA build, else the CPU (or `POC_DEVICE`).
    #[arg(long, env = "POC_DEVICES", value_delimiter = ',', value_name = "LIST")]
    pub devices: Vec<String>,
    /// How FP8 checkpoint weights are kept: `dequantize` (widened at load), `w8a16` (FP8
    /// resident, dequantized just before each product; same artifacts as `dequantize`),
    /// `w8a8` (FP8 resident, activations quantized per token group of 128 as well);
    /// `auto`: `w8a16` on GPUs, `dequantize` on CPUs.
    #[arg(long, default_value = "auto", value_parser = ["auto", "dequantize", "w8a16", "w8a8"])]
    pub fp8_path: String,
}

impl DeviceArgs {
    /// The FP8 path (`None` = the device's default).
    pub fn fp8(&self) -> Option<poc_model::Fp8Path> {
        poc_model::Fp8Path::from_name(&self.fp8_path)
    }
}

/// The model and how to run it.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model directory (config.json + safetensors).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "preset",
        conflicts_with = "preset"
    )]
    pub model: Option<PathBuf>,
    /// Instead of a directory: a built-in preset generated in memory, never written (the
    /// same weights `poc model init --preset` writes), e.g. `qwen3-235b-a22b-fp8` with
    /// `--layers 4` to measure real-width layers without a 236 GB checkpoint.
    #[arg(long, value_parser = PRESETS)]
    pub preset: Option<String>,
    /// With `--preset`: the number of decoder layers (default: the preset's).
    #[arg(long, requires = "preset")]
    pub layers: Option<usize>,
    /// Compute dtype; `auto` is the checkpoint's dtype.
    #[arg(long, default_value = "auto", value_parser = ["auto", "bf16", "f16", "f32"])]
    pub dtype: String,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl ModelArgs {
    /// A name for reports: the directory or `preset:NAME[:LAYERS]`.
    pub fn label(&self) -> String {
        match (&self.model, &self.preset) {
            (Some(m), _) => m.display().to_string(),
            (None, Some(p)) => match self.layers {
                Some(n) => format!("preset:{p}:{n}l"),
                None => format!("preset:{p}"),
            },
            (None, None) => String::new(),
        }
    }
}

/// The round and participant every PoC seed string is built from.
#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Block hash of the PoC stage start, used verbatim (case matters).
    #[arg(long)]
    pub block_hash: String,
    /// Participant public key, used verbatim (case matters).
    #[arg(long)]
    pub public_key: String,
}
