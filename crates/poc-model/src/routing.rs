//! Mixture-of-experts routing as device operations (`docs/model.md`, "MoE routing"):
//! softmax over the router logits, top-k (ties to the lower expert), renormalisation, and
//! grouping the routed rows by expert, with one small device-to-host read per layer (the
//! expert counts, which size the per-expert products).
//!
//! [`route`] is the scalar definition; [`top_k`] and [`group_by_expert`] compute the same
//! decisions and the same f32 weights on any device.

use candle_core::{CpuStorage, D, DType, Layout, Shape, Tensor};

use crate::error::{ModelError, Result};

/// The top-k routing of one token: `(expert, weight)`, highest probability first (ties:
/// lower expert index first), renormalised when `norm` is set.
pub fn route(probs: &[f32], k: usize, norm: bool) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut top: Vec<(usize, f32)> = idx[..k].iter().map(|&e| (e, probs[e])).collect();
    if norm {
        let sum: f32 = top.iter().map(|(_, w)| w).sum();
        for (_, w) in &mut top {
            *w /= sum;
        }
    }
    top
}

/// Top-k of `probs: [n, E]` (f32) as tensor operations: returns the experts `[n, k]` (u32)
/// and their weights `[n, k]` (f32) in the order and with the values of [`route`]. NaN
/// probabilities rank above every number (as `total_cmp` ranks a positive NaN); such rows
/// come from non-finite hidden states, whose nonces are dropped anyway.
pub fn top_k(probs: &Tensor, k: usize, norm: bool) -> Result<(Tensor, Tensor)> {
    let (_, e) = probs.dims2()?;
    if k == 0 || k > e {
        return Err(ModelError::Request(format!(
            "top-k routing needs 1 <= k <= the number of experts; got k = {k} with {e} experts (check num_experts_per_tok in config.json)"
        )));
    }
    let dev = probs.device();
    let probs = probs.to_dtype(DType::F32)?;
    // Expert indices as f32 (exact below 2^24), broadcast along the rows.
    let index = Tensor::arange(0u32, e as u32, dev)?
        .to_dtype(DType::F32)?
        .reshape((1, e))?
        .broadcast_as(probs.shape())?;
    let above_all = Tensor::full(2f32, probs.shape(), dev)?;
    let below_all = Tensor::full(-1f32, probs.shape(), dev)?;
    let beyond = Tensor::full(e as f32, probs.shape(), dev)?;
    // NaN ≠ NaN: those entries rank first.
    let mut rank = probs.ne(&probs)?.where_cond(&above_all, &probs)?;
    let mut ids = Vec::with_capacity(k);
    for _ in 0..k {
        let best = rank.max_keepdim(D::Minus1)?;
        let at_best = rank.broadcast_eq(&best)?;
        let id = at_best
            .where_cond(&index, &beyond)?
            .min_keepdim(D::Minus1)?;
        let taken = index.broadcast_eq(&id)?;
        rank = taken.where_cond(&below_all, &rank)?;
        ids.push(id);
    }
    let ids = Tensor::cat(&ids, 1)?.to_dtype(DType::U32)?.contiguous()?;
    let picked = probs.contiguous()?.gather(&ids, 1)?;
    if !norm {
        return Ok((ids, picked));
    }
    // Sum in route()'s order (highest first), one addition at a time.
    let mut sum = picked.narrow(1, 0, 1)?;
    for j in 1..k {
        sum = (sum + picked.narrow(1, j, 1)?)?;
    }
    Ok((ids, picked.broadcast_div(&sum)?))
}

/// Routed rows grouped by expert: `tokens[offsets[e]..offsets[e] + counts[e]]` are the rows
/// (tokens) routed to expert `e` in ascending order, `slots` the same entries' flat
/// positions `token · k + j` in the `[n, k]` routing tensors.
#[derive(Debug, Clone)]
pub struct Grouping {
    /// Rows per expert (read to the host: the one device-to-host read).
    pub counts: Vec<usize>,
    /// `[n · k]` u32 token indices, grouped by expert.
    pub tokens: Tensor,
    /// `[n · k]` u32 flat positions, grouped like `tokens`.
    pub slots: Tensor,
}

impl Grouping {
    /// Start of each expert's rows.
    pub fn offsets(&self) -> Vec<usize> {
        self.counts
            .iter()
            .scan(0, |acc, &c| {
                let start = *acc;
                *acc += c;
                Some(start)
            })
            .collect()
    }
}

/// Groups the routing `ids: [n, k]` (u32, values below `experts`) by expert on the device.
pub fn group_by_expert(ids: &Tensor, experts: usize) -> Result<Grouping> {
    let (n, k) = ids.dims2()?;
    let nk = n * k;
    let out = ids
        .contiguous()?
        .apply_op1_no_bwd(&GroupByExpert { experts, k })?;
    let counts: Vec<usize> = out
        .narrow(0, 0, experts)?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|c| c as usize)
        .collect();
    if counts.iter().sum::<usize>() != nk {
        return Err(ModelError::Request(format!(
            "routing produced expert ids outside 0..{experts}"
        )));
    }
    Ok(Grouping {
        counts,
        tokens: out.narrow(0, experts, nk)?,
        slots: out.narrow(0, experts + nk, nk)?,
    })
}

