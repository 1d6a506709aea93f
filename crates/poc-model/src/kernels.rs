//! CUDA kernels of the model that candle does not provide, compiled once per process with
//! NVRTC (no build-time CUDA compiler needed) and launched on candle's stream. Each has a
//! CPU twin in the module that uses it; the GPU check (`scripts/gpu-bench.sh`) compares
//! the two.

use std::sync::OnceLock;

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaStorage, Layout, Shape};

/// Kernel sources (CUDA C).
const SOURCE: &str = r#"
// Block-wide reductions over blockDim.x (a multiple of 32, at most 1024) threads.
__device__ float poc_block_max(float v, float* red) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if ((threadIdx.x & 31u) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float m = red[0];
    for (unsigned int w = 1; w < blockDim.x / 32u; ++w) m = fmaxf(m, red[w]);
    return m;
}

__device__ float poc_block_sum(float v, float* red) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31u) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float s = 0.0f;
    for (unsigned int w = 0; w < blockDim.x / 32u; ++w) s += red[w];
    return s;
}

// Scaled, causally masked softmax of one score row per block, in place: row r (of
// `s` keys) belongs to the query at position offset + r % l and sees keys 0..=that.
extern "C" __global__ void poc_causal_softmax(float* data, unsigned int s, unsigned int l,
                                              unsigned int offset, float scale) {
    __shared__ float red[32];
    float* x = data + (unsigned long long)blockIdx.x * s;
    const unsigned int valid = min(offset + blockIdx.x % l + 1u, s);
    float m = __int_as_float(0xff800000);
    for (unsigned int j = threadIdx.x; j < valid; j += blockDim.x) m = fmaxf(m, x[j]);
    m = poc_block_max(m, red) * scale;
    float sum = 0.0f;
    for (unsigned int j = threadIdx.x; j < valid; j += blockDim.x) {
        const float e = expf(x[j] * scale - m);
        x[j] = e;
        sum += e;
    }
    const float inv = 1.0f / poc_block_sum(sum, red);
    for (unsigned int j = threadIdx.x; j < valid; j += blockDim.x) x[j] *= inv;
    for (unsigned int j = valid + threadIdx.x; j < s; j += blockDim.x) x[j] = 0.0f;
}

// FP8 e4m3 (bias 7, no infinities, NaN = S.1111.111) to f32, exactly.
__device__ float poc_e4m3_to_f32(unsigned char b) {
    const unsigned int s = (b >> 7) & 1u, e = (b >> 3) & 15u, m = b & 7u;
    float v;
    if (e == 15u && m == 7u) {
        v = __int_as_float(0x7fc00000);
    } else if (e == 0u) {
        v = (float)m * 0.001953125f;  // m * 2^-9
    } else {
        v = __uint_as_float(((e + 120u) << 23) | (m << 20));
    }
    return s ? -v : v;
}

// f32 to bf16 bits, round to nearest even (NaN stays a quiet NaN).
__device__ unsigned short poc_f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

// W8A16 dequantization of one padded [rows, cols] FP8 matrix with [rows/br, cols/bc]
// f32 multipliers: out = round(f32(q) * scale) as bf16 (bf16_out) or f32.
extern "C" __global__ void poc_dequant_fp8(const unsigned char* q, const float* scale,
                                           void* out, unsigned int rows, unsigned int cols,
                                           unsigned int br, unsigned int bc,
                                           unsigned int bf16_out) {
    const unsigned long long n = (unsigned long long)rows * cols;
    const unsigned int sc = cols / bc;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned int r = (unsigned int)(i / cols), c = (unsigned int)(i % cols);
        const float v = poc_e4m3_to_f32(q[i]) * scale[(r / br) * sc + c / bc];
        if (bf16_out) ((unsigned short*)out)[i] = poc_f32_to_bf16(v);
        else ((float*)out)[i] = v;
    }
}

// Rows routed to each expert: one block per expert counts the matching ids.
extern "C" __global__ void poc_expert_counts(const unsigned int* ids, unsigned int nk,
                                             unsigned int* out) {
    const unsigned int e = blockIdx.x;
    unsigned int c = 0;
    for (unsigned int i = threadIdx.x; i < nk; i += blockDim.x) c += (ids[i] == e);
    for (int o = 16; o > 0; o >>= 1) c += __shfl_down_sync(0xffffffffu, c, o);
    __shared__ unsigned int warp[32];
    if ((threadIdx.x & 31u) == 0) warp[threadIdx.x >> 5] = c;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int s = 0;
        for (unsigned int w = 0; w < (blockDim.x + 31u) / 32u; ++w) s += warp[w];
        out[e] = s;
    }
}

