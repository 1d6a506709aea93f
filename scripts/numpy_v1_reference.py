"""Reference values of numpy's random pipeline for the PoC v1 tests.

Writes crates/poc-v1/tests/data/numpy_reference.json. Needs numpy (2.x); run with
`python3 scripts/numpy_v1_reference.py`. The generated file is committed; the tests do
not need Python.
"""
import hashlib
import json
import os

import numpy as np


def entropy(s, m):
    out = []
    for i in range(m):
        d = hashlib.sha256(f"{s}_{i}".encode()).digest()
        out.extend(np.frombuffer(d, dtype="<u4").tolist())
    return out


def rng(s, m):
    return np.random.default_rng(np.random.SeedSequence(np.array(entropy(s, m), dtype=np.uint32)))


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


out = {"numpy": np.__version__}
s = "TEST_BLOCK_test_pub_key_nonce0"
out["entropy"] = entropy(s, 4)
ss = np.random.SeedSequence(np.array(entropy(s, 4), dtype=np.uint32))
out["generate_state"] = [str(int(x)) for x in ss.generate_state(4, np.uint64)]
g = rng(s, 4)
st = g.bit_generator.state["state"]
out["pcg_state"] = str(st["state"])
out["pcg_inc"] = str(st["inc"])
out["raw"] = [str(int(x)) for x in rng(s, 4).bit_generator.random_raw(5)]
out["doubles"] = rng(s, 4).random(3).tolist()
out["normals_head"] = rng("seed-A", 4).standard_normal(16).tolist()
n = rng("seed-B", 4).standard_normal(2_000_000)
out["normals_2m_sha256"] = sha(n.astype("<f8"))
out["normals_2m_extremes"] = [float(n.min()), float(n.max())]
out["normal_scaled_head"] = rng("TEST_BLOCK", 4).normal(0.0, 0.02, size=8).tolist()
perm = rng("TEST_BLOCK_test_pub_key_nonce_0_permutations", 1).permutation(8196)
out["perm_head"] = perm[:10].tolist()
out["perm_sha256"] = sha(perm.astype("<i8"))
small = [rng(f"p{k}", 1).permutation(k).tolist() for k in range(1, 12)]
out["perm_small"] = small
inputs = rng(s, 4).standard_normal((1, 256, 1792))
out["inputs_head"] = inputs[0, 0, :6].tolist()
out["inputs_f16_sha256"] = sha(inputs.astype(np.float32).astype(np.float16))
t = rng("TEST_BLOCK_target", 1).standard_normal((1, 8196))[0]
t = t / np.linalg.norm(t)
out["target_head"] = t[:6].tolist()
path = os.path.join(os.path.dirname(__file__), "..", "crates", "poc-v1", "tests", "data", "numpy_reference.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print("wrote", path)
