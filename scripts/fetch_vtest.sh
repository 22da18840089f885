#!/usr/bin/env bash
# Fetch vtest.avi (public surveillance clip, 768x576, 10 fps, 795 frames) from Debian's
# opencv-doc package: apt-get download, then dpkg -x. Result: data/vtest.avi.
# Idempotent; warns (does not fail) when the package registry cannot be reached, and the
# tests that need the clip then skip.
set -uo pipefail
cd "$(dirname "$0")/.."
dest=data/vtest.avi
[ -s "$dest" ] && exit 0
mkdir -p data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(
  cd "$tmp" &&
  { apt-get download opencv-doc >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get download opencv-doc >/dev/null 2>&1; }; } &&
  dpkg -x opencv-doc_*.deb x
) || { echo "warning: could not fetch opencv-doc; vtest.avi tests will skip" >&2; exit 0; }
cp "$tmp/x/usr/share/doc/opencv-doc/examples/data/vtest.avi" "$dest.part" && mv "$dest.part" "$dest"
echo "fetched $dest"
