#!/usr/bin/env bash
# The project's test command (the README's, and what .ci/run runs): installs the Python side of
# the Gymnasium bridge into .venv/ (pinned packages from PyPI, scripts/python-env.sh), checks
# that the default build (no Python) still compiles, then runs every test with the bridge and
# object storage (features gym, s3), with a local Slurm cluster and S3 server for their tests.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
scripts/python-env.sh
# A one-node Slurm cluster for tests/slurm.rs (Debian's slurm-wlm and munge); stopped on exit.
# Outside CI a machine that cannot install it skips that test; in CI it is required.
if scripts/slurm-local.sh start; then
    trap 'scripts/slurm-local.sh stop' EXIT
    eval "$(scripts/slurm-local.sh env)"
elif [ -n "${CI:-}" ]; then
    exit 1
else
    echo "test.sh: no local Slurm cluster; tests/slurm.rs will skip its Slurm test" >&2
fi
# The S3-compatible server tests/object_store.rs starts (s3s-fs from crates.io, into .tools/).
S3S_FS="$(scripts/s3-server.sh)"
export S3S_FS
# `check`, not `build`: the test build below compiles every dependency again anyway (gym and s3
# change the features of shared crates), and a full default build here cost 7 of CI's minutes.
cargo check --release
cargo test --release --features gym,s3
