#!/usr/bin/env bash
# Builds `poc` with the `cuda` feature (NVIDIA GPUs) on any Linux x86-64 machine, without a
# GPU, a driver or a system CUDA toolkit:
#   1. installs the CUDA 13.0 compiler and libraries from PyPI into a virtual environment;
#   2. links against them plus a stub libcuda.so whose only job is to satisfy the linker
#      (the real libcuda.so.1 comes from the GPU driver at run time).
# Output: target-cuda/release/poc. On the GPU machine, put the CUDA 13 runtime libraries
# (libcublas.so.13, libcublasLt.so.13, libcudart.so.13, libcurand.so.10, e.g. the PyPI
# nvidia-* wheels) on LD_LIBRARY_PATH. Needs a driver for CUDA 13.0 or newer (>= 580).
# Optional: CUDA_COMPUTE_CAP (default 90 = H100/H200).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/target-cuda
venv=$out/toolkit
mkdir -p "$out/link"
if [ ! -x "$venv/bin/pip" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" \
  "nvidia-cuda-runtime==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-cccl==13.0.*" \
  "nvidia-cublas==13.0.*" "nvidia-curand" "nvidia-cuda-nvrtc==13.0.*"
cu=$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)
for lib in cublas cublasLt cudart nvrtc; do ln -sf "$cu/lib/lib$lib.so.13" "$out/link/lib$lib.so"; done
ln -sf "$cu/lib/libcurand.so.10" "$out/link/libcurand.so"

export CUDA_HOME=$cu PATH=$cu/bin:$PATH CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export RUSTFLAGS="-L $out/link" CARGO_TARGET_DIR=$out
cd "$root"
if [ ! -f "$out/link/libcuda.so" ]; then
  # First pass: everything compiles; only the final link lacks libcuda. Collect the driver
  # API symbols the CUDA crates reference and build the stub from them.
  cargo build --release --features cuda -p poc 2>/dev/null || true
  for f in "$out"/release/deps/libcudarc-*.rlib "$out"/release/deps/libcandle_core-*.rlib; do
    nm -u "$f" 2>/dev/null || true
  done | awk '{print $2}' | grep -E '^cu[A-Z]' | sort -u | awk '{print "void " $1 "(void) {}"}' > "$out/link/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$out/link/libcuda.so" "$out/link/cuda_stub.c"
fi
cargo build --release --features cuda -p poc
echo "built $out/release/poc"
