//! Set-up shared by the API node's integration tests: deterministic keys, a chain node
//! with the given genesis participants, an API node with no chain to talk to.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use poc_api::RunningApi;
use poc_api::config::ApiConfig;
use poc_chain::genesis::{Genesis, GenesisParticipant};
use poc_chain::keys::PrivateKey;
use poc_chain::params::Params;
use poc_chain_node::{NodeConfig, RunningChain, home};
use sha2::{Digest, Sha256};

/// A key derived from a name.
pub fn key(name: &str) -> PrivateKey {
    PrivateKey::from_bytes(&Sha256::digest(name.as_bytes())).unwrap()
}

/// A loopback address free right now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A chain node in `dir/chain` whose genesis has `accounts` as participants of weight 10.
pub async fn chain(
    dir: &std::path::Path,
    chain_id: &str,
    params: Params,
    accounts: &[PrivateKey],
    block_time: Duration,
) -> RunningChain {
    let genesis = Genesis {
        chain_id: chain_id.into(),
        genesis_time: 0,
        authority: key("authority").address(),
        params,
        consensus_validators: Vec::new(),
        participants: accounts
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisParticipant {
                address: k.address(),
                hex_pub_key: k.public_key_hex(),
                inference_url: String::new(),
                validator_key: format!("vk{i}"),
                weight: 10,
            })
            .collect(),
    };
    let chain_home = dir.join("chain");
    home::init(&chain_home, Some(genesis), "", 0).unwrap();
    poc_chain_node::start(NodeConfig {
        home: chain_home,
        rpc: None,
        block_time,
        rest: "127.0.0.1:0".parse().unwrap(),
        snapshot_interval: 0,
        http: Default::default(),
    })
    .await
    .unwrap()
}

/// An API node whose chain URL points nowhere (it keeps retrying its chain setup), its
/// configuration adjusted by `adjust`: for what works without a chain (servers, limits).
pub async fn chainless_api(
    dir: &std::path::Path,
    adjust: impl FnOnce(ApiConfig) -> ApiConfig,
) -> RunningApi {
    home::write_key(&dir.join("a.key"), &key("a")).unwrap();
    home::write_key(&dir.join("w.key"), &key("w")).unwrap();
    let cfg = ApiConfig::new(
        format!("http://{}", free_addr()),
        dir.join("a.key"),
        dir.join("w.key"),
        free_addr(),
        "127.0.0.1:0".parse().unwrap(),
        dir.join("data"),
    );
    poc_api::start(adjust(cfg)).await.unwrap()
}
