#!/usr/bin/env bash
# Load run: `serve` (release build) on loopback over TLS, with h2load sending a realistic Pod review
# on keep-alive connections. Writes a report of throughput, latency percentiles and peak RSS.
#   bash benches/load.sh [REPORT]        (default target/load-report.md)
set -euo pipefail
cd "$(dirname "$0")/.."
report=${1:-target/load-report.md}
duration=${LOAD_SECONDS:-20}

command -v h2load >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client </dev/null >/dev/null
}
cargo build --release --quiet --bins --benches

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/image-mirror-webhook serve --listen "127.0.0.1:$port" --dev-cert-dir "$work" \
  --policy-file tests/data/reviews/policy.yaml ${SERVE_ARGS:-} 2>"$work/server.log" &
pid=$!
for _ in $(seq 100); do
  curl -sf --cacert "$work/ca.crt" "https://localhost:$port/healthz" >/dev/null && break
  sleep 0.1
done

url="https://localhost:$port/mutate"
body=tests/data/reviews/create.json
h2() { h2load -t 1 -H 'content-type: application/json' -d "$body" --warm-up-time 2 -D "$duration" "$@" "$url"; }

# Warm the machine up first: this VM's scheduler answers wake-ups slowly after idle spells (see
# README, Performance), which a cold first run would measure instead of the server.
h2load -t 1 --h1 -c 8 -H 'content-type: application/json' -d "$body" -D 10 "$url" >/dev/null
# 1. Saturation over HTTP/2: 4 connections, 16 streams each.
h2 -c 4 -m 16 --log-file "$work/h2.tsv" >"$work/h2.out"
# 2. Saturation over HTTP/1.1 keep-alive: 8 connections.
h2 --h1 -c 8 --log-file "$work/h1.tsv" >"$work/h1.out"

# 3. A steady 1,000 reviews/s over 4 keep-alive HTTP/2 connections, evenly paced (benches/loadgen.rs).
cargo bench --quiet --bench loadgen -- --url "$url" --ca "$work/ca.crt" --body "$body" --rate 1000 \
  --connections 4 --seconds "$duration" --warm-up 5 --out "$work/steady.tsv" 2>"$work/steady.out"
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
mkdir -p "$(dirname "$report")"
python3 - "$work" "$duration" "$rss_kib" "$report" <<'PY'
import sys, statistics
work, duration, rss_kib, report = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def run(name):
    rows = [l.split("\t") for l in open(f"{work}/{name}.tsv") if l.strip()]
    ok = sorted(int(r[2]) for r in rows if r[1] == "200")
    failed = sum(1 for r in rows if r[1] != "200")
    pct = lambda p: ok[min(len(ok) - 1, int(p / 100 * len(ok)))] / 1000 if ok else float("nan")
    return len(ok) / duration, pct(50), pct(99), pct(99.9), failed, len(ok)

lines = ["# Load run", "",
         "`serve` (release, default flags) on loopback over TLS; the load generator runs on the same 2-core",
         "machine (the steady run: benches/loadgen.rs, evenly paced; saturation: h2load, one thread).",
         f"a {open('tests/data/reviews/create.json').read().__len__()}-byte Pod review (tests/data/reviews/create.json) that is mutated each time; {duration:.0f} s per run after 2 s of warm-up.", "",
         "| run | reviews/s | p50 ms | p99 ms | p99.9 ms | failed | answered |", "|---|---|---|---|---|---|---|"]
for name, label in [("steady", "1,000/s, 4 HTTP/2 connections, evenly paced"), ("h2", "saturation, 4 HTTP/2 connections x 16 streams"), ("h1", "saturation, 8 HTTP/1.1 keep-alive connections")]:
    rps, p50, p99, p999, failed, n = run(name)
    lines.append(f"| {label} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {p999:.3f} | {failed} | {n:,} |")
lines += ["", f"Peak RSS of the server over all runs: {rss_kib / 1024:.1f} MiB."]
open(report, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
