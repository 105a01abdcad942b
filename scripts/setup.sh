#!/usr/bin/env bash
# Installs every Debian package eesched needs to build, test and run that is not installed yet.
# (npm, needed only to fetch the training corpus and the real tokenizers, is installed by
# tools/fetch-corpus.sh and tools/fetch-tokenizers.sh.) libpcre2-dev and libicu-dev: runtime/tokenizer_json.
# libcpp-httplib-dev: the gateway's HTTP server. nodejs: the official `openai` client drives the
# gateway in its tests and the demo (tools/fetch-openai.sh fetches it); curl: the demo's /metrics.
# Idempotent: checks dpkg first and runs apt-get update only when something is missing.
#
# `setup.sh fuzz` (run by `make fuzz`) installs instead what the fuzz targets need (tests/fuzz/):
# clang and its sanitizer and libFuzzer runtimes, and the headers of the torch-free libraries,
# so `make test` and `make demo` never need clang and `make fuzz` never needs LibTorch.
set -euo pipefail

PACKAGES=(
  cmake ninja-build ccache g++ make pkg-config
  libtorch-dev libopenblas0-pthread libopenblas0-openmp libxgboost-dev
  libsqlite3-dev sqlite3 libasio-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libsentencepiece-dev sentencepiece libsodium-dev libpcre2-dev libicu-dev
  libcpp-httplib-dev nodejs curl
)
# clang-14 alone does not bring the runtimes: libclang-rt-14-dev (only recommended by clang's
# dependencies) holds libclang_rt.fuzzer/asan/ubsan, which -fsanitize=fuzzer,address,undefined
# links. llvm-14 brings llvm-symbolizer, for readable stacks in crash reports. (libfuzzer-14-dev,
# a separately linkable libFuzzer.a, is not needed.)
FUZZ_PACKAGES=(
  cmake ninja-build ccache make pkg-config
  clang-14 libclang-rt-14-dev llvm-14
  libsqlite3-dev libasio-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libsodium-dev
)

case "${1:-}" in
  "") ;;
  fuzz) PACKAGES=("${FUZZ_PACKAGES[@]}") ;;
  *) echo "usage: setup.sh [fuzz]" >&2; exit 2 ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: not root and no sudo; install: ${PACKAGES[*]}" >&2; exit 1; }
  SUDO="sudo"
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

[ "${1:-}" = fuzz ] && exit 0

# LibTorch links libblas.so.3, liblapack.so.3 and libopenblas.so.0. They must resolve to OpenBLAS
# (the reference BLAS is ~10x slower), and to its OpenMP build: LibTorch parallelizes with
# OpenMP, and the pthread build of OpenBLAS would start a second pool of threads that fights
# OpenMP's spinning workers for the cores (5x slower here on 2 cores).
OPENBLAS_DIR=/usr/lib/x86_64-linux-gnu/openblas-openmp
for pair in libblas.so.3:libblas.so.3 liblapack.so.3:liblapack.so.3 libopenblas.so.0:libopenblas.so.0; do
  alt="${pair%%:*}-x86_64-linux-gnu"
  want="$OPENBLAS_DIR/${pair##*:}"
  [ -e "$want" ] || continue
  current=$(update-alternatives --query "$alt" 2>/dev/null | awk '/^Value:/{print $2}')
  if [ "$current" != "$want" ]; then
    echo "setup: pointing $alt at OpenBLAS (OpenMP)"
    $SUDO update-alternatives --set "$alt" "$want"
  fi
done
