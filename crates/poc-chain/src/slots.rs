//! Validation slot assignment (`docs/protocol/chain-and-api.md` §5.3): which validators vote on a
//! participant when `validation_slots > 0`. Used by the chain (vote counting) and by API
//! nodes (whom to validate), so it is a pure function of public data.

use sha2::{Digest, Sha256};

/// Assigns `n` slots for `participant`: `result[i]` is the validator of slot `i`, drawn from
/// the lowercase hex text of the snapshot's app hash (as the reference hashes it). Empty
/// when no validator has positive weight.
pub fn assign(app_hash: &str, participant: &str, weights: &[(String, i64)], n: u32) -> Vec<String> {
    let mut vals: Vec<(&str, i64)> = weights
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|(a, w)| (a.as_str(), *w))
        .collect();
    vals.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let total: u64 = vals.iter().map(|(_, w)| *w as u64).sum();
    if total == 0 || n == 0 {
        return Vec::new();
    }
    let mut draws: Vec<(u64, usize)> = (0..n as usize)
        .map(|i| {
            let d = Sha256::digest(format!("{app_hash}{participant}{i}").as_bytes());
            (
                u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % total,
                i,
            )
        })
        .collect();
    draws.sort();
    let mut out = vec![String::new(); n as usize];
    let mut vi = 0usize;
    let mut cum = vals[0].1 as u64;
    for (r, i) in draws {
        while r >= cum {
            vi += 1;
            cum += vals[vi].1 as u64;
        }
        out[i] = vals[vi].0.to_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cumulative_weights() {
        let w = vec![
            ("b".to_string(), 3),
            ("a".to_string(), 1),
            ("z".to_string(), 0),
        ];
        let s = assign("ab12", "gonka1p", &w, 64);
        assert_eq!(s.len(), 64);
        // By hand: r_i < 1 → "a", else "b"; "z" (weight 0) never.
        for (i, v) in s.iter().enumerate() {
            let d = Sha256::digest(format!("ab12gonka1p{i}").as_bytes());
            let r = u64::from_be_bytes(d[..8].try_into().unwrap()) % 4;
            assert_eq!(v, if r < 1 { "a" } else { "b" }, "slot {i}");
        }
        assert!(s.iter().filter(|v| *v == "b").count() > s.iter().filter(|v| *v == "a").count());
        assert!(assign("ab", "p", &[("a".into(), 0)], 4).is_empty());
        assert!(assign("ab", "p", &w, 0).is_empty());
    }
}
