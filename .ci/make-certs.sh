#!/usr/bin/env bash
# Makes throw-away certificates for a local TLS etcd, with openssl, in DIR (never kept):
#   .ci/make-certs.sh DIR    ->  DIR/ca.pem, DIR/server.pem + server-key.pem (IP 127.0.0.1,
#                                server and client auth), DIR/client.pem + client-key.pem
set -euo pipefail
t="$1"
command -v openssl >/dev/null || { echo "make-certs: openssl not found: apt-get install -y openssl" >&2; exit 1; }
mkdir -p "$t"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key "$t/ca-key.pem"
openssl req -x509 -new -key "$t/ca-key.pem" -out "$t/ca.pem" -days 2 -subj /CN=microlock-test-ca 2>/dev/null
for who in server client; do
    key "$t/$who-key.pem"
    openssl req -new -key "$t/$who-key.pem" -out "$t/$who.csr" -subj "/CN=$who" 2>/dev/null
    if [[ $who == server ]]; then ext="subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth,clientAuth"; else ext="extendedKeyUsage=clientAuth"; fi
    openssl x509 -req -in "$t/$who.csr" -CA "$t/ca.pem" -CAkey "$t/ca-key.pem" -CAcreateserial \
        -out "$t/$who.pem" -days 2 -extfile <(echo "$ext") 2>/dev/null
done
