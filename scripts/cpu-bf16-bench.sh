#!/usr/bin/env bash
# Side-by-side CPU speed of the PoC forward in bf16: this implementation with the
# AVX512-BF16 kernel, the same with the kernel off (POC_CPU_BF16_KERNEL=off, the widening
# f32 product), f32, the FP8 copy, and PyTorch + transformers in bf16 and f32, alternating
# in one run; then the artifact distances between the bf16 kernel sets.
#
#   [ROUNDS=2] scripts/cpu-bf16-bench.sh [WORKDIR]   (needs target/release/poc and python3 with
#                                          torch + transformers; not needed for CI)
#
# Prints one JSON line per run, then the distances; docs/benchmarks.md records the result.
set -euo pipefail
cd "$(dirname "$0")/.."
POC=target/release/poc
W=${1:-/tmp/cpu-bf16-bench}
mkdir -p "$W"
BH=bench-block; PK=bench-key
for preset in bench-moe-30b-a3b-2l bench-dense-0.6b; do
  [ -f "$W/$preset/config.json" ] || "$POC" model init --preset "$preset" --out "$W/$preset" >/dev/null
  [ -f "$W/$preset-fp8/config.json" ] || "$POC" model quantize --fp8 "$W/$preset" "$W/$preset-fp8" >/dev/null
done
ours() { # preset dtype L B nonces [env]
  local m=$1 d=$2 l=$3 b=$4 n=$5; shift 5
  env "$@" "$POC" artifacts bench --model "$W/$m" --dtype "$d" --seq-len "$l" --batch-size "$b" \
    --nonces "$n" --json 2>/dev/null | python3 -c "import json,sys; r=json.load(sys.stdin); r=r[0] if isinstance(r,list) else r; print(json.dumps({'impl':'ours','model':'$m','dtype':'$d','env':'$*','L':$l,'B':$b,'tok_s':r.get('tokens_per_second')}))"
}
torch_() { # preset dtype L B nonces
  python3 scripts/torch_reference.py --model "$W/$1" --block-hash $BH --public-key $PK \
    --dtype "$2" --seq-len "$3" --batch-size "$4" --bench "$5" 2>/dev/null \
    | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(json.dumps({'impl':'torch','model':'$1','dtype':'$2','L':$3,'B':$4,'tok_s':r['tokens_per_second']}))"
}
for round in $(seq "${ROUNDS:-2}"); do
  for m in bench-moe-30b-a3b-2l bench-dense-0.6b; do
    for lb in "256 4 16" "1024 1 8"; do
      set -- $lb
      ours "$m" bf16 "$1" "$2" "$3"
      torch_ "$m" bfloat16 "$1" "$2" "$3"
      ours "$m" bf16 "$1" "$2" "$3" POC_CPU_BF16_KERNEL=off
      ours "$m-fp8" bf16 "$1" "$2" "$3"
      ours "$m" f32 "$1" "$2" "$3"
      torch_ "$m" float32 "$1" "$2" "$3"
    done
  done
done
# Distances: 32 nonces at L = 256 per preset, bf16 from both kernels and PyTorch, f32.
for m in bench-moe-30b-a3b-2l bench-dense-0.6b; do
  "$POC" artifacts compute --model "$W/$m" --dtype bf16 --block-hash $BH --public-key $PK \
    --nonce-range 0..32 --seq-len 256 --batch-size 4 > "$W/$m.ours-bf16.json" 2>/dev/null
  POC_CPU_BF16_KERNEL=off "$POC" artifacts compute --model "$W/$m" --dtype bf16 --block-hash $BH \
    --public-key $PK --nonce-range 0..32 --seq-len 256 --batch-size 4 > "$W/$m.widen-bf16.json" 2>/dev/null
  "$POC" artifacts compute --model "$W/$m" --dtype f32 --block-hash $BH --public-key $PK \
    --nonce-range 0..32 --seq-len 256 --batch-size 4 > "$W/$m.ours-f32.json" 2>/dev/null
  python3 scripts/torch_reference.py --model "$W/$m" --block-hash $BH --public-key $PK \
    --nonces "$(seq -s, 0 31)" --seq-len 256 --batch-size 4 --dtype bfloat16 > "$W/$m.torch-bf16.json" 2>/dev/null
  python3 - "$W" "$m" <<'PY'
import base64, json, math, struct, sys
w, m = sys.argv[1], sys.argv[2]
def load(n):
    a = json.load(open(f"{w}/{m}.{n}.json"))["artifacts"]
    return {x["nonce"]: struct.unpack(f"<{len(base64.b64decode(x['vector_b64']))//2}e", base64.b64decode(x["vector_b64"])) for x in a}
sets = {n: load(n) for n in ["ours-bf16", "widen-bf16", "torch-bf16", "ours-f32"]}
def dist(a, b):
    d = sorted(math.dist(sets[a][k], sets[b][k]) for k in sets[a])
    return {"pair": f"{a} vs {b}", "mean": sum(d) / len(d), "p50": d[len(d) // 2], "max": d[-1]}
for p in [("ours-bf16", "torch-bf16"), ("widen-bf16", "torch-bf16"), ("ours-bf16", "widen-bf16"),
          ("ours-bf16", "ours-f32"), ("torch-bf16", "ours-f32")]:
    print(json.dumps({"model": m, **dist(*p)}))
PY
done
