//! Who may call the ML-callback listener, and with what (`docs/api.md`, "ML callbacks").
//!
//! The ML nodes post artifacts and verdicts to the API node; a verdict becomes a vote, so
//! an unauthenticated listener lets anyone who reaches it vote −1 against anyone. Two
//! guards:
//!
//! - **Per-request secrets.** Every callback URL handed to an ML node carries a fresh
//!   128-bit token in its path (`{callback_base}/cb/{token}/v2/poc-batches`); the ML node
//!   only appends `/generated` or `/validated`, so it echoes the token without knowing
//!   about it. A token is bound to what it was issued for: a generation token to one
//!   stage and one ML node, a validation token to one stage and one participant, and a
//!   validation token is answered once. Unknown tokens are refused with 403 and change
//!   nothing. Generation tokens (and v1 tokens) are an HMAC of the grant under a secret
//!   kept in the data directory, so after a restart of the API node an ML node that
//!   kept generating keeps posting to a URL that is valid again; validation tokens are
//!   random.
//! - **Source addresses.** Callbacks are accepted from loopback and the ML nodes' own
//!   addresses unless `callback_allow` lists networks explicitly.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use hmac::{KeyInit, Mac};
use ipnet::IpNet;

/// The callback token secret cannot be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenSecretError {
    /// Reading or writing the file failed.
    #[error("callback token secret {}: {source}", path.display())]
    Io {
        /// The secret file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not 64 hex digits.
    #[error("callback token secret {} is not 64 hex digits (delete it to make a new one)", .0.display())]
    Malformed(std::path::PathBuf),
}

/// What a callback token was issued for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Grant {
    /// PoC v2 artifacts of `stage` from ML node number `node`.
    Generation {
        /// Stage height.
        stage: i64,
        /// ML node number.
        node: u64,
    },
    /// One PoC v2 verdict on `participant` (hex public key) for `stage`.
    Validation {
        /// Stage height.
        stage: i64,
        /// The validated participant's hex public key.
        participant: String,
    },
    /// PoC v1 batches of `stage` from ML node `node`.
    V1Generation {
        /// Stage height.
        stage: i64,
        /// ML node number.
        node: u64,
    },
    /// PoC v1 verdicts of `stage` from ML node `node` (one per participant it was asked
    /// to validate).
    V1Validation {
        /// Stage height.
        stage: i64,
        /// ML node number.
        node: u64,
    },
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Generation { stage, node } => {
                write!(f, "PoC v2 artifacts of stage {stage} from ML node {node}")
            }
            Self::Validation { stage, participant } => {
                write!(f, "the verdict on {participant} at stage {stage}")
            }
            Self::V1Generation { stage, node } => {
                write!(f, "PoC v1 batches of stage {stage} from ML node {node}")
            }
            Self::V1Validation { stage, node } => {
                write!(f, "PoC v1 verdicts of stage {stage} from ML node {node}")
            }
        }
    }
}

/// Why a callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackRefusal {
    /// No such token (never issued, or expired).
    #[error("unknown or expired callback token")]
    UnknownToken,
    /// The token is for something else.
    #[error("this callback URL was issued for {0}")]
    WrongUse(String),
    /// The verdict was already received.
    #[error("a verdict for this request was already received")]
    Answered,
    /// A v1 verdict on a participant this node did not ask about.
    #[error("no v1 validation of {participant} at stage {stage} was requested")]
    NotRequested {
        stage: i64,
        /// Participant hex key.
        participant: String,
    },
}

#[derive(Debug)]
struct Entry {
    grant: Grant,
    /// Last height at which the token is still valid.
    expires: i64,
    answered: bool,
}

#[derive(Debug, Default)]
struct Inner {
    by_token: HashMap<String, Entry>,
    /// The token of each reusable grant (generation, v1 validation): a restarted ML
    /// node gets the same URL.
    by_grant: HashMap<Grant, String>,
    /// `(stage, participant)` v1 validations requested and not yet answered, with the
    /// last height at which the answer is still useful.
    v1_expected: BTreeMap<(i64, String), i64>,
}

/// The tokens issued and not expired.
#[derive(Debug)]
pub struct CallbackTokens {
    inner: Mutex<Inner>,
    secret: [u8; 32],
}

impl Default for CallbackTokens {
    /// Tokens under a fresh random secret (not kept across restarts).
    fn default() -> Self {
        Self::new(random_secret())
    }
}

fn fresh_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn random_secret() -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    s[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    s
}

/// The file in the data directory that keeps the token secret.
pub const SECRET_FILE: &str = "callback-secret";

