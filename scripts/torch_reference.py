#!/usr/bin/env python3
"""PoC v2 artifacts computed with PyTorch + Hugging Face transformers, as an external
cross-check of `poc artifacts compute` (and a speed baseline for the CPU forward).

It re-implements the reference's primitives in torch (seed strings, the murmur variant,
block-layout Box-Muller, pick in CUDA order, Haar chain, FP16 base64) from the
specification, runs the checkpoint with transformers' own Qwen3 / Qwen3-MoE code with
forward hooks reflecting every decoder layer's output, and prints the ML node's JSON.

Usage (not needed to build or test the project):
  python3 -m venv venv && venv/bin/pip install torch transformers safetensors numpy
  venv/bin/python scripts/torch_reference.py --model DIR --block-hash B --public-key K \
      --nonces 0,1,2 --seq-len 32 [--dtype float32|bfloat16] [--batch-size 8] [--bench N]

GPU speed baseline at real widths (no checkpoint needed): `poc model init --preset
qwen3-235b-a22b-fp8 --layers 4 --config-only --out DIR`, then
  python3 scripts/torch_reference.py --model DIR --random-weights --device cuda \
      --dtype bfloat16 --seq-len 1024 --batch-size 8,16,32 --bench 64
builds transformers' Qwen3-MoE from that config with random bf16 weights (the FP8
quantization config is dropped) and times the forward with the reflection hooks; inputs are
drawn on the device outside the timed region.
"""
import argparse
import base64
import hashlib
import json
import math
import sys
import time

import torch
from transformers import AutoModelForCausalLM

MASK = 0xFFFFFFFF


def seed_from_string(s):
    return int(hashlib.sha256(s.encode()).hexdigest()[:8], 16)


def murmur(keys, seed):
    """The non-standard murmur3 (no length mix), vectorised over int64 keys."""
    k = (keys * 0xCC9E2D51) & MASK
    k = ((k << 15) | (k >> 17)) & MASK
    k = (k * 0x1B873593) & MASK
    h = (seed ^ k) & MASK
    h = ((h << 13) | (h >> 19)) & MASK
    h = (h * 5 + 0xE6546B64) & MASK
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK
    h ^= h >> 16
    return h


def uniform(seed, n):
    return murmur(torch.arange(n, dtype=torch.int64), seed).to(torch.float32) / 4294967296.0


def normal(seed, n):
    p = (n + 1) // 2
    u = uniform(seed, 2 * p)
    u1 = torch.clamp(u[:p], min=1e-10)
    u2 = u[p:]
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = 2 * math.pi * u2
    return torch.cat([r * torch.cos(theta), r * torch.sin(theta)])[:n]


def unit(v):
    return v / v.norm()


def inputs(bh, pk, nonce, seq_len, hidden):
    return normal(seed_from_string(f"{bh}_{pk}_nonce{nonce}"), seq_len * hidden).view(seq_len, hidden)


def pick(bh, pk, nonce, k, dim):
    scores = murmur(torch.arange(dim, dtype=torch.int64), seed_from_string(f"{bh}_{pk}_nonce_{nonce}_pick_{k}"))
    order = sorted(range(dim), key=lambda d: (int(scores[d]), d))
    kth = int(scores[order[k - 1]])
    smaller = [d for d in range(dim) if int(scores[d]) < kth]
    equal = [d for d in range(dim) if int(scores[d]) == kth]
    return smaller + equal[: k - len(smaller)]


