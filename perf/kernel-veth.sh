#!/usr/bin/env bash
# ferryd against the Linux kernel forwarding on the same veth topology, fed by ferry-pktgen
# through net_af_xdp:
#   [P-gen: ferry-pktgen on g0 (tx) and g1 (rx)] g0 ── r0 [P-rtr: kernel or ferryd] r1 ── g1
# The router routes 10.253.0.0/16 to g1 (a static neighbour). Prints Mpps received back for
# each, median of RUNS runs. Note: af_xdp on veth runs in generic (copy) mode, and veth
# hands packets over on the sender's CPU, so the generator is the limit in both cases here.
#
# Usage: perf/kernel-veth.sh [SECONDS] [RUNS]      (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-4}
RUNS=${2:-3}
P=fkv
FERRYD=${FERRYD:-target/release/ferryd}
PKTGEN=${PKTGEN:-target/release/ferry-pktgen}
W=$(mktemp -d /tmp/ferry-kv.XXXXXX)
cleanup() {
  pkill -INT -f "file-prefix=$P-dut" 2>/dev/null || true
  sleep 0.5
  ip netns del "$P-gen" 2>/dev/null || true
  ip netns del "$P-rtr" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

for ns in "$P-gen" "$P-rtr"; do
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip netns exec "$P-gen" ip link add g0 type veth peer name r0
ip netns exec "$P-gen" ip link add g1 type veth peer name r1
ip netns exec "$P-gen" ip link set r0 netns "$P-rtr"
ip netns exec "$P-gen" ip link set r1 netns "$P-rtr"
for i in g0 g1; do
  ip -n "$P-gen" link set "$i" up
  ip netns exec "$P-gen" ethtool -K "$i" tx off rx off tso off gso off gro off > /dev/null 2>&1 || true
done
for i in r0 r1; do
  ip -n "$P-rtr" link set "$i" up
  ip netns exec "$P-rtr" ethtool -K "$i" tx off rx off tso off gso off gro off > /dev/null 2>&1 || true
done
mac() { ip -n "$1" -br link show "$2" | awk '{print $3}'; }
G0=$(mac "$P-gen" g0) G1=$(mac "$P-gen" g1) R0=$(mac "$P-rtr" r0)

gen() { # -> Mpps received
  ip netns exec "$P-gen" "$PKTGEN" --lcore 0 --json --duration "$SECS" --size 64 --flows 1024 \
    --port net_af_xdp0,iface=g0 --port net_af_xdp1,iface=g1 --dst-mac "$R0" --dst-ip 10.253.0.1 \
    2> "$W/gen.log" | tail -1 > "$W/gen.json" || true
  /usr/bin/python3 -c "import json; print(json.load(open('$W/gen.json'))['mpps'])" 2>/dev/null || echo 0
}

kernel_on() {
  ip -n "$P-rtr" addr add 10.1.0.1/24 dev r0
  ip -n "$P-rtr" addr add 10.2.0.1/24 dev r1
  ip netns exec "$P-rtr" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.r0.rp_filter=0
  ip -n "$P-rtr" neigh replace 10.2.0.2 lladdr "$G1" dev r1
  ip -n "$P-rtr" neigh replace 10.1.0.2 lladdr "$G0" dev r0
  ip -n "$P-rtr" route replace 10.253.0.0/16 via 10.2.0.2
  ip -n "$P-rtr" route replace 198.18.0.0/16 via 10.1.0.2
}
kernel_off() {
  ip netns exec "$P-rtr" sysctl -qw net.ipv4.ip_forward=0
  ip -n "$P-rtr" addr flush dev r0
  ip -n "$P-rtr" addr flush dev r1
}

cat > "$W/ferry.yaml" <<YAML
dpdk:
  lcores: ["0@0", "1@1"]
  args: ["--in-memory", "--file-prefix=$P-dut", "--log-level=pmd.net.af_xdp:warning"]
ports:
  - { name: a, devargs: "net_af_xdp0,iface=r0", addresses: [10.1.0.1/24], exception: false }
  - { name: b, devargs: "net_af_xdp1,iface=r1", addresses: [10.2.0.1/24], exception: false }
routes:
  - { prefix: 10.253.0.0/16, via: [10.2.0.2] }
neighbors:
  - { address: 10.2.0.2, mac: "$G1", port: b }
YAML

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
: > "$W/k"; : > "$W/f"
for r in $(seq 1 "$RUNS"); do
  kernel_on
  k=$(gen); echo "$k" >> "$W/k"
  kernel_off
  ip netns exec "$P-rtr" "$FERRYD" --config "$W/ferry.yaml" > "$W/ferry.out" 2> "$W/ferry.log" &
  pid=$!
  for _ in $(seq 1 50); do grep -q forwarding "$W/ferry.log" && break; sleep 0.1; done
  f=$(gen); echo "$f" >> "$W/f"
  kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  echo "run $r: kernel $k Mpps, ferryd $f Mpps"
done
k=$(median < "$W/k"); f=$(median < "$W/f")
awk -v k="$k" -v f="$f" 'BEGIN { printf "median: kernel %.3f Mpps, ferryd %.3f Mpps, ratio %.2f (generator-bound, see above)\n", k, f, (k ? f / k : 0) }'
