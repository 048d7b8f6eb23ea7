#!/usr/bin/env bash
# llama.cpp's `llama-server` (CUDA) beside `medtune serve`: the same GGUF, the same load
# generator (serve_load.py), on a GPU machine with no network.
#
# Source: the llama.cpp that PyPI's llama-cpp-python 0.3.36 vendors (sdist
# llama_cpp_python-0.3.36.tar.gz, sha256
# 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e, its vendor/llama.cpp;
# llama.cpp 0.5.0-dev, ggml 0.25.3), trimmed to what a CUDA build of llama-server needs
# (no models/, docs/, media/, tests/, examples/, app/, other ggml backends, web UI sources)
# and packed as .lcpp/llama.cpp-src.tar.xz (ignored by git: .git/info/exclude). llama.cpp
# and ggml are MIT-licensed (LICENSE in the archive; the libraries it vendors keep their own
# notices: licenses/, vendor/cpp-httplib/LICENSE, and the headers under vendor/).
#
#   host/benches/llama_server.sh build DIR
#       unpack into DIR/llama.cpp and build DIR/llama.cpp/build/bin/llama-server (GGML_CUDA,
#       sm_90, static llama/ggml libraries, no curl/OpenSSL/web UI), printing the time taken.
#       Needs cmake, a C++17 compiler and nvcc with the CUDA headers and libraries (cudart,
#       cuBLAS): nvcc is looked for in $NVCC, on PATH, in /usr/local/cuda*/bin, and in
#       python3's nvidia-* wheels.
#   host/benches/llama_server.sh serve DIR MODEL.gguf SLOTS [PORT] [llama-server args...]
#       run llama-server on MODEL.gguf with SLOTS slots (-np) of 1024 tokens each (a 256-token
#       prompt + 64 generated fit), every layer on the GPU, continuous batching (its default),
#       no prompt reuse between requests (--no-cache-prompt --cache-ram 0: medtune has none).
#   host/benches/llama_server.sh bench DIR MODEL.gguf SLOTS [REQUESTS [MAX_TOKENS]]
#       serve, wait until healthy, run serve_load.py serve URL REQUESTS MAX_TOKENS --ignore-eos
#       against it (defaults 4 and 64, as serve_load.sh), stop the server.
#
# Random-weight GGUFs of a LLaMA shape: host/benches/random_gguf.py (its gguf package is the
# archive's gguf-py: --gguf-py DIR/llama.cpp).
set -euo pipefail
ORIG=$PWD
cd "$(dirname "$0")/../.."
ROOT=$PWD
SELF=$ROOT/host/benches/llama_server.sh
abs() { case $1 in /*) echo "$1" ;; *) echo "$ORIG/$1" ;; esac; }
TARBALL=$ROOT/.lcpp/llama.cpp-src.tar.xz
PYTHON=${PYTHON:-python3}

die() { echo "llama_server.sh: $*" >&2; exit 1; }
exists() { local f; for f in "$@"; do [ -e "$f" ] && return 0; done; return 1; }  # any of (globbed) paths

# nvcc: $NVCC, PATH, /usr/local/cuda*/bin, python3's nvidia wheels (cu13/bin, cuda_nvcc/bin)
find_nvcc() {
    local c
    for c in "${NVCC:-}" "$(command -v nvcc 2>/dev/null || true)" /usr/local/cuda/bin/nvcc \
             $(ls -d /usr/local/cuda-*/bin/nvcc 2>/dev/null | sort -V -r); do
        [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return; }
    done
    local d
    for d in $("$PYTHON" -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null); do
        for c in "$d"/cu*/bin/nvcc "$d"/cuda_nvcc/bin/nvcc; do
            [ -x "$c" ] && { echo "$c"; return; }
        done
    done
}

# Where CMake's FindCUDAToolkit should look. A toolkit install (bin/ include/ lib64/) is used
# as it is; nvcc from pip wheels gets a folder of links DIR/cuda-root that gathers the wheels'
# headers and libraries (with the unversioned .so names the linker wants).
toolkit_root() {
    local nvcc=$1 dir=$2 root
    root=$(cd "$(dirname "$(readlink -f "$nvcc")")/.." && pwd)
    if [ -f "$root/include/cuda_runtime.h" ] && exists "$root"/lib*/libcublas.so "$root"/targets/*/lib/libcublas.so; then
        echo "$root"; return
    fi
    local shim=$dir/cuda-root nv
    nv=$(dirname "$root")
    rm -rf "$shim"; mkdir -p "$shim/include" "$shim/lib64"
    ln -s "$root/bin" "$shim/bin"
    [ -d "$root/nvvm" ] && ln -s "$root/nvvm" "$shim/nvvm"
    local inc lib f base
    for inc in "$nv"/*/include; do
        for f in "$inc"/*; do [ -e "$shim/include/${f##*/}" ] || ln -s "$f" "$shim/include/"; done
    done
    for lib in "$nv"/*/lib "$nv"/*/lib64; do
        [ -d "$lib" ] || continue
        for f in "$lib"/lib*.so* "$lib"/lib*.a; do
            [ -e "$f" ] || continue
            [ -e "$shim/lib64/${f##*/}" ] || ln -s "$f" "$shim/lib64/"
            base=${f##*/}; base=${base%%.so*}.so
            case $f in *.so.*) [ -e "$shim/lib64/$base" ] || ln -s "$f" "$shim/lib64/$base";; esac
        done
    done
    # the driver library (libcuda) is the machine's, not a wheel's
    f=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 .*x86-64/ {print $NF; exit}')
    [ -n "$f" ] && [ ! -e "$shim/lib64/libcuda.so" ] && ln -s "$f" "$shim/lib64/libcuda.so"
    echo "$shim"
}