/// The grouping kernel: `[n·k]` expert ids in, `[E + 2·n·k]` u32 out (counts, tokens,
/// flat positions); a stable counting sort.
struct GroupByExpert {
    experts: usize,
    k: usize,
}

impl GroupByExpert {
    fn group(&self, ids: &[u32]) -> Vec<u32> {
        let (e, nk) = (self.experts, ids.len());
        let mut counts = vec![0u32; e];
        for &id in ids {
            if let Some(c) = counts.get_mut(id as usize) {
                *c += 1;
            }
        }
        let mut next: Vec<usize> = counts
            .iter()
            .scan(0usize, |acc, &c| {
                let s = *acc;
                *acc += c as usize;
                Some(s)
            })
            .collect();
        let mut tokens = vec![0u32; nk];
        let mut flat = vec![0u32; nk];
        for (i, &id) in ids.iter().enumerate() {
            if let Some(pos) = next.get_mut(id as usize) {
                tokens[*pos] = (i / self.k) as u32;
                flat[*pos] = i as u32;
                *pos += 1;
            }
        }
        counts.extend(tokens);
        counts.extend(flat);
        counts
    }
}

impl candle_core::CustomOp1 for GroupByExpert {
    fn name(&self) -> &'static str {
        "group-by-expert"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::U32(data) = storage else {
            candle_core::bail!("group-by-expert expects u32 expert ids");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("group-by-expert expects contiguous ids");
        };
        let out = self.group(&data[start..end]);
        let len = out.len();
        Ok((CpuStorage::U32(out), Shape::from(len)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        crate::kernels::group_by_expert(storage, layout, self.experts, self.k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn probs(n: usize, e: usize, seed: u32) -> Vec<f32> {
        let raw: Vec<f32> = (0..n * e)
            .map(|i| (((i as u32 ^ seed).wrapping_mul(2_654_435_761) >> 20) % 17) as f32)
            .collect();
        raw.chunks(e)
            .flat_map(|r| {
                let z: f32 = r.iter().map(|v| (v / 4.0).exp()).sum();
                r.iter()
                    .map(move |v| (v / 4.0).exp() / z)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn top_k_equals_route_bit_for_bit_with_ties() {
        // Values from 17 levels over 8 or 128 experts: many exact ties.
        for (n, e, k) in [(33, 8, 2), (20, 128, 8), (5, 4, 4)] {
            for norm in [true, false] {
                let p = probs(n, e, (n * e) as u32);
                let t = Tensor::from_vec(p.clone(), (n, e), &Device::Cpu).unwrap();
                let (ids, ws) = top_k(&t, k, norm).unwrap();
                let ids = ids.to_vec2::<u32>().unwrap();
                let ws = ws.to_vec2::<f32>().unwrap();
                for (r, row) in p.chunks(e).enumerate() {
                    let want = route(row, k, norm);
                    let got: Vec<(usize, f32)> = ids[r]
                        .iter()
                        .zip(&ws[r])
                        .map(|(&i, &w)| (i as usize, w))
                        .collect();
                    assert_eq!(
                        got.iter()
                            .map(|(i, w)| (*i, w.to_bits()))
                            .collect::<Vec<_>>(),
                        want.iter()
                            .map(|(i, w)| (*i, w.to_bits()))
                            .collect::<Vec<_>>(),
                        "row {r} of {n}x{e} top-{k} norm={norm}"
                    );
                }
            }
        }
    }

    #[test]
    fn nan_rows_route_like_route_and_stay_in_range() {
        let t = Tensor::from_vec(
            vec![f32::NAN, f32::NAN, f32::NAN, 0.1, 0.2, 0.7],
            (2, 3),
            &Device::Cpu,
        )
        .unwrap();
        let (ids, _) = top_k(&t, 2, true).unwrap();
        assert_eq!(ids.to_vec2::<u32>().unwrap(), vec![vec![0, 1], vec![2, 1]]);
        assert_eq!(route(&[f32::NAN; 3], 2, true)[0].0, 0);
        assert!(top_k(&t, 4, true).is_err());
        assert!(top_k(&t, 0, true).is_err());
    }

    #[test]
    fn grouping_is_a_stable_sort_by_expert() {
        let ids = vec![3u32, 0, 1, 3, 0, 2, 3, 1];
        let t = Tensor::from_vec(ids.clone(), (4, 2), &Device::Cpu).unwrap();
        let g = group_by_expert(&t, 5).unwrap();
        assert_eq!(g.counts, vec![2, 2, 1, 3, 0]);
        assert_eq!(g.offsets(), vec![0, 2, 4, 5, 8]);
        assert_eq!(
            g.tokens.to_vec1::<u32>().unwrap(),
            vec![0, 2, 1, 3, 2, 0, 1, 3]
        );
        assert_eq!(
            g.slots.to_vec1::<u32>().unwrap(),
            vec![1, 4, 2, 7, 5, 0, 3, 6]
        );
        // An id outside the expert range is an error, not a wrong grouping.
        let bad = Tensor::from_vec(vec![0u32, 9], (1, 2), &Device::Cpu).unwrap();
        assert!(group_by_expert(&bad, 4).is_err());
    }
}
