#!/usr/bin/env bash
# Builds python-normalizer.wasm, a component of the `normalizer` world of medtune:plugin@0.2.0.
# Needs python3 (3.10+) with venv; the only download is componentize-py from PyPI, once:
# later builds run offline.
#   ./build.sh                   # venv in .venv next to this file
#   VENV=/path/to/venv ./build.sh
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="$(mkdir -p "${VENV:-$HERE/.venv}" && cd "${VENV:-$HERE/.venv}" && pwd)"
cd "$HERE"

COMPONENTIZE_PY_VERSION=0.25.1
WIT="${WIT:-../../wit}"   # the contract; tests point it at the repo's wit/ from a copy of this folder
WORLD=normalizer
OUT="${OUT:-python-normalizer.wasm}"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# Install only when the pinned version is missing, so later builds need no network.
if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("componentize-py"))' 2>/dev/null)" != "$COMPONENTIZE_PY_VERSION" ]; then
    "$VENV/bin/pip" install --disable-pip-version-check --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# VIRTUAL_ENV as `activate` would set it: without it componentize-py falls back to the
# site-packages of whatever `python3` is on PATH and bakes its listing into the component.
VIRTUAL_ENV="$VENV" "$VENV/bin/componentize-py" -d "$WIT" -w "$WORLD" componentize app -o "$OUT"
ls -l "$OUT"
