"""Golden PoC v1 distances from a PyTorch implementation of the reference's model.

Builds the nano-Llama of `compute-v1.md` §4 in PyTorch (fp16 weights from the pool of
§5, numpy's generators), runs the §6 pipeline for a few nonces of the tiny parameter set
and writes crates/poc-v1/tests/data/torch_distances.json. Needs numpy and torch; the file
is committed, the tests do not need Python.
"""
import hashlib
import json
import math
import os

import numpy as np
import torch


def entropy(s, m):
    out = []
    for i in range(m):
        out.extend(np.frombuffer(hashlib.sha256(f"{s}_{i}".encode()).digest(), dtype="<u4").tolist())
    return out


def rng(s, m):
    return np.random.default_rng(np.random.SeedSequence(np.array(entropy(s, m), dtype=np.uint32)))


P = dict(dim=64, n_layers=2, n_heads=4, vocab_size=8196, ffn_dim_multiplier=1.0, multiple_of=64, norm_eps=1e-5, rope_theta=10000.0, seq_len=16)


def hidden(p):
    h = int(2 * (4 * p["dim"]) / 3)
    h = int(p["ffn_dim_multiplier"] * h)
    return p["multiple_of"] * ((h + p["multiple_of"] - 1) // p["multiple_of"])


def param_shapes(p):
    d, v, hd, h = p["dim"], p["vocab_size"], p["dim"] // p["n_heads"], hidden(p)
    out = [("tok_embeddings.weight", (v, d))]
    for i in range(p["n_layers"]):
        q = f"layers.{i}"
        out += [(f"{q}.attention.wq.weight", (d, d)), (f"{q}.attention.wk.weight", (d, d)), (f"{q}.attention.wv.weight", (d, d)), (f"{q}.attention.wo.weight", (d, d)),
                (f"{q}.feed_forward.w1.weight", (h, d)), (f"{q}.feed_forward.w2.weight", (d, h)), (f"{q}.feed_forward.w3.weight", (h, d)),
                (f"{q}.attention_norm.weight", (d,)), (f"{q}.ffn_norm.weight", (d,))]
    return out + [("norm.weight", (d,)), ("output.weight", (v, d))]


def init(p, bh):
    shapes = param_shapes(p)
    total = sum(int(np.prod(s)) for _, s in shapes)
    pool_n = max(50000, int(total * 0.05))
    pool = torch.from_numpy(rng(bh, 4).normal(0.0, 0.02, size=pool_n).astype(np.float32)).to(torch.float16)
    w = {}
    for name, s in shapes:
        numel = int(np.prod(s))
        nh = int(hashlib.sha256(f"{bh}_{name}".encode()).hexdigest()[:8], 16)
        if numel <= pool_n:
            start = nh % (pool_n - numel + 1)
            vals = pool[start:start + numel]
        else:
            reps = numel // pool_n
            vals = torch.cat([pool.repeat(reps), pool[: numel % pool_n]])
            vals = torch.roll(vals, -(nh % numel))
        w[name] = vals.view(*s).clone()
    return w


def rms(x, wgt, eps):
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * wgt


def forward(p, w, h):
    B, L, D = h.shape
    nh = p["n_heads"]; hd = D // nh
    freqs = 1.0 / (p["rope_theta"] ** (torch.arange(0, hd, 2)[: hd // 2].float() / hd))
    t = torch.arange(2 * p["seq_len"], dtype=torch.float32)
    ang = torch.outer(t, freqs)
    cos, sin = torch.cos(ang).half().float()[:L], torch.sin(ang).half().float()[:L]

    def rope(x):
        xf = x.float().reshape(B, L, nh, hd // 2, 2)
        re, im = xf[..., 0], xf[..., 1]
        c, s_ = cos.view(1, L, 1, hd // 2), sin.view(1, L, 1, hd // 2)
        return torch.stack([re * c - im * s_, re * s_ + im * c], -1).reshape(B, L, nh, hd).type_as(x)

    mask = torch.triu(torch.full((L, L), float("-inf")), diagonal=1).half()
    for i in range(p["n_layers"]):
        q_ = f"layers.{i}"
        x = rms(h, w[f"{q_}.attention_norm.weight"], p["norm_eps"])
        q = rope((x @ w[f"{q_}.attention.wq.weight"].T).view(B, L, nh, hd)).transpose(1, 2)
        k = rope((x @ w[f"{q_}.attention.wk.weight"].T).view(B, L, nh, hd)).transpose(1, 2)
        v = (x @ w[f"{q_}.attention.wv.weight"].T).view(B, L, nh, hd).transpose(1, 2)
        sc = (q @ k.transpose(2, 3)) / math.sqrt(hd) + mask
        sc = torch.softmax(sc.float(), -1).type_as(q)
        o = (sc @ v).transpose(1, 2).reshape(B, L, D)
        h = h + o @ w[f"{q_}.attention.wo.weight"].T
        x = rms(h, w[f"{q_}.ffn_norm.weight"], p["norm_eps"])
        a = torch.nn.functional.silu(x @ w[f"{q_}.feed_forward.w1.weight"].T)
        h = h + (a * (x @ w[f"{q_}.feed_forward.w3.weight"].T)) @ w[f"{q_}.feed_forward.w2.weight"].T
    h = rms(h, w["norm.weight"], p["norm_eps"])
    return (h @ w["output.weight"].T).float()[:, -1, :]


bh, pk = "blockhash-1", "pk"
w = init(P, bh)
t = rng(f"{bh}_target", 1).standard_normal((1, P["vocab_size"]))[0]
t = t / np.linalg.norm(t)
out = {"block_hash": bh, "public_key": pk, "nonces": [], "distances": []}
for n in range(8):
    x = rng(f"{bh}_{pk}_nonce{n}", 4).standard_normal((1, P["seq_len"], P["dim"]))
    h = torch.tensor(x, dtype=torch.float16)
    o = forward(P, w, h).numpy()[0]
    perm = rng(f"{bh}_{pk}_nonce_{n}_permutations", 1).permutation(P["vocab_size"])
    o = o[perm]
    o = o / np.linalg.norm(o)
    out["nonces"].append(n)
    out["distances"].append(float(np.linalg.norm(o - t)))
path = os.path.join(os.path.dirname(__file__), "..", "crates", "poc-v1", "tests", "data", "torch_distances.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(out["distances"])
