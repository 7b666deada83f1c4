#!/bin/sh
# Rebuild conductor/data/vendor/chart.umd.min.js (the dashboard's chart library, served by
# the app itself so the page works offline) from npm's published package. MIT licence,
# copied beside it. Needs npm; run from the repository root.
set -eu
VERSION=4.5.1
SHA256=48444a82d4edcb5bec0f1965faacdde18d9c17db3063d042abada2f705c9f54a
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "chart.js@$VERSION" >/dev/null 2>&1 && tar xzf "chart.js-$VERSION.tgz")
echo "$SHA256  $tmp/package/dist/chart.umd.min.js" | sha256sum -c -
cp "$tmp/package/dist/chart.umd.min.js" conductor/data/vendor/chart.umd.min.js
cp "$tmp/package/LICENSE.md" conductor/data/vendor/chart.js-LICENSE.md