impl CallbackTokens {
    /// Tokens under `secret`.
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            secret,
        }
    }

    /// Tokens under the secret kept in `dir` (created, readable by the owner only, on
    /// first use).
    pub fn open(dir: &Path) -> Result<Self, TokenSecretError> {
        let path = dir.join(SECRET_FILE);
        let what = |source: std::io::Error| TokenSecretError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| TokenSecretError::Malformed(path.clone()))?;
                Ok(Self::new(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = random_secret();
                let tmp = dir.join(format!("{SECRET_FILE}.tmp"));
                {
                    use std::io::Write;
                    let mut o = std::fs::OpenOptions::new();
                    o.write(true).create(true).truncate(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
                    let mut f = o.open(&tmp).map_err(what)?;
                    f.write_all(hex::encode(secret).as_bytes()).map_err(what)?;
                    f.sync_all().map_err(what)?;
                }
                std::fs::rename(&tmp, &path).map_err(what)?;
                Ok(Self::new(secret))
            }
            Err(e) => Err(what(e)),
        }
    }

    /// The token of a reusable grant: HMAC-SHA256 of its description, 128 bits in hex.
    fn derived(&self, grant: &Grant) -> String {
        let label = match grant {
            Grant::Generation { stage, node } => format!("v2-generation:{stage}:{node}"),
            Grant::V1Generation { stage, node } => format!("v1-generation:{stage}:{node}"),
            Grant::V1Validation { stage, node } => format!("v1-validation:{stage}:{node}"),
            Grant::Validation { .. } => unreachable!("validation tokens are random"),
        };
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(label.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A token for `grant`, valid through height `expires`. Generation and v1 grants
    /// always get the same token (derived from the secret; re-issuing extends it); each
    /// validation gets a new random one.
    pub fn issue(&self, grant: Grant, expires: i64) -> String {
        let reusable = !matches!(grant, Grant::Validation { .. });
        let derived = reusable.then(|| self.derived(&grant));
        let mut g = self.lock();
        if reusable
            && let Some(t) = g.by_grant.get(&grant).cloned()
            && let Some(e) = g.by_token.get_mut(&t)
        {
            e.expires = e.expires.max(expires);
            return t;
        }
        let token = derived.unwrap_or_else(fresh_token);
        if reusable {
            g.by_grant.insert(grant.clone(), token.clone());
        }
        g.by_token.insert(
            token.clone(),
            Entry {
                grant,
                expires,
                answered: false,
            },
        );
        token
    }

    /// The grant of a token, if it was issued and has not expired.
    pub fn grant(&self, token: &str) -> Result<Grant, CallbackRefusal> {
        self.lock()
            .by_token
            .get(token)
            .map(|e| e.grant.clone())
            .ok_or(CallbackRefusal::UnknownToken)
    }

    /// Consumes a v2 validation token for a verdict on `participant` at `stage`:
    /// `Ok(true)` the first time, `Ok(false)` for a repeat (already counted).
    pub fn answer_validation(
        &self,
        token: &str,
        stage: i64,
        participant: &str,
    ) -> Result<bool, CallbackRefusal> {
        let mut g = self.lock();
        let e = g
            .by_token
            .get_mut(token)
            .ok_or(CallbackRefusal::UnknownToken)?;
        match &e.grant {
            Grant::Validation {
                stage: s,
                participant: p,
            } if *s == stage && p.eq_ignore_ascii_case(participant) => {
                let first = !e.answered;
                e.answered = true;
                Ok(first)
            }
            other => Err(CallbackRefusal::WrongUse(other.to_string())),
        }
    }

    /// Records that a v1 verdict on `participant` at `stage` is expected (until height
    /// `expires`).
    pub fn expect_v1(&self, stage: i64, participant: &str, expires: i64) {
        self.lock()
            .v1_expected
            .insert((stage, participant.to_ascii_lowercase()), expires);
    }

    /// Consumes an expected v1 verdict.
    pub fn answer_v1(&self, stage: i64, participant: &str) -> Result<(), CallbackRefusal> {
        if self
            .lock()
            .v1_expected
            .remove(&(stage, participant.to_ascii_lowercase()))
            .is_some()
        {
            Ok(())
        } else {
            Err(CallbackRefusal::NotRequested {
                stage,
                participant: participant.to_owned(),
            })
        }
    }

    /// Forgets every token that expired before `height`.
    pub fn prune(&self, height: i64) {
        let mut g = self.lock();
        g.by_token.retain(|_, e| e.expires >= height);
        g.v1_expected.retain(|_, expires| *expires >= height);
        let Inner {
            by_token, by_grant, ..
        } = &mut *g;
        by_grant.retain(|_, t| by_token.contains_key(t));
    }

    /// Tokens alive.
    pub fn len(&self) -> usize {
        self.lock().by_token.len()
    }

    /// Whether no token is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The networks callbacks are accepted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

/// An allow-list entry that is neither an IP address nor a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("callback_allow: {0:?} is neither an IP address nor a network like 10.0.0.0/8")]
pub struct BadAllowEntry(pub String);

impl AllowList {
    /// Parses `10.0.0.0/8`, `192.168.1.7`, `::1`, `fd00::/8`, ...
    pub fn parse(entries: &[String]) -> Result<Self, BadAllowEntry> {
        let mut nets = Vec::new();
        for e in entries {
            let e = e.trim();
            let net = IpNet::from_str(e)
                .or_else(|_| IpAddr::from_str(e).map(IpNet::from))
                .map_err(|_| BadAllowEntry(e.to_owned()))?;
            nets.push(net);
        }
        Ok(Self { nets })
    }

    /// Loopback and the given addresses (the ML nodes').
    pub fn loopback_and(addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut nets: Vec<IpNet> = vec![
            IpNet::from_str("127.0.0.0/8").expect("literal"),
            IpNet::from_str("::1/128").expect("literal"),
        ];
        nets.extend(addrs.into_iter().map(|a| IpNet::from(a.to_canonical())));
        Self { nets }
    }

    /// Whether `ip` may post callbacks.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_grant_and_answered_once() {
        let t = CallbackTokens::default();
        let g = t.issue(Grant::Generation { stage: 10, node: 0 }, 30);
        assert_eq!(g.len(), 32);
        assert_eq!(
            t.issue(Grant::Generation { stage: 10, node: 0 }, 40),
            g,
            "a restarted node gets the same URL"
        );
        assert_ne!(t.issue(Grant::Generation { stage: 10, node: 1 }, 30), g);
        assert_eq!(t.grant(&g), Ok(Grant::Generation { stage: 10, node: 0 }));
        assert_eq!(t.grant("nope"), Err(CallbackRefusal::UnknownToken));
        let v = t.issue(
            Grant::Validation {
                stage: 10,
                participant: "02ab".into(),
            },
            30,
        );
        let v2 = t.issue(
            Grant::Validation {
                stage: 10,
                participant: "02ab".into(),
            },
            30,
        );
        assert_ne!(v, v2, "every validation request has its own secret");
        assert!(matches!(
            t.answer_validation(&v, 10, "02cd"),
            Err(CallbackRefusal::WrongUse(_))
        ));
        assert!(matches!(
            t.answer_validation(&g, 10, "02ab"),
            Err(CallbackRefusal::WrongUse(_))
        ));
        assert_eq!(t.answer_validation(&v, 10, "02AB"), Ok(true));
        assert_eq!(t.answer_validation(&v, 10, "02ab"), Ok(false));
        assert_eq!(
            t.answer_validation("forged", 10, "02ab"),
            Err(CallbackRefusal::UnknownToken)
        );
        t.prune(35);
        assert_eq!(t.grant(&v), Err(CallbackRefusal::UnknownToken));
        assert!(t.grant(&g).is_ok(), "extended to 40");
        t.prune(41);
        assert!(t.is_empty());
        assert_eq!(t.grant(&g), Err(CallbackRefusal::UnknownToken));
        let again = t.issue(Grant::Generation { stage: 10, node: 0 }, 50);
        assert_eq!(again, g, "re-issued under the same secret: the same URL");
    }

    #[test]
    fn generation_tokens_survive_a_restart_with_the_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let grant = Grant::Generation { stage: 7, node: 2 };
        let a = CallbackTokens::open(dir.path())
            .unwrap()
            .issue(grant.clone(), 9);
        let reopened = CallbackTokens::open(dir.path()).unwrap();
        assert_eq!(reopened.grant(&a), Err(CallbackRefusal::UnknownToken));
        assert_eq!(reopened.issue(grant.clone(), 9), a);
        assert_eq!(reopened.grant(&a), Ok(grant.clone()));
        // Another secret, other tokens.
        assert_ne!(CallbackTokens::default().issue(grant, 9), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "owner only");
        }
        std::fs::write(dir.path().join(SECRET_FILE), "xyz").unwrap();
        let e = CallbackTokens::open(dir.path()).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
    }

    #[test]
    fn v1_verdicts_must_have_been_requested() {
        let t = CallbackTokens::default();
        t.expect_v1(5, "02AA", 20);
        assert!(t.answer_v1(5, "02bb").is_err());
        assert!(t.answer_v1(6, "02aa").is_err());
        assert!(t.answer_v1(5, "02aa").is_ok());
        assert!(t.answer_v1(5, "02aa").is_err(), "once");
        t.expect_v1(5, "02cc", 20);
        t.prune(21);
        assert!(t.answer_v1(5, "02cc").is_err(), "expired");
    }

    #[test]
    fn allow_lists() {
        let d = AllowList::loopback_and(["10.1.2.3".parse().unwrap()]);
        for ok in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "10.1.2.3",
            "::ffff:10.1.2.3",
        ] {
            assert!(d.allows(ok.parse().unwrap()), "{ok}");
        }
        for no in ["10.1.2.4", "8.8.8.8", "::2"] {
            assert!(!d.allows(no.parse().unwrap()), "{no}");
        }
        let l = AllowList::parse(&["10.0.0.0/8".into(), " fd00::1 ".into()]).unwrap();
        assert!(l.allows("10.200.0.1".parse().unwrap()));
        assert!(l.allows("fd00::1".parse().unwrap()));
        assert!(!l.allows("127.0.0.1".parse().unwrap()));
        let e = AllowList::parse(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
    }
}
