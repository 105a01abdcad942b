#!/usr/bin/env bash
# Regenerates the tokenizer goldens (tests/data/tokenizers/<name>.json) with the reference
# implementation, @lenml/tokenizers (a port of Hugging Face's tokenizers, pinned below by version
# and sha256), run over the strings of inputs.js (plus corpus lines when ./corpus exists) for each
# real tokenizer that tools/fetch-tokenizers.sh fetches. Never edit the goldens by hand.
#   bash tests/data/tokenizers/generate.sh
# EESCHED_NPM_CACHE (default ./.cache/npm-ref) holds the installed reference package.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
VERSION=3.7.2
SHA256=4ae50ce780e567fb58fe8e6033ef55e1a320da61f4bb404784f9a94bcbdfc438
CACHE=${EESCHED_NPM_CACHE:-$ROOT/.cache/npm-ref}
TOKENIZERS=${EESCHED_TOKENIZERS_DIR:-$ROOT/tokenizers}
source "$ROOT/tools/npm-fetch.sh"

bash "$ROOT/tools/fetch-tokenizers.sh"
[ -s "$ROOT/corpus/moby-dick.txt" ] || bash "$ROOT/tools/fetch-corpus.sh" || echo "generate: no corpus; corpus lines left out"

mkdir -p "$CACHE"
tarball="$CACHE/lenml-tokenizers-$VERSION.tgz"
npm_fetch generate "@lenml/tokenizers@$VERSION" "$SHA256" "$tarball"
rm -rf "$CACHE/node_modules/@lenml/tokenizers" && mkdir -p "$CACHE/node_modules/@lenml/tokenizers"
tar -xzf "$tarball" -C "$CACHE/node_modules/@lenml/tokenizers" --strip-components=1

for name in llama3 llama3_1 qwen3 qwen2_5 llama2 mistral_nemo; do
  NODE_PATH="$CACHE/node_modules" node "$HERE/generate.js" "$TOKENIZERS/$name" "$ROOT/corpus" > "$HERE/$name.json.part"
  mv "$HERE/$name.json.part" "$HERE/$name.json"
  echo "generate: $HERE/$name.json"
done
