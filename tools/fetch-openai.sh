#!/usr/bin/env bash
# Fetches the official OpenAI client for Node (npm `openai`, pinned, sha256-verified, no
# dependencies) into the cache directory (default: ./.cache/npm, git-ignored):
#   <cache>/node_modules/openai
# The gateway's tests and the demo drive `eesched serve` with it (tests/openai/client.mjs).
# EESCHED_NPM_CACHE overrides the directory. Prints nothing but progress; exits non-zero on failure.
set -euo pipefail
source "$(dirname "$0")/npm-fetch.sh"

VERSION=6.30.1
SHA256=175f3e017a9bc14d36dc0f57d2596ee1c7134d7fa181b7d83b2716f69076b03e
DEST=${EESCHED_NPM_CACHE:-$(cd "$(dirname "$0")/.." && pwd)/.cache/npm}
PKG=$DEST/node_modules/openai

if [ -s "$PKG/package.json" ] && grep -q "\"version\": \"$VERSION\"" "$PKG/package.json"; then
  echo "openai: $VERSION cached in $PKG"
  exit 0
fi
npm_require "OpenAI client"
tarball="$DEST/openai-$VERSION.tgz"
npm_fetch "OpenAI client" "openai@$VERSION" "$SHA256" "$tarball"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -xzf "$tarball" -C "$tmp"
mkdir -p "$DEST/node_modules"
rm -rf "$PKG" && mv "$tmp/package" "$PKG"
rm -f "$tarball"
echo "openai: $VERSION in $PKG"
