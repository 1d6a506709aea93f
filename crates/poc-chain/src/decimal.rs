//! The three kinds of decimal arithmetic the reference chain uses, reproduced exactly
//! (`docs/protocol/chain-and-api.md` §9):
//!
//! - [`Decimal`]: the parameter type `{value, exponent}` = value × 10^exponent;
//! - [`Dec`]: shopspring/decimal semantics — exact add/sub/mul, and `div` rounding to
//!   16 fractional digits, half away from zero;
//! - [`LegacyDec`]: Cosmos `LegacyDec` — 18 fractional digits, multiplication rounded
//!   half to even ("banker's rounding"), `truncate_i64` toward zero.

use std::cmp::Ordering;

use num_bigint::BigInt;
use num_integer::Integer;
use num_traits::{One, Signed, ToPrimitive, Zero};
use serde::{Deserialize, Serialize};

/// shopspring's `DivisionPrecision`.
pub const DIVISION_PRECISION: u32 = 16;
/// `LegacyDec`'s fixed precision.
pub const LEGACY_PRECISION: u32 = 18;

fn pow10(n: u32) -> BigInt {
    BigInt::from(10u8).pow(n)
}

/// A chain parameter decimal: `value × 10^exponent` (proto `Decimal{int64 value=1; int32 exponent=2}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Decimal {
    /// Significand.
    #[serde(with = "crate::json::i64_string")]
    pub value: i64,
    /// Power of ten.
    pub exponent: i32,
}

impl Decimal {
    /// `value × 10^exponent`.
    pub const fn new(value: i64, exponent: i32) -> Self {
        Self { value, exponent }
    }

    /// Whether it is `{0, 0}` (for `weight_scale_factor` that means "1").
    pub fn is_unset(&self) -> bool {
        self.value == 0 && self.exponent == 0
    }

    /// As a shopspring-style decimal (`decimal.New(value, exponent)`).
    pub fn to_dec(self) -> Dec {
        if self.exponent >= 0 {
            Dec::from_parts(BigInt::from(self.value) * pow10(self.exponent as u32), 0)
        } else {
            Dec::from_parts(BigInt::from(self.value), self.exponent.unsigned_abs())
        }
    }

    /// As a `LegacyDec` (exact up to 18 fractional digits, truncated below).
    pub fn to_legacy(self) -> LegacyDec {
        self.to_dec().to_legacy_truncated()
    }
}

/// shopspring/decimal: an exact decimal `int / 10^scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dec {
    int: BigInt,
    scale: u32,
}

impl Dec {
    /// `int / 10^scale`.
    pub fn from_parts(int: BigInt, scale: u32) -> Self {
        Self { int, scale }
    }

    /// An integer.
    pub fn from_i128(v: i128) -> Self {
        Self::from_parts(BigInt::from(v), 0)
    }

    /// An unsigned 64-bit integer.
    pub fn from_u64(v: u64) -> Self {
        Self::from_parts(BigInt::from(v), 0)
    }

