//! PoC phase length: how many nonces a participant produces in a generation stage of S
//! blocks, and the shortest stage that lets a validator sample its full `n`
//! (`docs/calibrate.md`, "Phase length").

use serde::{Deserialize, Serialize};

/// A participant's production rate and the chain's block time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Production {
    /// Nonces per second.
    pub nonces_per_sec: f64,
    /// Seconds per block.
    pub block_time_s: f64,
}

impl Production {
    /// Nonces produced in a stage of `blocks` blocks (whole nonces).
    pub fn nonces(&self, blocks: u64) -> u64 {
        // A hair above the product, so that 352/min × 6 s × 10 is 352, not 351.99….
        (self.nonces_per_sec * self.block_time_s * blocks as f64 * (1.0 + 1e-12)).floor() as u64
    }

    /// The smallest stage (blocks) that produces at least `n` nonces; `None` when the
    /// rate is not positive.
    pub fn min_stage_blocks(&self, n: u64) -> Option<u64> {
        let per_block = self.nonces_per_sec * self.block_time_s;
        if !(per_block.is_finite() && per_block > 0.0) {
            return None;
        }
        let mut s = (n as f64 / per_block).ceil().max(1.0) as u64;
        // Floating-point edges: step to the exact smallest.
        while s > 1 && self.nonces(s - 1) >= n {
            s -= 1;
        }
        while self.nonces(s) < n {
            s += 1;
        }
        Some(s)
    }
}

/// Parses a rate: `N` (per second), `N/s`, `N/min`, `N/h`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let (num, per) = match s.split_once('/') {
        Some((a, u)) => (a, u.trim()),
        None => (s, "s"),
    };
    let div = match per {
        "s" | "sec" => 1.0,
        "min" | "m" => 60.0,
        "h" | "hour" => 3600.0,
        other => return Err(format!("rate unit {other:?} is not s, min or h")),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a rate such as 352/min"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("rate {s:?} must be positive"));
    }
    Ok(v / div)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_nonces_and_the_shortest_stage() {
        // 352 nonces/min on one H200, 6 s blocks: 35.2 nonces per block.
        let p = Production {
            nonces_per_sec: parse_rate("352/min").unwrap(),
            block_time_s: 6.0,
        };
        assert_eq!(p.nonces(10), 352);
        assert_eq!(p.min_stage_blocks(200), Some(6)); // 5 blocks: 176
        assert_eq!(p.min_stage_blocks(352), Some(10));
        assert_eq!(p.min_stage_blocks(0), Some(1));
        let none = Production {
            nonces_per_sec: 0.0,
            block_time_s: 6.0,
        };
        assert_eq!(none.min_stage_blocks(10), None);
    }

    #[test]
    fn rates_parse_with_units() {
        assert_eq!(parse_rate("2").unwrap(), 2.0);
        assert_eq!(parse_rate("120/min").unwrap(), 2.0);
        assert_eq!(parse_rate("7200/h").unwrap(), 2.0);
        assert!(parse_rate("5/day").is_err() && parse_rate("-1").is_err());
        assert!(parse_rate("x/s").is_err());
    }
}
