#!/usr/bin/env bash
# Every test of the project, from a clean checkout: installs what the tests need, then checks
# formatting and lints, then runs the test suite. Safe to run with no standard input.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  if [ -z "${apt_updated:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null >/dev/null
}

# kubectl applies our patches exactly as the API server does (tests/properties.rs).
need kubectl || apt_install kubernetes-client

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
