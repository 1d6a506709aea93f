//! Helpers shared by the engine tests.

use poc_model::NonceVector;

/// A nonce's artifact as f32 values (it must be finite).
pub fn f32s(v: &NonceVector) -> Vec<f32> {
    v.vector
        .as_ref()
        .expect("finite")
        .iter()
        .map(|x| x.to_f32())
        .collect()
}

/// Euclidean distance.
pub fn dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        .sqrt()
}
