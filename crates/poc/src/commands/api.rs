//! `poc api`.

use anyhow::{Context, bail};
use poc_api::config::{ApiConfig, EXAMPLE};
use toml::Value;

use crate::cli::ApiArgs;

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
    let p =
        |x: &Option<std::path::PathBuf>| x.as_ref().map(|p| Value::String(p.display().to_string()));
    set("chain_url", s(&args.chain_url));
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
