#!/usr/bin/env bash
# Training speed of a `generate` task with packing against padding, on a GPU, in one run:
# configs/pubmedqa-explained-smollm2-gpu.toml (PubMedQA's explained answers, SmolLM2-135M,
# batch 8, max_len 768) for STEPS optimizer steps with `packing` on (8 rows of up to 768
# tokens, several examples a row, each attending only to itself) and off (8 examples, each
# padded to the longest of its batch). Tokens are real tokens (padding not counted), summed
# over the steps after the first 3 and divided by their time; memory is the step's peak.
#
# Usage, from the repository root on the GPU machine:
#   host/benches/packing_speed.sh MEDTUNE GGUF OUT [STEPS]
# MEDTUNE: a medtune built with --features cuda; GGUF: SmolLM2-135M-Instruct.Q4_1.gguf.
set -euo pipefail
BIN=$(realpath "$1"); GGUF=$(realpath "$2"); OUT=$3; STEPS=${4:-40}
mkdir -p "$OUT" /tmp/mt/models/smollm2
[ -e /tmp/mt/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ] || cp "$GGUF" /tmp/mt/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export MEDTUNE_MODELS=/tmp/mt/models
for mode in packing padding; do
  c=configs/bench-$mode.toml
  sed -e "s/^name = \"pubmedqa-explained-smollm2-gpu\"/name = \"bench-$mode\"/" -e "s/^epochs = .*/max_steps = $STEPS/" \
    configs/pubmedqa-explained-smollm2-gpu.toml > "$c"
  [ "$mode" = padding ] && sed -i 's/^\[train\]$/[train]\npacking = false/' "$c"
  "$BIN" data -c "$c" > "$OUT/$mode-data.log" 2>&1
  "$BIN" train -c "$c" > "$OUT/$mode.log" 2>&1
  cp work/runs/bench-$mode/metrics.jsonl "$OUT/$mode-metrics.jsonl"
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = {}
for mode in ("packing", "padding"):
    steps = [json.loads(l) for l in open(f"{out}/{mode}-metrics.jsonl")][3:]
    tokens = sum(s["tokens"] for s in steps)
    secs = sum(s["tokens"] / s["tokens_per_s"] for s in steps)
    rows[mode] = (tokens / secs, tokens / len(steps), max(s["memory_mib"] for s in steps))
    print(f"{mode}: {rows[mode][0]:,.0f} tokens/s, {rows[mode][1]:,.0f} real tokens a step, peak {rows[mode][2]:,.0f} MiB")
print(f"packing / padding: {rows['packing'][0] / rows['padding'][0]:.2f}x tokens/s")
PY
