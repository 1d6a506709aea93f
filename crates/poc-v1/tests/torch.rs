//! The candle v1 model against a PyTorch implementation of the reference's
//! (`scripts/v1_torch_reference.py`): the same weights, inputs, permutations and target,
//! fp16 forward on both sides, so distances agree up to fp16 accumulation order.

use candle_core::Device;
use poc_v1::compute::V1Round;
use poc_v1::params::V1Params;
use serde_json::Value;

#[test]
fn distances_match_pytorch() {
    let r: Value = serde_json::from_str(include_str!("data/torch_distances.json")).unwrap();
    let round = V1Round::build(
        &V1Params::tiny(),
        r["block_hash"].as_str().unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    let nonces: Vec<i64> = r["nonces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_i64().unwrap())
        .collect();
    let got = round
        .distances(r["public_key"].as_str().unwrap(), &nonces)
        .unwrap();
    let mut worst = 0f64;
    for (g, w) in got.iter().zip(r["distances"].as_array().unwrap()) {
        let w = w.as_f64().unwrap();
        worst = worst.max((g - w).abs());
    }
    eprintln!("worst |candle − torch| = {worst:e}");
    // Honest noise must stay far below the spacing that matters around r_target
    // (distances spread over ~0.03 here).
    assert!(worst < 2e-4, "{got:?}");
}
