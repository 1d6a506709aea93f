//! Bech32 `gonka` addresses, derived Cosmos-style: RIPEMD-160 of SHA-256 of the 33-byte
//! compressed secp256k1 public key, encoded with the `gonka` prefix (BIP-173 bech32, not
//! bech32m). Validator operator addresses use `gonkavaloper` over the same 20 bytes.

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32, Hrp};
use ripemd::Ripemd160;
use sha2::{Digest, Sha256};

/// The account prefix.
pub const ACCOUNT_HRP: &str = "gonka";
/// The validator operator prefix.
pub const VALOPER_HRP: &str = "gonkavaloper";

/// Decodes a bech32 string with the given prefix into its bytes (20 or 32 of them, as the
/// SDK's address codec accepts).
pub fn decode_with(s: &str, hrp: &str) -> Option<Vec<u8>> {
    if s.len() > 128 || s.chars().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let checked = CheckedHrpstring::new::<Bech32>(s).ok()?;
    if checked.hrp().as_str() != hrp {
        return None;
    }
    let bytes: Vec<u8> = checked.byte_iter().collect();
    matches!(bytes.len(), 20 | 32).then_some(bytes)
}

/// Decodes an account address.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    decode_with(s, ACCOUNT_HRP)
}

/// Orders two account addresses as the reference's store keys do: by the address bytes,
/// not by their bech32 spelling (the bech32 alphabet is not in byte order). A string
/// that is not an address sorts by its own bytes, after every address.
pub fn cmp_bytes(a: &str, b: &str) -> std::cmp::Ordering {
    match (decode(a), decode(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Whether `s` is a well-formed `gonka1…` account address.
pub fn is_valid(s: &str) -> bool {
    decode(s).is_some()
}

/// Encodes bytes under a prefix.
pub fn encode_with(bytes: &[u8], hrp: &str) -> String {
    let hrp = Hrp::parse(hrp).expect("static prefixes are valid");
    bech32::encode::<Bech32>(hrp, bytes).expect("addresses are short")
}

/// Encodes an account address.
pub fn encode(bytes: &[u8]) -> String {
    encode_with(bytes, ACCOUNT_HRP)
}

/// The account address of a 33-byte compressed secp256k1 public key.
pub fn from_pubkey(compressed: &[u8]) -> String {
    let sha = Sha256::digest(compressed);
    let rip = Ripemd160::digest(sha);
    encode(&rip)
}

/// The account address behind an account or validator-operator address (guardians may be
/// listed either way); `None` when it is neither.
pub fn to_account(s: &str) -> Option<String> {
    if let Some(b) = decode(s) {
        return Some(encode(&b));
    }
    decode_with(s, VALOPER_HRP).map(|b| encode(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_sort_by_address_bytes_not_by_spelling() {
        // 0x00… spells `gonka1qq…` and 0xff… `gonka1ll…`; 0x08… spells `gonka1pq…`, which
        // sorts after `gonka1ll…` as a string ('p' > 'l') but before it as bytes.
        let low = encode(&[0u8; 20]);
        let mid = encode(&[0x08; 20]);
        let high = encode(&[0xff; 20]);
        assert!(mid > high, "{mid} {high}: the spelling order differs");
        let mut v = vec![high.clone(), mid.clone(), "garbage".to_owned(), low.clone()];
        v.sort_by(|a, b| cmp_bytes(a, b));
        assert_eq!(v, [low, mid, high, "garbage".to_owned()]);
    }

    #[test]
    fn derivation_matches_the_cosmos_rule() {
        // The secp256k1 generator point G (compressed); its Cosmos address bytes are
        // RIPEMD160(SHA256(G)) = 751e76e8199196d454941c45d1b3a323f1433bd6 (a well-known
        // value: the Bitcoin hash160 of G).
        let g = hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
            .unwrap();
        let a = from_pubkey(&g);
        assert!(a.starts_with("gonka1"));
        assert_eq!(
            decode(&a).unwrap(),
            hex::decode("751e76e8199196d454941c45d1b3a323f1433bd6").unwrap()
        );
        assert!(is_valid(&a));
    }

    #[test]
    fn rejects_malformed_addresses() {
        let a = encode(&[7u8; 20]);
        assert!(is_valid(&a));
        assert!(!is_valid(""));
        assert!(!is_valid("gonka1"));
        assert!(!is_valid(&a.to_uppercase()));
        let mut bad = a.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == 'q' { 'p' } else { 'q' });
        assert!(!is_valid(&bad), "checksum");
        assert!(!is_valid(&encode_with(&[7u8; 20], "cosmos")));
        assert!(!is_valid(&encode(&[7u8; 19])));
        let valoper = encode_with(&[7u8; 20], VALOPER_HRP);
        assert!(!is_valid(&valoper));
        assert_eq!(to_account(&valoper).unwrap(), a);
        assert_eq!(to_account(&a).unwrap(), a);
        assert!(to_account("nonsense").is_none());
    }
}
