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

# The Python tools live in a virtual environment of their own, outside the clone so that a machine
# keeps it between runs: a system Python may refuse pip (Debian's externally-managed environment),
# and the system's packages stay as they were. Its bin comes first on PATH for everything below,
# the Rust tests that start moto included.
venv=${XDG_CACHE_HOME:-$HOME/.cache}/image-mirror-webhook/venv
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
[ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
export PATH="$venv/bin:$PATH"
# Helm's own library (Go, in a wheel) lints and renders the chart: tests/chart/lint.py, render.py.
python3 -c 'import helm_python, yaml' 2>/dev/null ||
  python3 -m pip install -q 'helm-python-sdk>=0.2.2,<0.3' pyyaml </dev/null
# A real AWS API double for the ECR tests (tests/ecr.rs): moto's server, started by the tests.
python3 -c 'import moto.server, flask' 2>/dev/null ||
  python3 -m pip install -q 'moto[server]>=5.1,<6' </dev/null
# openssl runs certs/make-dev-certs.sh in tests/server.rs; curl runs serve's startup hint as
# printed (tests/firstday.rs).
need openssl || apt_install openssl
need curl || apt_install curl
# Real registries for tests/registry.rs: docker-registry, skopeo to push, htpasswd for its users.
need docker-registry || apt_install docker-registry
need skopeo || apt_install skopeo
need htpasswd || apt_install apache2-utils
# promtool checks the chart's alert rules and the metrics a real scrape shows (tests/chart/operations.py).
# Debian ships it only inside the prometheus package, whose installation would also enable and start
# a Prometheus server: the binary is unpacked from the package instead (a static Go binary), and
# nothing is installed.
tools=${XDG_CACHE_HOME:-$HOME/.cache}/image-mirror-webhook/bin
export PATH="$PATH:$tools"
if ! need promtool; then
  [ -n "${apt_updated:-}" ] || { DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null; apt_updated=1; }
  unpack=$(mktemp -d)
  (cd "$unpack" && apt-get download -qq prometheus </dev/null && dpkg-deb -x prometheus_*.deb root &&
    install -D -m 0755 root/usr/bin/promtool "$tools/promtool")
  rm -rf "$unpack"
fi
# Go builds the real control plane the end-to-end tests run against (tests/cluster/).
need go || { echo "Go 1.26 or later is needed to build the control plane (tests/cluster/go.mod)" >&2; exit 1; }

python3 -m tests.chart.lint
# The Dockerfile's dependency layer, replayed without Docker (there is no engine here): its stub
# files must let Cargo read the manifest, or the image does not build.
docker_layer=$(mktemp -d)
cp Cargo.toml Cargo.lock "$docker_layer"
(cd "$docker_layer" && bash -euc "$(sed -n '/^RUN mkdir/,/rm -rf src benches$/p' "$OLDPWD/Dockerfile" |
  sed 's/^RUN //; s/cargo build --release --locked --bin image-mirror-webhook/cargo fetch --locked/; s/&& rm -rf src benches$//')")
rm -rf "$docker_layer"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The rendered chart, checked against the binary it deploys. Built with the tests, so the
# dependencies are compiled once with the features the tests unify (not once more for them).
cargo build --locked --quiet --bins --tests
python3 -m tests.chart.render "${CARGO_TARGET_DIR:-target}/debug/image-mirror-webhook"
python3 -m tests.chart.operations "${CARGO_TARGET_DIR:-target}/debug/image-mirror-webhook"
# Library, binary and integration tests (there are no doc tests).
cargo test --locked --lib --bins --tests
# End to end against a real control plane: kube-apiserver, kube-controller-manager and etcd built
# from their Go modules at the release tests/cluster/go.mod pins (once per machine; Go's caches
# make later builds a relink), started on loopback, stopped afterwards.
python3 -m tests.cluster.e2e "${CARGO_TARGET_DIR:-target}/debug/image-mirror-webhook"