// Stable placement: block e walks the ids in order and writes the positions of its rows
// after the rows of experts 0..e-1 (out = [counts | tokens | flat positions]).
extern "C" __global__ void poc_expert_scatter(const unsigned int* ids, unsigned int nk,
                                              unsigned int k, unsigned int experts,
                                              unsigned int* out) {
    const unsigned int e = blockIdx.x;
    const unsigned int lane = threadIdx.x & 31u, wid = threadIdx.x >> 5;
    const unsigned int nwarps = (blockDim.x + 31u) / 32u;
    __shared__ unsigned int base;
    __shared__ unsigned int totals[32];
    if (threadIdx.x == 0) {
        unsigned int s = 0;
        for (unsigned int j = 0; j < e; ++j) s += out[j];
        base = s;
    }
    __syncthreads();
    unsigned int* tokens = out + experts;
    unsigned int* flat = out + experts + nk;
    for (unsigned int start = 0; start < nk; start += blockDim.x) {
        const unsigned int i = start + threadIdx.x;
        const bool hit = i < nk && ids[i] == e;
        const unsigned int ballot = __ballot_sync(0xffffffffu, hit);
        const unsigned int before = __popc(ballot & ((1u << lane) - 1u));
        if (lane == 0) totals[wid] = __popc(ballot);
        __syncthreads();
        unsigned int offset = 0, total = 0;
        for (unsigned int w = 0; w < nwarps; ++w) {
            if (w < wid) offset += totals[w];
            total += totals[w];
        }
        if (hit) {
            const unsigned int pos = base + offset + before;
            tokens[pos] = i / k;
            flat[pos] = i;
        }
        __syncthreads();
        if (threadIdx.x == 0) base += total;
        __syncthreads();
    }
}
"#;

const MODULE: &str = "poc_model_kernels";
const THREADS: u32 = 256;

/// The PTX of [`SOURCE`], compiled on first use.
fn ptx() -> candle_core::Result<&'static str> {
    static PTX: OnceLock<Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SOURCE)
            .map(|p| p.to_src())
            .map_err(|e| format!("cannot compile the model's CUDA kernels with NVRTC: {e}"))
    })
    .as_deref()
    .map_err(|e| candle_core::Error::Msg(e.clone()))
}

