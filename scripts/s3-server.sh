#!/usr/bin/env bash
# Installs the S3-compatible server the object-storage tests start (tests/object_store.rs):
# s3s-fs, an S3 server over a local folder, pinned, from crates.io, built with cargo into
# .tools/ (about a minute and a half on 2 cores, once). Prints the binary's path.
#   scripts/s3-server.sh                  # install if missing
#   .tools/bin/s3s-fs --host 127.0.0.1 --port 9000 --access-key K --secret-key S DIR
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.14.1
BIN="$PWD/.tools/bin/s3s-fs"
STAMP="$PWD/.tools/s3s-fs.version"
if [ ! -x "$BIN" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$VERSION" ]; then
    echo "s3-server: building s3s-fs $VERSION from crates.io into .tools/" >&2
    cargo install --quiet --locked --features binary --root "$PWD/.tools" "s3s-fs@$VERSION"
    echo "$VERSION" >"$STAMP"
fi
echo "$BIN"