    /// Parses a plain decimal string (`"-12.0340"`).
    pub fn parse(s: &str) -> Option<Self> {
        let (neg, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && frac.is_empty()
            || !whole
                .chars()
                .chain(frac.chars())
                .all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let int: BigInt = format!("{whole}{frac}")
            .trim_start_matches('0')
            .parse()
            .unwrap_or_else(|_| BigInt::zero());
        Some(Self::from_parts(
            if neg { -int } else { int },
            frac.len() as u32,
        ))
    }

    fn rescaled(&self, scale: u32) -> BigInt {
        &self.int * pow10(scale - self.scale)
    }

    fn aligned(&self, other: &Dec) -> (BigInt, BigInt, u32) {
        let s = self.scale.max(other.scale);
        (self.rescaled(s), other.rescaled(s), s)
    }

    /// Exact sum.
    pub fn add(&self, other: &Dec) -> Dec {
        let (a, b, s) = self.aligned(other);
        Dec::from_parts(a + b, s)
    }

    /// Exact difference.
    pub fn sub(&self, other: &Dec) -> Dec {
        let (a, b, s) = self.aligned(other);
        Dec::from_parts(a - b, s)
    }

    /// Exact product.
    pub fn mul(&self, other: &Dec) -> Dec {
        Dec::from_parts(&self.int * &other.int, self.scale + other.scale)
    }

    /// shopspring `Div`: the quotient to 16 fractional digits, the last digit rounded half
    /// away from zero. `None` when dividing by zero.
    pub fn div(&self, other: &Dec) -> Option<Dec> {
        self.div_round(other, DIVISION_PRECISION)
    }

    /// shopspring `DivRound(other, precision)`.
    pub fn div_round(&self, other: &Dec, precision: u32) -> Option<Dec> {
        if other.int.is_zero() {
            return None;
        }
        // self / other = (a / 10^sa) / (b / 10^sb); scaled by 10^precision:
        // q = a * 10^(precision + sb) / (b * 10^sa)
        let num = &self.int * pow10(precision + other.scale);
        let den = &other.int * pow10(self.scale);
        let (q, r) = num.div_rem(&den); // truncating toward zero
        let twice = r.abs() * 2;
        let q = if twice >= den.abs() {
            if (num.sign() == num_bigint::Sign::Minus) != (den.sign() == num_bigint::Sign::Minus) {
                q - 1
            } else {
                q + 1
            }
        } else {
            q
        };
        Some(Dec::from_parts(q, precision))
    }

    /// The smaller of two.
    pub fn min(self, other: Dec) -> Dec {
        if self <= other { self } else { other }
    }

    /// shopspring `StringFixed(18)` then `LegacyDec` parsing: rounds to 18 places half
    /// away from zero.
    pub fn to_legacy_fixed18(&self) -> LegacyDec {
        if self.scale <= LEGACY_PRECISION {
            return LegacyDec(self.rescaled(LEGACY_PRECISION));
        }
        let one = Dec::from_u64(1);
        let q = self
            .div_round(&one, LEGACY_PRECISION)
            .expect("dividing by one");
        LegacyDec(q.int)
    }

    /// Exact conversion when at most 18 fractional digits, else truncated.
    pub fn to_legacy_truncated(&self) -> LegacyDec {
        if self.scale <= LEGACY_PRECISION {
            LegacyDec(self.rescaled(LEGACY_PRECISION))
        } else {
            LegacyDec(&self.int / pow10(self.scale - LEGACY_PRECISION))
        }
    }

    /// Canonical text (no trailing zeros).
    pub fn to_plain_string(&self) -> String {
        let neg = self.int.is_negative();
        let digits = self.int.abs().to_string();
        let s = self.scale as usize;
        let text = if s == 0 {
            digits
        } else if digits.len() > s {
            format!(
                "{}.{}",
                &digits[..digits.len() - s],
                &digits[digits.len() - s..]
            )
        } else {
            format!("0.{}{}", "0".repeat(s - digits.len()), digits)
        };
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        };
        if neg { format!("-{text}") } else { text }
    }
}

impl PartialOrd for Dec {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Dec {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b, _) = self.aligned(other);
        a.cmp(&b)
    }
}

/// Cosmos `LegacyDec`: an integer holding the value × 10^18.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LegacyDec(BigInt);

impl LegacyDec {
    /// One.
    pub fn one() -> Self {
        LegacyDec(pow10(LEGACY_PRECISION))
    }

    /// An integer.
    pub fn from_i64(v: i64) -> Self {
        LegacyDec(BigInt::from(v) * pow10(LEGACY_PRECISION))
    }

    /// Parses an 18-place (or shorter) decimal string, like `LegacyNewDecFromStr`.
    pub fn parse(s: &str) -> Option<Self> {
        let d = Dec::parse(s)?;
        (d.scale <= LEGACY_PRECISION).then(|| d.to_legacy_truncated())
    }

    /// `chopPrecisionAndRound`: divide by 10^18, rounding half to even.
    fn chop_round(v: BigInt) -> BigInt {
        if v.is_negative() {
            return -Self::chop_round(-v);
        }
        let p = pow10(LEGACY_PRECISION);
        let (q, r) = v.div_rem(&p);
        let five = &p / 2;
        match r.cmp(&five) {
            Ordering::Less => q,
            Ordering::Greater => q + 1,
            Ordering::Equal => {
                if q.is_even() {
                    q
                } else {
                    q + 1
                }
            }
        }
    }

    /// `Mul`: the exact product rounded half to even at 18 places.
    pub fn mul(&self, other: &LegacyDec) -> LegacyDec {
        LegacyDec(Self::chop_round(&self.0 * &other.0))
    }

