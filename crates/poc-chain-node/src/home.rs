//! The node's home directory: `genesis.json`, `data/chain.redb` and `keys/*.key`
//! (hex secp256k1 secrets, mode 0600).

use std::io::Read;
use std::path::{Path, PathBuf};

use poc_chain::decimal::Decimal;
use poc_chain::epoch::EpochParams;
use poc_chain::genesis::{Genesis, GenesisParticipant};
use poc_chain::keys::{KeyError, PrivateKey};
use poc_chain::params::{ConfirmationPocParams, Params, PocParams};

use crate::NodeError;

/// A home directory.
#[derive(Debug, Clone)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// Wraps a directory (not created).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// `genesis.json`.
    pub fn genesis_path(&self) -> PathBuf {
        self.dir.join("genesis.json")
    }

    /// `data/chain.redb`.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("data").join("chain.redb")
    }

    /// `keys/`.
    pub fn keys_dir(&self) -> PathBuf {
        self.dir.join("keys")
    }

    /// Reads and validates the genesis.
    pub fn genesis(&self) -> Result<Genesis, NodeError> {
        let p = self.genesis_path();
        let text = std::fs::read_to_string(&p).map_err(|e| {
            NodeError::Home(format!(
                "cannot read {}: {e}; run `poc chain init --home {}` first",
                p.display(),
                self.dir.display()
            ))
        })?;
        let g: Genesis = serde_json::from_str(&text)
            .map_err(|e| NodeError::Home(format!("{} is not a valid genesis: {e}", p.display())))?;
        g.validate()
            .map_err(|e| NodeError::Home(format!("{}: {e}", p.display())))?;
        Ok(g)
    }
}

/// A fresh random key from the operating system's generator.
pub fn generate_key() -> std::io::Result<PrivateKey> {
    let mut f = std::fs::File::open("/dev/urandom")?;
    loop {
        let mut b = [0u8; 32];
        f.read_exact(&mut b)?;
        if let Ok(k) = PrivateKey::from_bytes(&b) {
            return Ok(k);
        }
    }
}

/// Writes a key file (hex secret, mode 0600); refuses to overwrite.
pub fn write_key(path: &Path, key: &PrivateKey) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    writeln!(f, "{}", key.to_hex())?;
    f.sync_all()
}

/// A key file that cannot be read or holds no key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file holds no secret key.
    #[error("{}: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
}

/// Reads a key file.
pub fn read_key(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    PrivateKey::from_hex(&text).map_err(|source| KeyFileError::Key {
        path: path.to_owned(),
        source,
    })
}

/// Parameters of the default local network: short epochs (40 blocks), V2 on, one
/// expected confirmation PoC per epoch, 32-token sequences for CPU ML nodes.
pub fn local_params() -> Params {
    Params {
        epoch_params: EpochParams {
            epoch_length: 40,
            poc_stage_duration: 6,
            poc_exchange_duration: 2,
            poc_validation_delay: 1,
            poc_validation_duration: 6,
            set_new_validators_delay: 1,
            inference_validation_cutoff: 0,
            poc_slot_allocation: Some(Decimal::new(0, 0)),
            ..EpochParams::default()
        },
        poc_params: PocParams {
            poc_v2_enabled: true,
            confirmation_poc_v2_enabled: true,
            model_id: "tiny-moe".into(),
            seq_len: 32,
            ..PocParams::default()
        },
        confirmation_poc_params: ConfirmationPocParams {
            expected_confirmations_per_epoch: 1,
            alpha_threshold: Some(Decimal::new(5, -1)),
            ..ConfirmationPocParams::default()
        },
        ..Params::default()
    }
}

/// What `init` created.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The genesis written.
    pub genesis: Genesis,
    /// Key files written.
    pub keys: Vec<PathBuf>,
}

/// Initialises a home: writes `genesis` (or the local default with `participants`
/// generated participants of weight 10 and a generated governance authority, keys saved
/// under `keys/`). Refuses a home that already has a genesis.
pub fn init(
    dir: &Path,
    genesis: Option<Genesis>,
    chain_id: &str,
    participants: usize,
) -> Result<InitReport, NodeError> {
    let home = Home::new(dir);
    if home.genesis_path().exists() {
        return Err(NodeError::Home(format!(
            "{} already exists; choose another --home or delete it",
            home.genesis_path().display()
        )));
    }
    let io = |what: &str, e: std::io::Error| NodeError::Home(format!("cannot {what}: {e}"));
    std::fs::create_dir_all(home.keys_dir()).map_err(|e| io("create the home directory", e))?;
    std::fs::create_dir_all(home.db_path().parent().expect("has parent"))
        .map_err(|e| io("create the data directory", e))?;
    let mut keys = Vec::new();
    let genesis = match genesis {
        Some(g) => g,
        None => {
            let auth = generate_key().map_err(|e| io("generate a key", e))?;
            let p = home.keys_dir().join("authority.key");
            write_key(&p, &auth).map_err(|e| io("write the authority key", e))?;
            keys.push(p);
            let mut list = Vec::new();
            for i in 0..participants {
                let k = generate_key().map_err(|e| io("generate a key", e))?;
                let p = home.keys_dir().join(format!("participant-{i}.key"));
                write_key(&p, &k).map_err(|e| io("write a participant key", e))?;
                keys.push(p);
                list.push(GenesisParticipant {
                    address: k.address(),
                    hex_pub_key: k.public_key_hex(),
                    inference_url: String::new(),
                    validator_key: format!("validator-{i}"),
                    weight: 10,
                });
            }
            Genesis {
                chain_id: chain_id.to_owned(),
                genesis_time: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0),
                authority: auth.address(),
                params: local_params(),
                consensus_validators: Vec::new(),
                participants: list,
            }
        }
    };
    genesis
        .validate()
        .map_err(|e| NodeError::Home(format!("genesis: {e}")))?;
    let text = serde_json::to_string_pretty(&genesis).expect("genesis serialises");
    std::fs::write(home.genesis_path(), text + "\n").map_err(|e| io("write genesis.json", e))?;
    Ok(InitReport { genesis, keys })
}
