//! # poc-chain-client: the chain node's REST API from Rust
//!
//! [`ChainClient`] wraps the queries a participant needs, all of them interfaces a Gonka
//! node serves too: the module's paths under `/productscience/inference/inference/…`, the
//! Cosmos SDK gateway (`/cosmos/auth`, `/cosmos/tx`, `/cosmos/base/tendermint`) and, when
//! given an RPC URL, CometBFT's `status`. [`TxSigner`] signs and broadcasts transactions
//! for one key, tracking its account sequence. (`status`, `block` and `epoch_group` are
//! this chain's own additions, for tools, and are not used by the API node.)

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::time::Duration;

use poc_chain::api::*;
use poc_chain::keys::PrivateKey;
use poc_chain::tx::{self, TxMsg};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connection or protocol failure (transient: retry).
    #[error("chain node at {url} is unreachable: {source}")]
    Http {
        url: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// The node answered with an error status.
    #[error("chain node answered {status} for {url}: {message}")]
    Status {
        url: String,
        /// HTTP status.
        status: u16,
        /// The node's message.
        message: String,
    },
    /// The answer does not parse.
    #[error("chain node's answer for {url} does not parse: {msg}")]
    Decode {
        url: String,
        /// Parser message.
        msg: String,
    },
    /// The signing key has no account on the chain, so nothing it signs is accepted.
    #[error(
        "{0} has no account on the chain: add it to genesis, or have the participant grant it its messages"
    )]
    NoAccount(String),
}

impl ClientError {
    /// Whether retrying may help (network errors, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::Decode { .. } => false,
            // A grant to the key opens its account.
            Self::NoAccount(_) => true,
        }
    }

    /// HTTP status, if the node answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client for one node.
#[derive(Debug, Clone)]
pub struct ChainClient {
    base: String,
    rpc: Option<String>,
    http: reqwest::Client,
}

/// The latest block: what the API node follows the chain by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub height: i64,
    /// Its hash, uppercase hex (CometBFT's `Hash().String()`).
    pub hash: String,
}

/// CometBFT RPC `status` (the fields read).
#[derive(serde::Deserialize)]
struct RpcStatus {
    result: RpcStatusResult,
}

#[derive(serde::Deserialize)]
struct RpcStatusResult {
    sync_info: RpcSyncInfo,
}

#[derive(serde::Deserialize)]
struct RpcSyncInfo {
    latest_block_hash: String,
    #[serde(with = "poc_chain::json::i64_string")]
    latest_block_height: i64,
}

/// `GET /cosmos/base/tendermint/v1beta1/node_info` (the fields read).
#[derive(serde::Deserialize)]
struct NodeInfo {
    default_node_info: DefaultNodeInfo,
}

#[derive(serde::Deserialize)]
struct DefaultNodeInfo {
    network: String,
}

