#!/usr/bin/env bash
# Install what the fault-injection tests (tests/tests/cluster_faults.rs) need beyond etcd:
#   nft (Debian package nftables): partitions of an etcd member from its peers are nftables
#   rules (see EtcdCluster::partition in tests/src/etcd.rs). Idempotent; works from any cwd.
set -euo pipefail

if ! command -v nft >/dev/null 2>&1 && [[ ! -x /usr/sbin/nft ]]; then
    if [[ "$(id -u)" -eq 0 ]]; then
        echo "install-fault-tools: nft missing; installing Debian package nftables" >&2
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y nftables
    else
        echo "install-fault-tools: ERROR: nft is missing and this script is not running as root." >&2
        echo "install-fault-tools: run as root:  apt-get update && apt-get install -y nftables" >&2
        exit 1
    fi
fi

# --- verify: the tool runs and the kernel has nf_tables (needs root / CAP_NET_ADMIN) -----------
nft_bin="$(command -v nft || echo /usr/sbin/nft)"
if ! out="$("$nft_bin" list tables 2>&1)"; then
    echo "install-fault-tools: ERROR: '$nft_bin list tables' failed (root and a kernel with nf_tables are needed):" >&2
    echo "$out" >&2
    exit 1
fi
echo "nft: $nft_bin ($("$nft_bin" --version))"
