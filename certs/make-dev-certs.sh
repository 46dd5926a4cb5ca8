#!/usr/bin/env bash
# Makes a development CA and a serving certificate it signed, for the given DNS names and IPs.
#   certs/make-dev-certs.sh [-o DIR] NAME...
#   certs/make-dev-certs.sh -o certs/dev localhost 127.0.0.1 image-mirror-webhook.image-mirror.svc
# Writes DIR/ca.crt, DIR/ca.key, DIR/tls.crt, DIR/tls.key (default DIR: certs/dev). Needs openssl.
set -euo pipefail
out=certs/dev
if [ "${1:-}" = "-o" ]; then out=$2; shift 2; fi
[ $# -gt 0 ] || { echo "usage: $0 [-o DIR] NAME..." >&2; exit 2; }
command -v openssl >/dev/null || { echo "$0: openssl is needed" >&2; exit 1; }
mkdir -p "$out"

san=""
for n in "$@"; do
  if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
san=${san%,}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=image-mirror-webhook development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
  -keyout "$out/tls.key" -out "$out/tls.csr" 2>/dev/null
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial -days 365 \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' "$san") \
  -out "$out/tls.crt" 2>/dev/null
rm -f "$out/tls.csr" "$out/ca.srl"
chmod 600 "$out/ca.key" "$out/tls.key"
echo "wrote $out/ca.crt and $out/tls.crt ($san)"