    /// `MulInt64`: exact.
    pub fn mul_i64(&self, n: i64) -> LegacyDec {
        LegacyDec(&self.0 * BigInt::from(n))
    }

    /// `TruncateInt64`: toward zero; `None` if it does not fit.
    pub fn truncate_i64(&self) -> Option<i64> {
        (&self.0 / pow10(LEGACY_PRECISION)).to_i64()
    }

    /// Whether it is zero.
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    /// The 18-place text, like `LegacyDec.String()`.
    pub fn to_fixed_string(&self) -> String {
        let neg = self.0.is_negative();
        let digits = self.0.abs().to_string();
        let p = LEGACY_PRECISION as usize;
        let padded = if digits.len() <= p {
            format!("{}{}", "0".repeat(p + 1 - digits.len()), digits)
        } else {
            digits
        };
        let (w, f) = padded.split_at(padded.len() - p);
        format!("{}{w}.{f}", if neg { "-" } else { "" })
    }
}

impl Default for LegacyDec {
    fn default() -> Self {
        LegacyDec(BigInt::zero())
    }
}

impl From<u64> for Dec {
    fn from(v: u64) -> Self {
        Dec::from_u64(v)
    }
}

/// `1` as a shopspring decimal.
pub fn dec_one() -> Dec {
    Dec::from_parts(BigInt::one(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Dec {
        Dec::parse(s).unwrap()
    }

    #[test]
    fn shopspring_div_rounds_half_away_from_zero_at_16_places() {
        assert_eq!(
            d("1").div(&d("3")).unwrap().to_plain_string(),
            "0.3333333333333333"
        );
        assert_eq!(
            d("2").div(&d("3")).unwrap().to_plain_string(),
            "0.6666666666666667"
        );
        assert_eq!(
            d("-2").div(&d("3")).unwrap().to_plain_string(),
            "-0.6666666666666667"
        );
        assert_eq!(d("1").div(&d("8")).unwrap().to_plain_string(), "0.125");
        // Exactly half at the 17th digit rounds away from zero.
        assert_eq!(
            d("0.00000000000000005")
                .div(&d("1"))
                .unwrap()
                .to_plain_string(),
            "0.0000000000000001"
        );
        assert_eq!(
            d("-0.00000000000000005")
                .div(&d("1"))
                .unwrap()
                .to_plain_string(),
            "-0.0000000000000001"
        );
        assert!(d("1").div(&d("0")).is_none());
        assert!(d("0.1") < d("0.10001"));
        assert_eq!(d("0.10"), d("0.10"));
        assert_eq!(d("1.5").mul(&d("2.25")).to_plain_string(), "3.375");
    }

    #[test]
    fn legacy_dec_banker_rounding_in_mul() {
        let half_ulp = LegacyDec::parse("0.000000000000000001").unwrap();
        let half = LegacyDec::parse("0.5").unwrap();
        // 1e-18 * 0.5 = 5e-19: a tie at 18 places, quotient 0 is even -> 0.
        assert!(half_ulp.mul(&half).is_zero());
        // 3e-18 * 0.5 = 1.5e-18: tie, quotient 1 is odd -> 2e-18.
        let three = LegacyDec::parse("0.000000000000000003").unwrap();
        assert_eq!(three.mul(&half).to_fixed_string(), "0.000000000000000002");
        assert_eq!(
            LegacyDec::parse("0.3593")
                .unwrap()
                .mul_i64(1000)
                .truncate_i64(),
            Some(359)
        );
        assert_eq!(LegacyDec::parse("-1.9").unwrap().truncate_i64(), Some(-1));
        assert_eq!(LegacyDec::one().to_fixed_string(), "1.000000000000000000");
    }

    #[test]
    fn param_decimals() {
        assert_eq!(Decimal::new(3593, -4).to_dec().to_plain_string(), "0.3593");
        assert_eq!(
            Decimal::new(25, -1).to_legacy().to_fixed_string(),
            "2.500000000000000000"
        );
        assert_eq!(Decimal::new(5, 2).to_dec().to_plain_string(), "500");
        assert!(Decimal::new(0, 0).is_unset());
        assert_eq!(
            d("1.23456789012345678951")
                .to_legacy_fixed18()
                .to_fixed_string(),
            "1.234567890123456790"
        );
    }
}
