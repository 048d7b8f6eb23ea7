#!/usr/bin/env bash
# Continuous batching on this machine's CPU, in one run: `medtune serve` (candle) answering one
# stream, then 16 concurrent streams, and the time to the first token of a 256-token prompt;
# then Hugging Face transformers' time to the first token of the same prompt in-process, on
# the same fine-tuned weights (the default config's run, merged). `medtune run` it first.
# Needs a Python with torch and transformers (PYTHON=...).
#   [SERVE_ARGS="--max-batch 1"] host/benches/serve_load.sh [REQUESTS_PER_STREAM] [MAX_TOKENS]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
REQUESTS=${1:-4}
MAX_TOKENS=${2:-64}
CONFIG=configs/pubmedqa-smollm2.toml
BIN=target/release/medtune
cargo build -q --release -p medtune
RUN=work/runs/pubmedqa-smollm2
[ -f $RUN/merged/model.safetensors ] || $BIN merge -c $CONFIG >/dev/null
$BIN serve -c $CONFIG --addr 127.0.0.1:0 --max-tokens "$MAX_TOKENS" ${SERVE_ARGS:-} > /tmp/medtune-serve.out 2>/dev/null &
pid=$!
for _ in $(seq 100); do grep -q listening /tmp/medtune-serve.out 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/listening on //p' /tmp/medtune-serve.out)
until curl -sf "$url/health" >/dev/null; do sleep 0.2; done
"$PYTHON" host/benches/serve_load.py serve "$url" "$REQUESTS" "$MAX_TOKENS"
kill -TERM $pid; wait $pid || true
"$PYTHON" host/benches/serve_load.py hf $RUN/merged "$(nproc)"
