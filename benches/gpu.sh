#!/usr/bin/env bash
# The one script a GPU machine runs for the GPU checks. It builds nothing: BIN is a binary built
# beforehand (`bash ../shared/gpu/build-cuda.sh`, see that folder's README for carrying it over).
#
#   benches/gpu.sh BIN OUT [DEVICE]        DEVICE defaults to cuda
#   QUICK=1 benches/gpu.sh target/release/reincarnate /tmp/gpu-dry cpu   # a dry run of the script itself
#
# Writes into OUT: correctness.json (the first distill steps of darkroom-ad's model on DEVICE against
# the CPU: loss series and the largest relative difference, pass at 1e-3; dropout off so both runs
# see the same computation), bench-ad-paper.json and bench-ad-large.json (AD training tokens/s and
# frozen evaluation env-steps/s), bench-updates.json (DQN/SAC/SimbaV2 updates/s), and prints a table.
set -euo pipefail
BIN=${1:?usage: benches/gpu.sh BIN OUT [DEVICE]}
OUT=${2:?usage: benches/gpu.sh BIN OUT [DEVICE]}
DEV=${3:-cuda}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
if [ "$QUICK" = 1 ]; then runs=2; hist=600; steps=20; secs=0.2; else runs=20; hist=4000; steps=200; secs=2; fi

# darkroom-ad's model (4 layers, 4 heads, d 64, d_ff 2048, context 80) with dropout off.
model=(--set model.n_layer=4 --set model.n_head=4 --set model.d_model=64 --set model.d_ff=2048
       --set model.context=80 --set model.dropout=0.0 --set model.attn_dropout=0.0)

echo "== histories ($runs PPO runs on the CPU)"
"$BIN" collect --env dark_room --algo ppo --runs "$runs" --steps "$hist" --device cpu --out "$OUT/data" >/dev/null
for d in cpu "$DEV"; do
  echo "== distill $steps steps on $d"
  rm -rf "$OUT/distill-$d"
  "$BIN" distill --data "$OUT/data" --device "$d" --steps "$steps" --set batch=128 --set warmup_steps=10 \
    --set every_kth_episode=10 --set log_interval=10 "${model[@]}" --out "$OUT/distill-$d" >/dev/null
done

python3 - "$OUT" "$DEV" <<'PY'
import json, sys
out, dev = sys.argv[1], sys.argv[2]
def losses(d):
    rows = [json.loads(l) for l in open(f"{out}/distill-{d}/metrics.jsonl")]
    return [r["loss"] for r in rows if r.get("kind") == "train" and "loss" in r]
a, b = losses("cpu"), losses(dev)
rel = max(abs(x - y) / max(abs(x), abs(y), 1e-12) for x, y in zip(a, b)) if a and len(a) == len(b) else float("inf")
json.dump({"device": dev, "cpu_loss": a, "device_loss": b, "max_relative_difference": rel,
           "pass": rel <= 1e-3}, open(f"{out}/correctness.json", "w"), indent=1)
print(f"distill loss, {dev} vs cpu: {len(a)} points, max relative difference {rel:.2e} ({'pass' if rel <= 1e-3 else 'FAIL'} at 1e-3)")
PY

echo "== bench ad (paper size) on $DEV"
"$BIN" bench ad --device "$DEV" --json --seconds "$secs" --layers 4 --heads 4 --d-model 64 --context 80 \
  --batch 128 --eval-envs 128 > "$OUT/bench-ad-paper.json"
if [ "$QUICK" != 1 ]; then
  echo "== bench ad (8 layers, 8 heads, d 512, context 1024, batch 64) on $DEV"
  "$BIN" bench ad --device "$DEV" --json --seconds "$secs" --layers 8 --heads 8 --d-model 512 \
    --context 1024 --batch 64 --eval-envs 64 > "$OUT/bench-ad-large.json"
fi
echo "== bench updates on $DEV"
"$BIN" bench updates --device "$DEV" --json --seconds "$secs" > "$OUT/bench-updates.json"

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
for f in ["bench-ad-paper.json", "bench-ad-large.json", "bench-updates.json"]:
    p = os.path.join(out, f)
    if not os.path.exists(p):
        continue
    # One JSON object per line, as `bench --json` prints them.
    rows = [json.loads(l) for l in open(p) if l.strip()]
    for r in rows:
        print(f"{f:24} {r.get('name', '?'):60} {r.get('value', float('nan')):>14.1f} {r.get('unit', '')}")
PY
