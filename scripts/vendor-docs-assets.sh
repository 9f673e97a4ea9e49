#!/usr/bin/env bash
# The interactive API documentation's assets, vendored into static/vendor/ (committed), so that
# /docs (Swagger UI) and /redoc (ReDoc) work offline: nothing is fetched from a CDN, ever.
# They come from the projects' own npm packages, pinned by version and checksum. Run this only
# to change the versions (then update the pins and README's "API documentation").
# Each package goes into a directory named with its version, and the pages are pointed at it:
# the service lets browsers cache those files for a year without asking again
# (src/records/assets.rs), so a new version must be a new URL.
#   scripts/vendor-docs-assets.sh
# Needs: npm (only to download the tarballs), sha256sum, tar.
set -euo pipefail
cd "$(dirname "$0")/.."

SWAGGER_VERSION=5.35.0
SWAGGER_SHA256=1b8e891893404ea4c3558b6a87e2a3e494e7eedba41168c2ece5800a391a6ea6
REDOC_VERSION=2.5.4
REDOC_SHA256=44922df4d0eb45c1b066c09ec251e6bd9bd7ded16bc69e87613337b9d911a56e

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch() { # package version sha256
  (cd "$tmp" && npm pack --silent "$1@$2" >/dev/null)
  local tgz="$tmp/$1-$2.tgz"
  echo "$3  $tgz" | sha256sum -c --quiet - || { echo "vendor-docs-assets: $1 $2: checksum mismatch" >&2; exit 1; }
  mkdir -p "$tmp/$1" && tar xzf "$tgz" -C "$tmp/$1"
}
fetch swagger-ui-dist "$SWAGGER_VERSION" "$SWAGGER_SHA256"
fetch redoc "$REDOC_VERSION" "$REDOC_SHA256"

out=static/vendor
swagger=swagger-ui-$SWAGGER_VERSION
redoc=redoc-$REDOC_VERSION
rm -rf "$out"
mkdir -p "$out/$swagger" "$out/$redoc"
for f in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE; do
  cp "$tmp/swagger-ui-dist/package/$f" "$out/$swagger/"
done
cp "$tmp/redoc/package/bundles/redoc.standalone.js" "$tmp/redoc/package/LICENSE" "$out/$redoc/"
sed -i -E "s#static/vendor/swagger-ui-[0-9.]+/#static/vendor/$swagger/#g" static/docs.html
sed -i -E "s#static/vendor/redoc-[0-9.]+/#static/vendor/$redoc/#g" static/redoc.html
cat >"$out/README.md" <<TXT
# Vendored documentation assets

Served at /docs and /redoc; written by scripts/vendor-docs-assets.sh (do not edit by hand).

| package | version | from | license |
|---|---|---|---|
| swagger-ui-dist | $SWAGGER_VERSION | npm | Apache-2.0 ($swagger/LICENSE, NOTICE) |
| redoc | $REDOC_VERSION | npm | MIT ($redoc/LICENSE) |
TXT
du -sh "$out"/*