check_toolkit() {
    local root=$1 missing=() h l
    for h in cuda_runtime.h cublas_v2.h cub/cub.cuh; do
        # CUDA 13 keeps CUB/Thrust under include/cccl (nvcc adds it to the include path)
        exists "$root"/include/"$h" "$root"/include/cccl/"$h" "$root"/targets/*/include/"$h" \
           "$root"/targets/*/include/cccl/"$h" || missing+=("header $h")
    done
    for l in cudart cublas cublasLt; do
        exists "$root"/lib*/lib$l.so "$root"/targets/*/lib/lib$l.so || missing+=("library lib$l.so")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "llama_server.sh: the CUDA toolkit at $root lacks: ${missing[*]}" >&2
        echo "  (wheels: nvidia-cuda-runtime, nvidia-cublas, nvidia-cuda-cccl, nvidia-cuda-nvcc of one CUDA version;" >&2
        echo "   or point NVCC at a full toolkit's bin/nvcc)" >&2
        exit 1
    fi
}

build() {
    local dir; dir=$(abs "${1:?usage: llama_server.sh build DIR}")
    [ -f "$TARBALL" ] || die "$TARBALL is missing (made once, on the development machine; see this script's header)"
    command -v cmake >/dev/null || die "cmake is not on PATH (pip's cmake wheel also works: python3 -m pip install cmake)"
    command -v c++ >/dev/null || command -v g++ >/dev/null || die "no C++ compiler (c++/g++) on PATH"
    local nvcc; nvcc=$(find_nvcc)
    [ -n "$nvcc" ] || die "nvcc not found: looked at \$NVCC, PATH, /usr/local/cuda*/bin/nvcc and $PYTHON's nvidia wheels (nvidia/cu*/bin, nvidia/cuda_nvcc/bin). Install the CUDA toolkit or set NVCC=/path/to/nvcc"
    mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
    local t0=$SECONDS
    rm -rf "$dir/llama.cpp"
    # (Python's tarfile where tar has no xz)
    tar -xJf "$TARBALL" -C "$dir" 2>/dev/null \
        || "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$TARBALL" "$dir"
    local root; root=$(toolkit_root "$nvcc" "$dir")
    check_toolkit "$root"
    echo "nvcc: $nvcc ($("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')), toolkit: $root, cmake $(cmake --version | sed -n '1s/cmake version //p')"
    export PATH="$(dirname "$nvcc"):$PATH"
    local gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
    local src=$dir/llama.cpp
    cmake -S "$src" -B "$src/build" "${gen[@]}" \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_CUDA_COMPILER="$nvcc" -DCUDAToolkit_ROOT="$root" \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_NCCL=OFF \
        -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_CCACHE=OFF \
        > "$dir/cmake-configure.log" 2>&1 || { tail -40 "$dir/cmake-configure.log"; die "cmake configure failed (log: $dir/cmake-configure.log)"; }
    local t1=$SECONDS
    cmake --build "$src/build" --target llama-server -j"$(nproc)" > "$dir/cmake-build.log" 2>&1 \
        || { grep -m20 -B2 -A8 -i "error" "$dir/cmake-build.log" | tail -60; die "build failed (log: $dir/cmake-build.log)"; }
    local bin=$src/build/bin/llama-server
    [ -x "$bin" ] || die "no $bin after the build"
    echo "built $bin ($(du -m "$bin" | cut -f1) MiB): unpack+configure $((t1 - t0)) s, build $((SECONDS - t1)) s, total $((SECONDS - t0)) s on $(nproc) cores"
}

serve() {
    local dir model np=${3:?usage: llama_server.sh serve DIR MODEL.gguf SLOTS [PORT] [args...]}
    dir=$(abs "$1"); model=$(abs "$2")
    local port=${4:-8081}; shift 3; if [ $# -gt 0 ]; then shift; fi
    local bin=$dir/llama.cpp/build/bin/llama-server
    [ -x "$bin" ] || die "$bin is missing: run llama_server.sh build $dir first"
    exec "$bin" -m "$model" --host 127.0.0.1 --port "$port" -ngl 99 -np "$np" -c $((np * 1024)) \
        --cont-batching --no-cache-prompt --cache-ram 0 "$@"
}

bench() {
    local dir model np=${3:?usage: llama_server.sh bench DIR MODEL.gguf SLOTS [REQUESTS [MAX_TOKENS]]}
    dir=$(abs "$1"); model=$(abs "$2")
    local requests=${4:-4} max_tokens=${5:-64} port=${PORT:-8081} log=${LOG:-/tmp/llama-server.log}
    "$SELF" serve "$dir" "$model" "$np" "$port" > "$log" 2>&1 &
    local pid=$!
    trap "kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true" EXIT
    local url=http://127.0.0.1:$port
    healthy() { "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=2)' "$url" 2>/dev/null; }
    for _ in $(seq 600); do
        healthy && break
        kill -0 $pid 2>/dev/null || { tail -30 "$log"; die "llama-server exited (log: $log)"; }
        sleep 0.5
    done
    healthy || { tail -30 "$log"; die "llama-server not healthy after 300 s (log: $log)"; }
    echo "llama-server -np $np on $model"
    "$PYTHON" host/benches/serve_load.py serve "$url" "$requests" "$max_tokens" --ignore-eos
}

case ${1:-} in
    build) shift; build "$@" ;;
    serve) shift; serve "$@" ;;
    bench) shift; bench "$@" ;;
    *) sed -n '2,30p' "$SELF" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
