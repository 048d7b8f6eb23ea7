#!/usr/bin/env bash
# Training speed on this machine's CPU, medtune beside PyTorch + peft in one run: SmolLM2-135M
# shape with random weights, LoRA r=16 on all linear layers, BATCHxSEQ tokens per step.
# Needs a Python with torch, transformers and peft (PYTHON=...).
#   host/benches/train_speed.sh [BATCH] [SEQ] [STEPS]
# On a GPU: build `cargo bench -p medtune --features cuda --bench train_speed --no-run`, run
# the binary there with SHAPE BATCHxSEQ... (e.g. `smollm2 8x512 32x512 20 3`), beside
# host/benches/baselines/hf_qlora_baseline.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
B=${1:-4}; S=${2:-128}; N=${3:-5}
cargo bench -q -p medtune --bench train_speed --no-run
cargo bench -q -p medtune --bench train_speed -- smollm2 "${B}x${S}" "$N" 1 | grep '"engine"'
"$PYTHON" host/benches/hf_train_speed_cpu.py "$B" "$S" "$N" 1 "$(nproc)" 2>/dev/null | grep '"engine"'
