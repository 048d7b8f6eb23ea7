#!/usr/bin/env bash
# Hot-swap demo: a running medtune picks up a new version of a plugin dropped into its
# plugin folder, between batches, and refuses a broken file while the old version runs on.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p medtune
medtune=target/release/medtune
# Its own target folder: a shared one would mix up the two versions of the same crate.
export CARGO_TARGET_DIR="$PWD/target/hot-swap-demo"
folder=examples/hot-swap/plugins
work=$(mktemp -d)
trap 'rm -rf "$work"; rm -f "$folder"/*.wasm' EXIT

# Deploy the way operators should: write next to the folder, then rename into it.
deploy() { cp "$1" "$folder/.incoming"; mv "$folder/.incoming" "$folder/$2"; }

# A copy of the walkthrough's plugin that we can bump.
cp -r examples/custom-plugin "$work/plugin"
sed -i "s|path = \"../../plugins/sdk\"|path = \"$PWD/plugins/sdk\"|" "$work/plugin/Cargo.toml"

echo "== version 0.1.0 goes into $folder"
deploy "$($medtune plugin build "$work/plugin" | tail -n 1)" drug-class-normalizer.wasm

echo "== the host starts and watches $folder"
$medtune plugin watch --config examples/hot-swap/config.toml --input examples/custom-plugin/sample.jsonl --max-events 2 &
host=$!
sleep 2

echo "== version 0.2.0 is built and dropped in while the host runs"
sed -i 's/^version = "0.1.0"/version = "0.2.0"/' "$work/plugin/Cargo.toml"
deploy "$($medtune plugin build "$work/plugin" | tail -n 1)" drug-class-normalizer.wasm
sleep 2

echo "== a broken file is dropped in: refused, 0.2.0 keeps serving"
printf '\0asm garbage' > "$work/broken.wasm"
deploy "$work/broken.wasm" broken.wasm
wait "$host"