def artifact(bh, pk, nonce, h, k):
    x = h / (h.norm() + 1e-8)
    y = x[pick(bh, pk, nonce, k, h.numel())].clone()
    for j in range(k - 1):
        w = unit(normal(seed_from_string(f"{bh}_{pk}_nonce_{nonce}_haar_hh_{k}_{j}"), k))
        y = y - 2 * (y * w).sum() * w
    y = y / (y.norm() + 1e-8)
    return base64.b64encode(y.to(torch.float16).numpy().astype("<f2").tobytes()).decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--block-hash", required=True)
    ap.add_argument("--public-key", required=True)
    ap.add_argument("--nonces", default="0")
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--k-dim", type=int, default=12)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", default="8", help="nonces per forward (a list for --bench)")
    ap.add_argument("--bench", type=int, default=0, help="time N nonces instead of printing artifacts")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--random-weights", action="store_true",
                    help="build the model from config.json with random weights (speed only)")
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    batch_sizes = [int(b) for b in str(a.batch_size).split(",")]
    a.batch_size = batch_sizes[0]
    if a.random_weights:
        from transformers import AutoConfig
        cfg = AutoConfig.from_pretrained(a.model)
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        with torch.device(a.device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(a.device)
    model.eval()
    cfg = model.config
    hidden = cfg.hidden_size
    vs = [unit(normal(seed_from_string(f"{a.block_hash}_layer_{i}_householder"), hidden)).to(a.device)
          for i in range(cfg.num_hidden_layers)]

    def make_hook(i):
        def hook(_module, _inp, out):
            x = out[0] if isinstance(out, tuple) else out
            v = vs[i].to(x.dtype)
            x = x - 2 * (x * v).sum(-1, keepdim=True, dtype=torch.float32).to(x.dtype) * v
            return (x,) + tuple(out[1:]) if isinstance(out, tuple) else x
        return hook

    for i, layer in enumerate(model.model.layers):
        layer.register_forward_hook(make_hook(i))

    def run(nonces):
        x = torch.stack([inputs(a.block_hash, a.public_key, n, a.seq_len, hidden) for n in nonces]).to(dtype)
        with torch.no_grad():
            out = model.model(inputs_embeds=x.to(a.device)).last_hidden_state[:, -1, :].float().cpu()
        return [artifact(a.block_hash, a.public_key, n, out[i], a.k_dim) for i, n in enumerate(nonces)]

    if a.bench and a.device != "cpu":
        # Device timing of the forward alone (inputs drawn on the device beforehand).
        layers = cfg.num_hidden_layers
        for b in batch_sizes:
            x = torch.randn(b, a.seq_len, hidden, device=a.device, dtype=dtype)
            with torch.no_grad():
                model.model(inputs_embeds=x)
                torch.cuda.synchronize()
                steps = max(1, a.bench // b)
                t = time.time()
                for _ in range(steps):
                    model.model(inputs_embeds=x).last_hidden_state[:, -1, :].float()
                torch.cuda.synchronize()
                dt = time.time() - t
            n = steps * b
            print(json.dumps({"nonces": n, "seconds": dt, "nonces_per_second": n / dt,
                              "tokens_per_second": n * a.seq_len / dt,
                              "layer_tokens_per_second": n * a.seq_len * layers / dt,
                              "layers": layers, "dtype": a.dtype, "seq_len": a.seq_len,
                              "batch_size": b, "device": torch.cuda.get_device_name(),
                              "torch": torch.__version__}), flush=True)
        return
    if a.bench:
        nonces = list(range(1000, 1000 + a.bench))
        run(nonces[: a.batch_size])  # warm-up
        t = time.time()
        for s in range(0, len(nonces), a.batch_size):
            run(nonces[s : s + a.batch_size])
        dt = time.time() - t
        print(json.dumps({"nonces": a.bench, "seconds": dt, "nonces_per_second": a.bench / dt,
                          "tokens_per_second": a.bench * a.seq_len / dt, "threads": torch.get_num_threads(),
                          "dtype": a.dtype, "seq_len": a.seq_len, "batch_size": a.batch_size}))
        return
    nonces = [int(n) for n in a.nonces.split(",")]
    arts = []
    for s in range(0, len(nonces), a.batch_size):
        chunk = nonces[s : s + a.batch_size]
        arts += [{"nonce": n, "vector_b64": b} for n, b in zip(chunk, run(chunk))]
    print(json.dumps({"artifacts": arts, "encoding": {"dtype": "f16", "k_dim": a.k_dim, "endian": "le"}}))


if __name__ == "__main__":
    sys.exit(main())
