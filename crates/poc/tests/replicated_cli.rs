//! A replicated chain of four `poc chain start --validator-key …` processes on loopback:
//! a transaction sent to one is finalized by all, queries agree, a killed validator does
//! not stop the others, and it catches up after a restart.

mod common;

use common::{free_port, json_out, poc};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A plain HTTP/1.1 GET on loopback; `None` while the node is not answering.
fn get(port: u16, path: &str) -> Option<Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

struct Validator {
    child: Option<Child>,
    home: String,
    key: String,
    p2p: u16,
    rest: u16,
}

impl Validator {
    fn start(&mut self, peers: &str) {
        let child = Command::new(env!("CARGO_BIN_EXE_poc"))
            .args([
                "chain",
                "start",
                "--home",
                &self.home,
                "--validator-key",
                &self.key,
                "--p2p",
                &format!("127.0.0.1:{}", self.p2p),
                "--peers",
                peers,
                "--rest",
                &format!("127.0.0.1:{}", self.rest),
                "--rpc",
                "off",
                "--block-time",
                "200ms",
                "--snapshot-interval",
                "10",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a validator");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn height(&self) -> Option<i64> {
        get(self.rest, "/status").map(|v| v["height"].as_str().unwrap().parse().unwrap())
    }

    fn block_hash(&self, h: i64) -> Option<String> {
        get(self.rest, &format!("/blocks/{h}"))
            .map(|v| v["block_id"]["hash"].as_str().unwrap().to_owned())
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn four_validator_processes_agree_survive_a_crash_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let home = |i: usize| dir.path().join(format!("v{i}")).display().to_string();
    let v = json_out(&poc(&[
        "chain",
        "init",
        "--home",
        &home(0),
        "--validators",
        "4",
        "--participants",
        "1",
    ]));
    assert_eq!(v["consensus_validators"].as_array().unwrap().len(), 4);
    let genesis = Path::new(&home(0)).join("genesis.json");
    for i in 1..4 {
        json_out(&poc(&[
            "chain",
            "init",
            "--home",
            &home(i),
            "--genesis",
            genesis.to_str().unwrap(),
        ]));
    }
    let mut vals: Vec<Validator> = (0..4)
        .map(|i| Validator {
            child: None,
            home: home(i),
            key: format!("{}/keys/validator-{i}.key", home(0)),
            p2p: free_port(),
            rest: free_port(),
        })
        .collect();
    let peers = |vals: &[Validator], i: usize| {
        (0..4)
            .filter(|&j| j != i)
            .map(|j| format!("validator-{j}@127.0.0.1:{}", vals[j].p2p))
            .collect::<Vec<_>>()
            .join(",")
    };
    for i in 0..4 {
        let p = peers(&vals, i);
        vals[i].start(&p);
    }
    wait_until("4 validators at height 3", Duration::from_secs(60), || {
        vals.iter().all(|v| v.height().is_some_and(|h| h >= 3))
    });
    let s = get(vals[1].rest, "/status").unwrap();
    assert_eq!(s["consensus"]["validators"], 4);
    assert_eq!(s["consensus"]["validating"], true);

    // A governance transaction sent to validator 0 only.
    let out = poc(&[
        "chain",
        "update-params",
        "--node",
        &format!("http://127.0.0.1:{}", vals[0].rest),
        "--key",
        &format!("{}/keys/authority.key", home(0)),
        "--set",
        "poc_params.seq_len=\"64\"",
    ]);
    assert_eq!(json_out(&out)["code"], 0);
    let params_path = "/productscience/inference/inference/params";
    wait_until(
        "the new params on every validator",
        Duration::from_secs(30),
        || {
            vals.iter().all(|v| {
                get(v.rest, params_path)
                    .is_some_and(|p| p["params"]["poc_params"]["seq_len"] == "64")
            })
        },
    );

    // Kill one: the other three go on.
    vals[3].kill();
    let h = vals[0].height().unwrap();
    wait_until(
        "progress without validator 3",
        Duration::from_secs(60),
        || {
            vals[..3]
                .iter()
                .all(|v| v.height().is_some_and(|x| x >= h + 5))
        },
    );
    // Restart it: it catches up from its storage and its peers.
    let p = peers(&vals, 3);
    vals[3].start(&p);
    let target = vals[0].height().unwrap() + 2;
    wait_until("validator 3 caught up", Duration::from_secs(60), || {
        vals[3].height().is_some_and(|x| x >= target)
    });
    // Every validator holds the same blocks.
    for h in [1, target / 2, target] {
        let hashes: Vec<String> = vals
            .iter()
            .map(|v| v.block_hash(h).expect("block served"))
            .collect();
        assert!(
            hashes.iter().all(|x| *x == hashes[0]),
            "height {h}: {hashes:?}"
        );
    }
    wait_until(
        "validator 3 hearing from its 3 peers",
        Duration::from_secs(30),
        || {
            get(vals[3].rest, "/status").is_some_and(|s| {
                s["consensus"]["peers"].as_array().unwrap().len() == 3
                    && s["consensus"]["synced"] == true
            })
        },
    );
    assert_eq!(
        get(vals[3].rest, params_path).unwrap()["params"]["poc_params"]["seq_len"],
        "64"
    );
}
