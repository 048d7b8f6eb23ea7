#!/usr/bin/env bash
# /v1/answer latency (p50/p95) and generated tokens/s on this machine's CPU, in one run:
# `medtune serve` with candle, with ONNX Runtime, and Hugging Face transformers answering the
# same questions in-process; ONNX Runtime over the f32 export and over the int8 one
# (dynamic quantization). Uses the default config's run (`medtune run` it first).
# Needs a Python with torch and transformers (PYTHON=...).
#   host/benches/answer_latency.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
N=${1:-30}
CONFIG=configs/pubmedqa-smollm2.toml
BIN=target/release/medtune
cargo build -q --release -p medtune
RUN=work/runs/pubmedqa-smollm2
[ -f $RUN/onnx/model.onnx ] || $BIN export -c $CONFIG >/dev/null
[ -f $RUN/onnx-int8/model.onnx ] || $BIN export -c $CONFIG --precision int8 --out $RUN/onnx-int8 >/dev/null
[ -f $RUN/merged/model.safetensors ] || $BIN merge -c $CONFIG >/dev/null
for engine in "candle" "ort --onnx $RUN/onnx" "ort --onnx $RUN/onnx-int8"; do
  echo "engine: $engine"
  $BIN serve -c $CONFIG --engine $engine --addr 127.0.0.1:0 > /tmp/medtune-serve.out 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do grep -q listening /tmp/medtune-serve.out 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/listening on //p' /tmp/medtune-serve.out)
  until curl -sf "$url/health" >/dev/null; do sleep 0.2; done
  "$PYTHON" host/benches/answer_latency.py serve "$url" work/data/processed/test.jsonl "$N"
  kill -TERM $pid; wait $pid || true
done
MAX_LEN=$(sed -n 's/^max_len *= *\([0-9]*\).*/\1/p' $CONFIG)
"$PYTHON" host/benches/answer_latency.py hf $RUN/merged work/data/processed/test.jsonl "$N" "$(nproc)" "$MAX_LEN" 2>&1 | grep -E "engine|prompts of"
