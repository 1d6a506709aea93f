//! `poc chain …` and `poc keys …` end to end: a real node process on loopback.

mod common;

use common::{Proc, free_port, json_out, poc, spawn};
use std::time::Duration;

use serde_json::Value;

fn start(home: &str, port: u16, rpc: u16) -> Proc {
    spawn(&[
        "chain",
        "start",
        "--home",
        home,
        "--block-time",
        "100ms",
        "--rest",
        &format!("127.0.0.1:{port}"),
        "--rpc",
        &format!("127.0.0.1:{rpc}"),
        "--snapshot-interval",
        "5",
    ])
}

/// `GET path` on 127.0.0.1:`port`, parsed as JSON (a plain HTTP/1.1 exchange).
fn rpc_get(port: u16, path: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn status(port: u16) -> Option<Value> {
    let out = poc(&[
        "chain",
        "status",
        "--node",
        &format!("http://127.0.0.1:{port}"),
    ]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn height(port: u16) -> i64 {
    for _ in 0..100 {
        if let Some(v) = status(port) {
            return v["status"]["height"].as_str().unwrap().parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the node never answered");
}

#[test]
fn init_start_govern_kill_restart_replay() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home = home.to_str().unwrap();
    let v = json_out(&poc(&[
        "chain",
        "init",
        "--home",
        home,
        "--participants",
        "2",
    ]));
    assert_eq!(v["chain_id"], "poc-local");
    assert_eq!(v["participants"].as_array().unwrap().len(), 2);
    // A second init refuses.
    let out = poc(&["chain", "init", "--home", home]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let port = free_port();
    let rpc = free_port();
    let node = start(home, port, rpc);
    while height(port) < 3 {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The CometBFT RPC answers on --rpc.
    let st = rpc_get(rpc, "/status");
    assert_eq!(st["result"]["node_info"]["network"], "poc-local");
    let hash = st["result"]["sync_info"]["latest_block_hash"]
        .as_str()
        .unwrap();
    assert!(
        hash.len() == 64 && !hash.chars().any(|c| c.is_ascii_lowercase()),
        "{hash}"
    );
    // Governance through the authority key.
    let key = format!("{home}/keys/authority.key");
    let node_url = format!("http://127.0.0.1:{port}");
    let v = json_out(&poc(&[
        "chain",
        "update-params",
        "--node",
        &node_url,
        "--key",
        &key,
        "--set",
        "poc_params.poc_v2_enabled=false",
        "--set",
        "poc_params.seq_len=\"64\"",
    ]));
    assert_eq!(v["code"], 0);
    let s = status(port).unwrap();
    assert_eq!(
        s["epoch_info"]["params"]["poc_params"]["poc_v2_enabled"],
        false
    );
    assert_eq!(s["epoch_info"]["params"]["poc_params"]["seq_len"], "64");
    // A participant key is not the authority.
    let out = poc(&[
        "chain",
        "update-params",
        "--node",
        &node_url,
        "--key",
        &format!("{home}/keys/participant-0.key"),
        "--set",
        "poc_params.seq_len=\"1\"",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected"));
    let out = poc(&[
        "chain",
        "update-params",
        "--node",
        &node_url,
        "--key",
        &key,
        "--set",
        "poc_params.nope=1",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no field \"nope\""));

    // Kill -9, restart: no committed block lost.
    let before = height(port);
    drop(node);
    let port2 = free_port();
    let node = start(home, port2, free_port());
    assert!(height(port2) >= before);
    let s = status(port2).unwrap();
    assert_eq!(s["epoch_info"]["params"]["poc_params"]["seq_len"], "64");
    drop(node);
    let v = json_out(&poc(&["chain", "replay", "--home", home]));
    assert!(v["blocks"].as_i64().unwrap() >= before);
    assert_eq!(v["every_app_hash_matches"], true);
}

#[test]
fn keys_new_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("op.key");
    let f = f.to_str().unwrap();
    let a = json_out(&poc(&["keys", "new", "--out", f]));
    let b = json_out(&poc(&["keys", "show", f]));
    assert_eq!(a["address"], b["address"]);
    assert!(a["address"].as_str().unwrap().starts_with("gonka1"));
    assert_eq!(a["hex_pub_key"].as_str().unwrap().len(), 66);
    let out = poc(&["keys", "new", "--out", f]);
    assert_eq!(out.status.code(), Some(2), "never overwrites");
    std::fs::write(dir.path().join("bad.key"), "zz").unwrap();
    let out = poc(&["keys", "show", dir.path().join("bad.key").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not hex"));
}

#[test]
fn api_configuration_errors_are_clear() {
    let out = poc(&["api", "--print-example"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("[[ml_nodes]]"));
    let out = poc(&["api", "--chain-url", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing field"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("api.toml");
    std::fs::write(&f, "chain_url = [").unwrap();
    let out = poc(&["api", "--config", f.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid TOML"));
    // A flag overrides the file: a bad URL from the flag is reported.
    let example = String::from_utf8(poc(&["api", "--print-example"]).stdout).unwrap();
    std::fs::write(&f, example).unwrap();
    let out = poc(&[
        "api",
        "--config",
        f.to_str().unwrap(),
        "--public-url",
        "ftp://x",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("public_url must be an http(s) URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With a valid file the missing key file is named.
    let out = poc(&[
        "api",
        "--config",
        f.to_str().unwrap(),
        "--account-key",
        "/nonexistent/a.key",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/a.key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
