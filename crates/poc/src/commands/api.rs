//! `poc api`.

use anyhow::{Context, bail};
use poc_api::config::{ApiConfig, EXAMPLE};
use toml::Value;

use crate::cli::HttpArgs;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", env = "POC_API_CONFIG")]
    pub config: Option<PathBuf>,
    /// Chain node REST URL (module queries and the Cosmos SDK gateway; port 1317 on a
    /// Gonka node).
    #[arg(long, env = "POC_API_CHAIN_URL")]
    pub chain_url: Option<String>,
    /// Chain node CometBFT RPC URL (port 26657 on a Gonka node), read for the latest
    /// block; without it the REST gateway's latest block is read.
    #[arg(long, env = "POC_API_CHAIN_RPC_URL")]
    pub chain_rpc_url: Option<String>,
    /// Account (cold) key file.
    #[arg(long, value_name = "FILE", env = "POC_API_ACCOUNT_KEY")]
    pub account_key: Option<PathBuf>,
    /// Operational (warm) key file.
    #[arg(long, value_name = "FILE", env = "POC_API_OPERATIONAL_KEY")]
    pub operational_key: Option<PathBuf>,
    /// Public URL of this node's proof API.
    #[arg(long, env = "POC_API_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Public server listen address.
    #[arg(long, env = "POC_API_PUBLIC_LISTEN")]
    pub public_listen: Option<String>,
    /// ML callback server listen address.
    #[arg(long, env = "POC_API_ML_LISTEN")]
    pub ml_listen: Option<String>,
    /// Base URL the ML nodes call back.
    #[arg(long, env = "POC_API_CALLBACK_URL")]
    pub callback_url: Option<String>,
    /// Data directory for the artifact stores.
    #[arg(long, value_name = "DIR", env = "POC_API_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// An ML node as `ID=URL` (repeatable; replaces the file's list).
    #[arg(
        long = "ml-node",
        value_name = "ID=URL",
        env = "POC_API_ML_NODES",
        value_delimiter = ','
    )]
    pub ml_nodes: Vec<String>,
    /// Seconds between flush + commit attempts.
    #[arg(long, env = "POC_API_COMMIT_INTERVAL")]
    pub commit_interval: Option<f64>,
    /// Allow proof requests to private/loopback addresses (devnets).
    #[arg(long, env = "POC_API_ALLOW_PRIVATE_TARGETS")]
    pub allow_private_targets: Option<bool>,
    /// Networks the ML callback server accepts requests from, comma-separated
    /// (`10.0.0.0/8,192.168.1.7`); default: loopback and the ML nodes' addresses.
    #[arg(
        long,
        value_name = "NETS",
        env = "POC_API_CALLBACK_ALLOW",
        value_delimiter = ','
    )]
    pub callback_allow: Vec<String>,
    /// Limits of the public and callback servers.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Print the example configuration and exit.
    #[arg(long)]
    pub print_example: bool,
}

/// The file's table with the flags applied.
pub fn resolve(args: &ApiArgs) -> anyhow::Result<ApiConfig> {
    let mut table = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            text.parse::<toml::Table>()
                .with_context(|| format!("{} is not valid TOML", p.display()))?
        }
        None => toml::Table::new(),
    };
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            table.insert(k.to_owned(), v);
        }
    };
    let s = |x: &Option<String>| x.clone().map(Value::String);
    let p = |x: &Option<PathBuf>| x.as_ref().map(|p| Value::String(p.display().to_string()));
    set("chain_url", s(&args.chain_url));
    set("chain_rpc_url", s(&args.chain_rpc_url));
    set("account_key", p(&args.account_key));
    set("operational_key", p(&args.operational_key));
    set("public_url", s(&args.public_url));
    set("public_listen", s(&args.public_listen));
    set("ml_listen", s(&args.ml_listen));
    set("callback_url", s(&args.callback_url));
    set("data_dir", p(&args.data_dir));
    set("commit_interval_s", args.commit_interval.map(Value::Float));
    set(
        "allow_private_targets",
        args.allow_private_targets.map(Value::Boolean),
    );
    if !args.callback_allow.is_empty() {
        table.insert(
            "callback_allow".into(),
            Value::Array(
                args.callback_allow
                    .iter()
                    .map(|n| Value::String(n.clone()))
                    .collect(),
            ),
        );
    }
    {
        let http = table
            .entry("http")
            .or_insert_with(|| Value::Table(toml::Table::new()));
        let Value::Table(http) = http else {
            bail!("`http` in the configuration must be a table");
        };
        if let Some(v) = args.http.http_header_timeout {
            http.insert("header_timeout_s".into(), Value::Float(v));
        }
        if let Some(v) = args.http.http_body_timeout {
            http.insert("body_timeout_s".into(), Value::Float(v));
        }
        if let Some(v) = args.http.http_write_timeout {
            http.insert("write_timeout_s".into(), Value::Float(v));
        }
        if let Some(v) = args.http.http_max_connections {
            http.insert("max_connections".into(), Value::Integer(v as i64));
        }
        if let Some(v) = args.http.http_max_connections_per_ip {
            http.insert("max_connections_per_ip".into(), Value::Integer(v as i64));
        }
    }
    if !args.ml_nodes.is_empty() {
        let mut list = Vec::new();
        for n in &args.ml_nodes {
            let (id, url) = n
                .split_once('=')
                .with_context(|| format!("--ml-node {n:?}: expected ID=URL"))?;
            let mut t = toml::Table::new();
            t.insert("id".into(), Value::String(id.into()));
            t.insert("url".into(), Value::String(url.into()));
            list.push(Value::Table(t));
        }
        table.insert("ml_nodes".into(), Value::Array(list));
    }
    let cfg: ApiConfig = Value::Table(table)
        .try_into()
        .context("incomplete or invalid configuration (see `poc api --print-example`)")?;
    if let Err(e) = cfg.validate() {
        bail!("invalid configuration: {e}");
    }
    Ok(cfg)
}

pub fn run(args: &ApiArgs) -> anyhow::Result<()> {
    if args.print_example {
        print!("{EXAMPLE}");
        return Ok(());
    }
    let cfg = resolve(args)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let node = poc_api::start(cfg).await?;
        tracing::info!(
            "API node: public http://{} , ML callbacks http://{}; Ctrl-C stops it",
            node.public_addr,
            node.ml_addr
        );
        super::mlnode::shutdown_signal().await;
        tracing::info!("shutting down: sending pending votes and flushing the stores");
        node.shutdown().await;
        anyhow::Ok(())
    })
}
