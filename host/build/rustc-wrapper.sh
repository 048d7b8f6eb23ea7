#!/bin/sh
# The rustc wrapper of this repository (.cargo/config.toml, `build.rustc-wrapper`): runs the
# compiler unchanged. On cargo's first calls (`rustc -vV`, before anything compiles) it makes
# sure the wasm32-wasip2 standard library the plugins build for is installed, and adds it
# with rustup when it is missing, saying so in one line; without rustup it stops the build at
# once with one line naming what to run. The build scripts check again
# (host/build/wasm_target.rs) for builds that bypass this wrapper (a RUSTC_WRAPPER of one's own).
target=wasm32-wasip2
last=""
prev=""
for arg in "$@"; do
  prev=$last
  last=$arg
done
if [ "$last" = "-vV" ] && [ -n "$prev" ]; then
  rustc=$prev
  say() { # one line where a person sees it: the terminal, else stderr
    { printf '%s\n' "$1" >/dev/tty; } 2>/dev/null || printf '%s\n' "$1" >&2
  }
  has_std() { ls "$1"/libcore-*.rlib >/dev/null 2>&1; }
  sysroot=$(cd "$(dirname "$rustc")/.." 2>/dev/null && pwd)
  if ! has_std "$sysroot/lib/rustlib/$target/lib"; then
    libdir=$("$rustc" --print target-libdir --target "$target" 2>/dev/null)
    if [ -n "$libdir" ]; then
      sysroot=$(cd "$libdir/../../../.." 2>/dev/null && pwd)
    fi
    if ! has_std "$libdir"; then
      toolchain=${RUSTUP_TOOLCHAIN:-}
      if [ -z "$toolchain" ] && [ "$(basename "$(dirname "$sysroot")")" = toolchains ]; then
        toolchain=$(basename "$sysroot")
      fi
      if [ -z "$toolchain" ]; then
        echo "error: the plugins build for $target, whose standard library is not installed for the Rust in $sysroot (not a rustup toolchain): install it, with rustup \`rustup target add $target\`" >&2
        exit 1
      fi
      if ! command -v rustup >/dev/null 2>&1; then
        echo "error: the plugins build for $target, which toolchain $toolchain lacks, and rustup is not on PATH to add it: install the target (\`rustup target add $target\`, or your distribution's rust-std for $target)" >&2
        exit 1
      fi
      if ! out=$(rustup target add "$target" --toolchain "$toolchain" 2>&1) || ! has_std "${libdir:-$sysroot/lib/rustlib/$target/lib}"; then
        why=$(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1)
        echo "error: the plugins build for $target, which toolchain $toolchain lacks, and \`rustup target add $target --toolchain $toolchain\` failed ($why): run it again with network access" >&2
        exit 1
      fi
      say "note: the $target target the plugins build for was missing from toolchain $toolchain: added it with rustup"
    fi
  fi
fi
exec "$@"
