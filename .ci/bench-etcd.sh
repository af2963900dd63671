#!/usr/bin/env bash
# `make bench`'s etcd: ONE throw-away single-member etcd (v2 API on) that every measurement
# shares, serving plain HTTP and mutual TLS at once on two loopback ports.
#   .ci/bench-etcd.sh CMD ARGS...   ({URL} / {TLS_URL} in ARGS are replaced by the client URLs)
# Exports ETCD_URL (http://), ETCD_TLS_URL (https://, client certificate required), and
# ETCD_CA, ETCD_CERT, ETCD_KEY naming the client's files (made for this run with `openssl`,
# never kept). etcd comes from $ETCD_BIN, else `etcd` on PATH; it is killed and its data
# removed on exit. (.ci/with-etcd.sh starts an etcd that serves one or the other.)
set -euo pipefail
etcd_bin="${ETCD_BIN:-$(command -v etcd || true)}"
if [[ -z "$etcd_bin" ]]; then
    echo "bench-etcd: no etcd found: run 'make etcd' (or 'apt-get install -y etcd-server')" >&2
    exit 1
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=$(free_port); tls_client=$(free_port); peer=$(free_port)
data=$(mktemp -d -t microlock-bench-etcd.XXXXXX)
t="$data/tls"; mkdir -p "$t"
bash "$(dirname "$0")/make-certs.sh" "$t"
export ETCD_CA="$t/ca.pem" ETCD_CERT="$t/client.pem" ETCD_KEY="$t/client-key.pem"
"$etcd_bin" --name bench-etcd --data-dir "$data/member" --enable-v2=true \
    --cert-file "$t/server.pem" --key-file "$t/server-key.pem" --trusted-ca-file "$t/ca.pem" --client-cert-auth \
    --listen-client-urls "http://127.0.0.1:$client,https://127.0.0.1:$tls_client" \
    --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench-etcd=http://127.0.0.1:$peer" >"$data/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill -9 $etcd_pid 2>/dev/null || true; wait $etcd_pid 2>/dev/null || true; rm -rf "$data"' EXIT
export ETCD_URL="http://127.0.0.1:$client" ETCD_TLS_URL="https://127.0.0.1:$tls_client"
ready=
for _ in $(seq 1 100); do
    if python3 - "$ETCD_URL" "$ETCD_TLS_URL" "$ETCD_CA" "$ETCD_CERT" "$ETCD_KEY" <<'PY' 2>/dev/null; then ready=1; break; fi
import ssl, sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/v2/keys/?quorum=true", timeout=1).read()
ctx = ssl.create_default_context(cafile=sys.argv[3])
ctx.load_cert_chain(sys.argv[4], sys.argv[5])
urllib.request.urlopen(sys.argv[2] + "/v2/keys/?quorum=true", timeout=1, context=ctx).read()
PY
    sleep 0.1
done
[[ -n "$ready" ]] || { echo "bench-etcd: etcd did not start:" >&2; tail -n 20 "$data/etcd.log" >&2; exit 1; }
echo "bench-etcd: $("$etcd_bin" --version | head -1) at $ETCD_URL and $ETCD_TLS_URL (mutual TLS)" >&2
args=()
for a in "$@"; do a="${a//\{URL\}/$ETCD_URL}"; args+=("${a//\{TLS_URL\}/$ETCD_TLS_URL}"); done
"${args[@]}"
