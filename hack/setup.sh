#!/usr/bin/env bash
# Installs what Ferry needs on Debian 12 (as root) and reserves hugepages. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PKGS=(dpdk dpdk-dev libdpdk-dev dpdk-doc clang libclang-dev pkg-config make gcc
      iproute2 iputils-ping traceroute curl ethtool tcpreplay tshark nftables python3 kmod valgrind
      python3-scapy lua5.3 protobuf-compiler prometheus openssl python3-grpcio)
missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Hugepages: 512 x 2 MiB, mounted at /dev/hugepages.
want=512
nr=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
if [ -w "$nr" ] && [ "$(cat "$nr")" -lt "$want" ]; then
  echo "$want" > "$nr" || true
fi
mkdir -p /dev/hugepages
mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
echo "setup: hugepages free: $free x 2 MiB"
if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