impl ChainClient {
    /// A client for `base` (e.g. `http://127.0.0.1:1317`), with a 35 s request timeout
    /// (block-mode broadcasts wait up to 30 s).
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(35))
            // Below the servers' idle timeout (docs/http.md).
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .expect("the HTTP client builds");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            rpc: None,
            http,
        }
    }

    /// The same client, reading the head from the CometBFT RPC at `rpc` (e.g.
    /// `http://127.0.0.1:26657`) rather than from the SDK gateway.
    pub fn with_rpc(mut self, rpc: &str) -> Self {
        self.rpc = Some(rpc.trim_end_matches('/').to_owned());
        self
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The CometBFT RPC URL, if one was given.
    pub fn rpc(&self) -> Option<&str> {
        self.rpc.as_deref()
    }

    async fn read<T: DeserializeOwned>(
        url: String,
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, ClientError> {
        let resp = resp.map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            url,
            msg: e.to_string(),
        })
    }

    /// GET a path below the base.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.http.get(&url).send().await;
        Self::read(url, r).await
    }

    async fn q<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.get(&format!("{PREFIX}{path}")).await
    }

    async fn opt<T>(r: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /status`: this chain node's own summary (chain id, head, app hash, mempool),
    /// for tools; a Gonka node does not serve it.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get("/status").await
    }

    /// The latest block's height and hash: from the RPC's `status` when the client has
    /// an RPC URL, else from the SDK gateway's `blocks/latest`. Errors while the chain
    /// has no block yet.
    pub async fn head(&self) -> Result<ChainHead, ClientError> {
        if let Some(rpc) = &self.rpc {
            let url = format!("{rpc}/status");
            let r = self.http.get(&url).send().await;
            let s = Self::read::<RpcStatus>(url.clone(), r)
                .await?
                .result
                .sync_info;
            let hash = hex::decode(&s.latest_block_hash)
                .ok()
                .filter(|h| h.len() == 32)
                .ok_or_else(|| ClientError::Decode {
                    url,
                    msg: "sync_info.latest_block_hash is not 32 bytes of hex".into(),
                })?;
            return Ok(ChainHead {
                height: s.latest_block_height,
                hash: hex::encode_upper(hash),
            });
        }
        let path = "/cosmos/base/tendermint/v1beta1/blocks/latest";
        let b = self.get::<serde_json::Value>(path).await?;
        let url = format!("{}{path}", self.base);
        let height = b["block"]["header"]["height"]
            .as_str()
            .and_then(|h| h.parse().ok())
            .ok_or_else(|| ClientError::Decode {
                url: url.clone(),
                msg: "block.header.height is not an integer string".into(),
            })?;
        Ok(ChainHead {
            height,
            hash: gateway_hash(&b, url)?,
        })
    }

    /// The chain id, from the SDK gateway's `GET /cosmos/base/tendermint/v1beta1/node_info`.
    pub async fn chain_id(&self) -> Result<String, ClientError> {
        let n = self
            .get::<NodeInfo>("/cosmos/base/tendermint/v1beta1/node_info")
            .await?;
        Ok(n.default_node_info.network)
    }

    /// `epoch_info`.
    pub async fn epoch_info(&self) -> Result<EpochInfoResponse, ClientError> {
        self.q("/epoch_info").await
    }

    /// `params`.
    pub async fn params(&self) -> Result<ParamsResponse, ClientError> {
        self.q("/params").await
    }

    /// `poc_v2_store_commit/{h}/{addr}`.
    pub async fn store_commit(
        &self,
        h: i64,
        addr: &str,
    ) -> Result<StoreCommitResponse, ClientError> {
        self.q(&format!("/poc_v2_store_commit/{h}/{addr}")).await
    }

    /// `mlnode_weight_distribution/{h}/{addr}`.
    pub async fn distribution(
        &self,
        h: i64,
        addr: &str,
    ) -> Result<DistributionResponse, ClientError> {
        self.q(&format!("/mlnode_weight_distribution/{h}/{addr}"))
            .await
    }

    /// `all_poc_v2_store_commits/{h}`.
    pub async fn all_commits(&self, h: i64) -> Result<AllCommitsResponse, ClientError> {
        self.q(&format!("/all_poc_v2_store_commits/{h}")).await
    }

    /// `all_mlnode_weight_distributions/{h}`.
    pub async fn all_distributions(&self, h: i64) -> Result<AllDistributionsResponse, ClientError> {
        self.q(&format!("/all_mlnode_weight_distributions/{h}"))
            .await
    }

    /// `poc_v2_validations_for_stage/{h}`.
    pub async fn validations_v2(&self, h: i64) -> Result<ValidationsV2Response, ClientError> {
        self.q(&format!("/poc_v2_validations_for_stage/{h}")).await
    }

    /// `confirmation_poc_events/{epoch}`.
    pub async fn confirmation_events(&self, epoch: u64) -> Result<EventsResponse, ClientError> {
        self.q(&format!("/confirmation_poc_events/{epoch}")).await
    }

    /// `active_confirmation_poc_event`.
    pub async fn active_event(&self) -> Result<ActiveEventResponse, ClientError> {
        self.q("/active_confirmation_poc_event").await
    }

    /// `poc_validation_snapshot/{h}`.
    pub async fn snapshot(&self, h: i64) -> Result<SnapshotResponse, ClientError> {
        self.q(&format!("/poc_validation_snapshot/{h}")).await
    }

    /// v1 `poc_batches_for_stage/{h}`.
    pub async fn batches(&self, h: i64) -> Result<BatchesResponse, ClientError> {
        self.q(&format!("/poc_batches_for_stage/{h}")).await
    }

    /// v1 `poc_validations_for_stage/{h}`.
    pub async fn validations_v1(&self, h: i64) -> Result<ValidationsV1Response, ClientError> {
        self.q(&format!("/poc_validations_for_stage/{h}")).await
    }

    /// v1 `count_po_c_batches_at_height/{h}`.
    pub async fn count_batches(&self, h: i64) -> Result<u64, ClientError> {
        Ok(self
            .q::<CountResponse>(&format!("/count_po_c_batches_at_height/{h}"))
            .await?
            .count)
    }

    /// v1 `count_po_c_validations_at_height/{h}`.
    pub async fn count_validations(&self, h: i64) -> Result<u64, ClientError> {
        Ok(self
            .q::<CountResponse>(&format!("/count_po_c_validations_at_height/{h}"))
            .await?
            .count)
    }

    /// `participant/{addr}`; `None` if not registered.
    pub async fn participant(
        &self,
        addr: &str,
    ) -> Result<Option<ParticipantResponse>, ClientError> {
        Self::opt(self.q(&format!("/participant/{addr}")).await).await
    }

    /// `participant` (all of them).
    pub async fn participants(&self) -> Result<ParticipantsResponse, ClientError> {
        self.q("/participant").await
    }

    /// `grantees_by_message_type/{granter}/{type_url}`.
    pub async fn grantees(
        &self,
        granter: &str,
        type_url: &str,
    ) -> Result<GranteesResponse, ClientError> {
        self.q(&format!(
            "/grantees_by_message_type/{granter}/{}",
            type_url.trim_start_matches('/')
        ))
        .await
    }

    /// `epoch_group/{epoch}`; `None` before the epoch's weights exist.
    pub async fn epoch_group(&self, epoch: u64) -> Result<Option<EpochGroupResponse>, ClientError> {
        Self::opt(self.q(&format!("/epoch_group/{epoch}")).await).await
    }

    /// `GET /cosmos/auth/v1beta1/accounts/{addr}`: the account's number and next
    /// sequence; `None` when the address has no account.
    pub async fn account(&self, addr: &str) -> Result<Option<BaseAccount>, ClientError> {
        let r = self
            .get::<AccountResponse>(&format!("/cosmos/auth/v1beta1/accounts/{addr}"))
            .await;
        Ok(Self::opt(r).await?.map(|r| r.account))
    }

    /// `GET /blocks/{h}` as JSON.
    pub async fn block(&self, h: i64) -> Result<Option<serde_json::Value>, ClientError> {
        Self::opt(self.get(&format!("/blocks/{h}")).await).await
    }

    /// The hash of block `h` as CometBFT writes it (uppercase hex), from the SDK
    /// gateway's `GET /cosmos/base/tendermint/v1beta1/blocks/{h}` (base64 there); `None`
    /// when the node has no such block.
    pub async fn block_hash(&self, h: i64) -> Result<Option<String>, ClientError> {
        let path = format!("/cosmos/base/tendermint/v1beta1/blocks/{h}");
        let Some(b) = Self::opt(self.get::<serde_json::Value>(&path).await).await? else {
            return Ok(None);
        };
        let url = format!("{}{path}", self.base);
        gateway_hash(&b, url).map(Some)
    }

    /// `GET /cosmos/tx/v1beta1/txs/{hash}`; `None` while not in a block.
    pub async fn tx(&self, hash: &str) -> Result<Option<TxResponse>, ClientError> {
        let path = format!("/cosmos/tx/v1beta1/txs/{hash}");
        Ok(Self::opt(self.get::<BroadcastResponse>(&path).await)
            .await?
            .map(|r| r.tx_response))
    }

    /// `POST /cosmos/tx/v1beta1/txs` (`{tx_bytes, mode}`, as the SDK gateway takes it).
    pub async fn broadcast(
        &self,
        tx_bytes: Vec<u8>,
        mode: BroadcastMode,
    ) -> Result<TxResponse, ClientError> {
        let url = format!("{}/cosmos/tx/v1beta1/txs", self.base);
        let r = self
            .http
            .post(&url)
            .json(&BroadcastRequest { tx_bytes, mode })
            .send()
            .await;
        Ok(Self::read::<BroadcastResponse>(url, r).await?.tx_response)
    }
}

/// `block_id.hash` of an SDK gateway block (base64) as uppercase hex.
fn gateway_hash(b: &serde_json::Value, url: String) -> Result<String, ClientError> {
    let hash = b["block_id"]["hash"]
        .as_str()
        .and_then(|x| STANDARD.decode(x).ok())
        .filter(|x| x.len() == 32)
        .ok_or_else(|| ClientError::Decode {
            url,
            msg: "block_id.hash is not base64 of 32 bytes".into(),
        })?;
    Ok(hex::encode_upper(hash))
}

/// Signs and broadcasts transactions for one key, keeping track of its sequence.
pub struct TxSigner {
    client: ChainClient,
    key: PrivateKey,
    chain_id: Mutex<Option<String>>,
    /// `(account number, next sequence)`.
    account: Mutex<Option<(u64, u64)>>,
}

impl TxSigner {
    /// A signer for `key` on the node behind `client`.
    pub fn new(client: ChainClient, key: PrivateKey) -> Self {
        Self {
            client,
            key,
            chain_id: Mutex::new(None),
            account: Mutex::new(None),
        }
    }

    /// The signing key's address.
    pub fn address(&self) -> String {
        self.key.address()
    }

    /// The client.
    pub fn client(&self) -> &ChainClient {
        &self.client
    }

    /// Signs `msgs` at the next sequence and broadcasts them. A sequence mismatch (another
    /// process used the key, or a transaction was dropped) refreshes the sequence from the
    /// chain and retries once. The sequence advances only when the node accepted the
    /// transaction into its mempool.
    pub async fn send(
        &self,
        msgs: &[TxMsg],
        mode: BroadcastMode,
    ) -> Result<TxResponse, ClientError> {
        let chain_id = {
            let mut c = self.chain_id.lock().await;
            if c.is_none() {
                *c = Some(self.client.chain_id().await?);
            }
            c.clone().expect("set")
        };
        let mut acc = self.account.lock().await;
        for attempt in 0..2 {
            if acc.is_none() || attempt > 0 {
                let a = self.key.address();
                let b = self
                    .client
                    .account(&a)
                    .await?
                    .ok_or(ClientError::NoAccount(a))?;
                *acc = Some((b.account_number, b.sequence));
            }
            let (number, s) = acc.expect("set");
            let signer = tx::SignerData {
                chain_id: &chain_id,
                account_number: number,
                sequence: s,
            };
            let bytes = tx::sign(&self.key, &signer, msgs);
            let r = self.client.broadcast(bytes, mode).await?;
            if r.result.code == 32 && r.result.codespace == "sdk" && attempt == 0 {
                continue;
            }
            if r.result.code == 0 || r.height > 0 {
                *acc = Some((number, s + 1));
            }
            return Ok(r);
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Forgets the cached account (next send reads it from the chain).
    pub async fn reset(&self) {
        *self.account.lock().await = None;
    }
}
