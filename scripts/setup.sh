#!/usr/bin/env bash
# Installs every Debian package eesched needs to build, test and run that is not installed yet.
# (npm, needed only to fetch the training corpus, is installed by tools/fetch-corpus.sh.)
# Idempotent: checks dpkg first and runs apt-get update only when something is missing.
set -euo pipefail

PACKAGES=(
  cmake ninja-build ccache g++ make pkg-config
  libtorch-dev libopenblas0-pthread libxgboost-dev
  libsqlite3-dev sqlite3 libasio-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev libsentencepiece-dev sentencepiece libsodium-dev
)

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

# libtorch links libblas.so.3: make sure that resolves to OpenBLAS, not the ~10x slower reference BLAS.
OPENBLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
ALT=libblas.so.3-x86_64-linux-gnu
if [ -e "$OPENBLAS" ]; then
  current=$(update-alternatives --query "$ALT" 2>/dev/null | awk '/^Value:/{print $2}')
  if [ "$current" != "$OPENBLAS" ]; then
    echo "setup: pointing $ALT at OpenBLAS"
    $SUDO update-alternatives --set "$ALT" "$OPENBLAS"
  fi
  LAPACK_OPENBLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread/liblapack.so.3
  LALT=liblapack.so.3-x86_64-linux-gnu
  current=$(update-alternatives --query "$LALT" 2>/dev/null | awk '/^Value:/{print $2}')
  if [ -e "$LAPACK_OPENBLAS" ] && [ "$current" != "$LAPACK_OPENBLAS" ]; then
    $SUDO update-alternatives --set "$LALT" "$LAPACK_OPENBLAS"
  fi
fi
