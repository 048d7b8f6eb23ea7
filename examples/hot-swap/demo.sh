#!/usr/bin/env bash
# Hot-swap demo: a running medtune picks up a new version of a plugin dropped into its plugin
# folder between batches, rolls back when the old file comes back, and moves a broken file
# aside while the running version goes on. Everything happens in a temporary folder: nothing is
# written into this repository. The host is built only if no binary is found.
#   MEDTUNE=/path/to/medtune examples/hot-swap/demo.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
medtune="${MEDTUNE:-$(command -v medtune || echo "$repo/target/release/medtune")}"
if [ ! -x "$medtune" ]; then
  (cd "$repo" && cargo build --release -p medtune)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# plugin builds go outside the repository, shared between runs of the demo
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/medtune/hot-swap-demo}"
folder="$work/plugins"
mkdir -p "$folder"

# Deploy the way operators should: write next to the folder, then rename into it.
deploy() { cp "$1" "$work/.incoming"; mv "$work/.incoming" "$folder/$2"; }

# The host's config: the chain's one plugin comes from $folder, which is watched.
sed -e "s|^work_dir = .*|work_dir = \"$work/run\"|" \
    -e "s|^input = .*|input = \"$repo/examples/custom-plugin/sample.jsonl\"|" \
    -e "s|^dirs = .*|dirs = [\"$folder\"]|" \
    -e "s|\"/vocab\" = \"[^\"]*\"|\"/vocab\" = \"$repo/examples/custom-plugin/vocab\"|" \
    "$repo/examples/hot-swap/config.toml" > "$work/config.toml"

# A copy of the walkthrough's plugin that we can bump, on the SDK of this repository.
mkdir -p "$work/plugin"
cp -r "$repo/examples/custom-plugin/src" "$repo/examples/custom-plugin/Cargo.toml" "$work/plugin/"
sed -i "s|path = \"../../plugins/sdk\"|path = \"$repo/plugins/sdk\"|" "$work/plugin/Cargo.toml"
cp "$repo/plugins/Cargo.lock" "$work/plugin/"   # the versions the repository was tested with

echo "== version 0.1.0 goes into the plugin folder"
deploy "$("$medtune" plugin build "$work/plugin" | tail -n 1)" drug-class-normalizer.wasm
cp "$folder/drug-class-normalizer.wasm" "$work/v1.wasm"

echo "== the host starts and watches it"
"$medtune" plugin watch --config "$work/config.toml" --input "$repo/examples/custom-plugin/sample.jsonl" --max-events 3 &
host=$!
sleep 2

echo "== version 0.2.0 is built and dropped in while the host runs"
sed -i 's/^version = "0.1.0"/version = "0.2.0"/' "$work/plugin/Cargo.toml"
deploy "$("$medtune" plugin build "$work/plugin" | tail -n 1)" drug-class-normalizer.wasm
sleep 2

echo "== 0.1.0 comes back: a rollback"
deploy "$work/v1.wasm" drug-class-normalizer.wasm
sleep 2

echo "== a broken file is dropped in: moved aside, 0.1.0 keeps serving"
printf '\0asm garbage' > "$work/broken.wasm"
deploy "$work/broken.wasm" broken.wasm
wait "$host"
echo "== in the folder now: $(cd "$folder" && ls -A | tr '\n' ' ')"
echo "== why broken.wasm was refused: $(cat "$folder/.refused/broken.wasm.reason")"
