#!/bin/sh
# Fleet permits per second through etcd, in clear and over TLS with a client certificate, against one
# etcd on loopback (data in a temp directory) listening both ways: http on 23790, https on 23791 with
# --client-cert-auth. The certificates (a CA, etcd's, a client's; P-256) are made here with the openssl
# CLI. Runs the permits example (debug build) for SECONDS (default 10) each way, RUNS times (default 3).
#
#   sh bench/etcd_tls.sh [SECONDS] [RUNS]
set -eu
seconds=${1:-10}
runs=${2:-3}
dir=$(mktemp -d)
trap 'kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca-key.pem
openssl req -x509 -new -key ca-key.pem -out ca.pem -subj /CN=bench-ca -days 2 2>/dev/null
sign() { # NAME EXTENSIONS
    key "$1-key.pem"
    openssl req -new -key "$1-key.pem" -out "$1.csr" -subj "/O=mend-bench" 2>/dev/null
    printf '%s\n' "$2" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out "$1.pem" -days 2 \
        -extfile "$1.ext" 2>/dev/null
}
sign server 'subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth'
sign client 'extendedKeyUsage=clientAuth'
etcd --data-dir "$dir/data" \
    --listen-client-urls http://127.0.0.1:23790,https://127.0.0.1:23791 \
    --advertise-client-urls http://127.0.0.1:23790,https://127.0.0.1:23791 \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster default=http://127.0.0.1:23800 \
    --cert-file server.pem --key-file server-key.pem --trusted-ca-file ca.pem --client-cert-auth \
    >etcd.log 2>&1 &
etcd_pid=$!
cd - >/dev/null
cargo build -q -p mend-fleet --example permits
permits=target/debug/examples/permits
run=1
while [ "$run" -le "$runs" ]; do
    printf 'clear: '; "$permits" http://127.0.0.1:23790 "$seconds"
    printf 'TLS:   '; "$permits" https://127.0.0.1:23791 "$seconds" "$dir/ca.pem" "$dir/client.pem" "$dir/client-key.pem"
    run=$((run + 1))
done
