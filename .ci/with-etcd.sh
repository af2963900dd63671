#!/usr/bin/env bash
# Runs a command with a throw-away single-member etcd (v2 API on) on free loopback ports.
#   .ci/with-etcd.sh CMD ARGS...     ($ETCD_URL holds the client URL; {URL} in ARGS is replaced)
# etcd comes from $ETCD_BIN, else `etcd` on PATH; it is killed and its data removed on exit.
# WITH_ETCD_TLS=1: etcd serves https:// and demands a client certificate; a CA, a server and a
# client certificate are made for this run with `openssl` (never kept), and $ETCD_CA,
# $ETCD_CERT, $ETCD_KEY name the client's files.
# WITH_ETCD_V3_ONLY=1: etcd serves no v2 API (as etcd 3.6+), only v3.
set -euo pipefail
etcd_bin="${ETCD_BIN:-$(command -v etcd || true)}"
if [[ -z "$etcd_bin" ]]; then
    echo "with-etcd: no etcd found: run 'make etcd' (or 'apt-get install -y etcd-server')" >&2
    exit 1
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=$(free_port); peer=$(free_port)
data=$(mktemp -d -t microlock-etcd.XXXXXX)
scheme=http
tls_flags=()
if [[ "${WITH_ETCD_TLS:-}" == 1 ]]; then
    t="$data/tls"; mkdir -p "$t"
    bash "$(dirname "$0")/make-certs.sh" "$t"
    scheme=https
    tls_flags=(--cert-file "$t/server.pem" --key-file "$t/server-key.pem"
               --trusted-ca-file "$t/ca.pem" --client-cert-auth)
    export ETCD_CA="$t/ca.pem" ETCD_CERT="$t/client.pem" ETCD_KEY="$t/client-key.pem"
fi
v2_flags=(--enable-v2=true)
ready_path="/v2/keys/?quorum=true"
ready_body=""
if [[ "${WITH_ETCD_V3_ONLY:-}" == 1 ]]; then
    v2_flags=()
    ready_path="/v3/kv/range"
    ready_body='{"key":"AA=="}'
fi
"$etcd_bin" --name with-etcd --data-dir "$data" "${v2_flags[@]}" "${tls_flags[@]}" \
    --listen-client-urls "$scheme://127.0.0.1:$client" --advertise-client-urls "$scheme://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "with-etcd=http://127.0.0.1:$peer" >"$data/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill -9 $etcd_pid 2>/dev/null || true; wait $etcd_pid 2>/dev/null || true; rm -rf "$data"' EXIT
export ETCD_URL="$scheme://127.0.0.1:$client"
for _ in $(seq 1 100); do
    if python3 - "$ETCD_URL$ready_path" "$ready_body" "${ETCD_CA:-}" "${ETCD_CERT:-}" "${ETCD_KEY:-}" <<'PY' 2>/dev/null; then break; fi
import ssl, sys, urllib.request
ctx = None
if sys.argv[3]:
    ctx = ssl.create_default_context(cafile=sys.argv[3])
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
data = sys.argv[2].encode() or None
urllib.request.urlopen(sys.argv[1], data=data, timeout=1, context=ctx).read()
PY
    sleep 0.1
done
echo "with-etcd: $("$etcd_bin" --version | head -1) at $ETCD_URL" >&2
args=()
for a in "$@"; do args+=("${a//\{URL\}/$ETCD_URL}"); done
"${args[@]}"
