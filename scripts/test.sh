#!/usr/bin/env bash
# The project's test command (the README's, and what .ci/run runs): installs the Python side of
# the Gymnasium bridge into .venv/ (pinned packages from PyPI, scripts/python-env.sh), checks
# that the default build (no Python) still builds, then runs every test with the bridge.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
scripts/python-env.sh
cargo build --release
cargo test --release --features gym
