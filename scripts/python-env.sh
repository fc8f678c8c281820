#!/usr/bin/env bash
# Creates (or updates) the project-local Python environment `.venv/` that binaries built with
# `--features gym` use: Gymnasium, MuJoCo and ale-py (with its ROMs), pinned in
# python/requirements.txt, from PyPI. Idempotent: a venv that already has the pinned packages
# is left as it is.
#
#   scripts/python-env.sh
#
# The interpreter is `python3` on PATH (or $PYTHON): the same one the `gym` feature is built
# against, since the bridge embeds it.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
venv=.venv
req=python/requirements.txt
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
    exit 0
fi
command -v "$python" >/dev/null || { echo "python3 not found: install Python 3.9 or newer" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
echo "installed $(tr '\n' ' ' < <(grep -v '^#' "$req")) into $venv"
