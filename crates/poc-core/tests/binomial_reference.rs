//! The binomial tail against 60-digit references (`tests/data/binomial_upper_tail.tsv`,
//! produced by `scripts/binomial_reference.py` with mpmath): n up to 10^6, p from 1e-6 to
//! 0.999, k across both tails, the centre and the extremes.

use poc_core::stats::binomial_upper_tail;

#[test]
fn upper_tail_matches_high_precision_references_to_1e_12() {
    let table = include_str!("data/binomial_upper_tail.tsv");
    let mut checked = 0;
    let mut worst = (0.0f64, String::new());
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let k: u64 = f[0].parse().unwrap();
        let n: u64 = f[1].parse().unwrap();
        let p: f64 = f[2].parse().unwrap();
        let want: f64 = f[3].parse().unwrap();
        let got = binomial_upper_tail(k, n, p).unwrap();
        let rel = ((got - want) / want).abs();
        if rel > worst.0 {
            worst = (
                rel,
                format!("P(X >= {k} | n = {n}, p = {p}) = {got:e}, want {want:e}"),
            );
        }
        checked += 1;
    }
    eprintln!(
        "{checked} values, worst relative error {:e}: {}",
        worst.0, worst.1
    );
    assert!(checked > 1000, "only {checked} reference values");
    assert!(
        worst.0 <= 1e-12,
        "worst relative error {:e}: {}",
        worst.0,
        worst.1
    );
}