/// GPU version of the expert grouping (see `routing::GroupByExpert`).
pub(crate) fn group_by_expert(
    storage: &CudaStorage,
    layout: &Layout,
    experts: usize,
    k: usize,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let CudaStorageSlice::U32(ids) = &storage.slice else {
        candle_core::bail!("group-by-expert expects u32 expert ids");
    };
    if layout.contiguous_offsets().is_none() {
        candle_core::bail!("group-by-expert expects contiguous ids");
    }
    let dev = &storage.device;
    let nk = layout.shape().elem_count();
    let ids = ids.slice(layout.start_offset()..layout.start_offset() + nk);
    let out = dev.alloc_zeros::<u32>(experts + 2 * nk)?;
    let (nk32, k32, e32) = (nk as u32, k as u32, experts as u32);
    let cfg = LaunchConfig {
        grid_dim: (e32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let counts = dev.get_or_load_custom_func("poc_expert_counts", MODULE, ptx()?)?;
    let mut b = counts.builder();
    b.arg(&ids);
    b.arg(&nk32);
    b.arg(&out);
    // SAFETY: the arguments match the kernel's signature; `out` holds experts + 2 nk.
    unsafe { b.launch(cfg) }.w()?;
    let scatter = dev.get_or_load_custom_func("poc_expert_scatter", MODULE, ptx()?)?;
    let mut b = scatter.builder();
    b.arg(&ids);
    b.arg(&nk32);
    b.arg(&k32);
    b.arg(&e32);
    b.arg(&out);
    // SAFETY: as above; the counts kernel ran first on the same stream.
    unsafe { b.launch(cfg) }.w()?;
    Ok((
        CudaStorage {
            slice: CudaStorageSlice::U32(out),
            device: dev.clone(),
        },
        Shape::from(experts + 2 * nk),
    ))
}

/// GPU version of the fused causal softmax (see `model::attention::CausalSoftmax`): one block per
/// score row of `s` keys, in place.
pub(crate) fn causal_softmax(
    storage: &mut CudaStorage,
    layout: &Layout,
    (l, s, offset): (usize, usize, usize),
    scale: f32,
) -> candle_core::Result<()> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("causal-softmax expects contiguous scores");
    };
    let dev = storage.device.clone();
    let CudaStorageSlice::F32(data) = &mut storage.slice else {
        candle_core::bail!("causal-softmax expects f32 scores");
    };
    let rows = (end - start) / s.max(1);
    if rows == 0 {
        return Ok(());
    }
    let mut view = data.slice_mut(start..end);
    let (s32, l32, o32) = (s as u32, l as u32, offset as u32);
    let func = dev.get_or_load_custom_func("poc_causal_softmax", MODULE, ptx()?)?;
    let mut b = func.builder();
    b.arg(&mut view);
    b.arg(&s32);
    b.arg(&l32);
    b.arg(&o32);
    b.arg(&scale);
    let cfg = LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's signature; the view holds rows * s floats.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}

/// GPU version of the W8A16 dequantization (see `fp8::Dequantize`): `q` `[rows, cols]`
/// FP8, `scale` `[rows/br · cols/bc]` f32, output bf16 or f32.
pub(crate) fn dequantize_fp8(
    q: (&CudaStorage, &Layout),
    scale: (&CudaStorage, &Layout),
    block: [usize; 2],
    bf16_out: bool,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let (CudaStorageSlice::F8E4M3(qs), CudaStorageSlice::F32(ss)) = (&q.0.slice, &scale.0.slice)
    else {
        candle_core::bail!("fp8 dequantization expects F8E4M3 weights and f32 scales");
    };
    if q.1.contiguous_offsets().is_none() || scale.1.contiguous_offsets().is_none() {
        candle_core::bail!("fp8 dequantization expects contiguous operands");
    }
    let dims = q.1.shape().dims();
    let &[rows, cols] = dims else {
        candle_core::bail!("fp8 dequantization expects a matrix, got {dims:?}");
    };
    let dev = &q.0.device;
    let n = rows * cols;
    let qv = qs.slice(q.1.start_offset()..q.1.start_offset() + n);
    let sv =
        ss.slice(scale.1.start_offset()..scale.1.start_offset() + scale.1.shape().elem_count());
    let (r32, c32, br32, bc32, bf) = (
        rows as u32,
        cols as u32,
        block[0] as u32,
        block[1] as u32,
        u32::from(bf16_out),
    );
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(THREADS as usize).min(65_535 * 4) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let func = dev.get_or_load_custom_func("poc_dequant_fp8", MODULE, ptx()?)?;
    // One launch, whichever element type the output has (`bf` selects it in the kernel).
    macro_rules! launch {
        ($t:ty) => {{
            // SAFETY: every element is written by the kernel below.
            let out = unsafe { dev.alloc::<$t>(n)? };
            let mut b = func.builder();
            b.arg(&qv);
            b.arg(&sv);
            b.arg(&out);
            b.arg(&r32);
            b.arg(&c32);
            b.arg(&br32);
            b.arg(&bc32);
            b.arg(&bf);
            // SAFETY: the arguments match the kernel's signature; `out` holds n elements.
            unsafe { b.launch(cfg) }.w()?;
            out
        }};
    }
    let slice = if bf16_out {
        CudaStorageSlice::BF16(launch!(half::bf16))
    } else {
        CudaStorageSlice::F32(launch!(f32))
    };
    Ok((
        CudaStorage {
            slice,
            device: dev.clone(),
        },
        Shape::from((rows, cols)),
    ))
}

#[cfg(test)]
mod tests {
    /// The kernels compile with NVRTC (no GPU needed): a syntax or type error shows here,
    /// not on the GPU machine.
    #[test]
    fn the_kernels_compile() {
        let ptx = super::ptx().expect("NVRTC compiles the kernels");
        for name in [
            "poc_expert_counts",
            "poc_expert_scatter",
            "poc_causal_softmax",
            "poc_dequant_fp8",
        ] {
            assert!(ptx.contains(&format!(".entry {name}")), "{name} missing");
        }
    }
}
