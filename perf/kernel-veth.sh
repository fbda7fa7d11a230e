#!/usr/bin/env bash
# ferryd against the Linux kernel forwarding on the same veth topology, fed by ferry-pktgen
# through net_af_xdp:
#   [P-gen: ferry-pktgen on g0 (tx) and g1 (rx)] g0 ── r0 [P-rtr: kernel or ferryd] r1 ── g1
# The router routes 10.253.0.0/16 to g1 (a static neighbour).
#
# Per core, not just Mpps: veth delivers a packet on the sender's CPU, so on two CPUs the
# generator bounds both routers' throughput. What each router costs per packet is measured
# on its own CPU (CPU 1; the generator has CPU 0):
#   kernel - RPS on r0 steers the forwarding (ip_rcv, ip_forward, r1's transmit) to CPU 1;
#            its cost is CPU 1's busy time (/proc/stat: user+system+irq+softirq) over the
#            packets r1 sent in the same window: packets per busy CPU-second.
#   ferryd - one worker on CPU 1 (busy poll); its cost is its busy TSC cycles per packet
#            (rx, route, tx), so per core = TSC Hz / cycles per packet.
# Both include handing the packet to g1 (veth transmit, the generator's XDP and copy), which
# runs on the transmitting CPU. Prints Mpps received and per-core Mpps for each, medians of
# RUNS runs, and their ratio; with JSON=FILE appends {"dut", "size", "mpps", ...} lines.
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

gen() { # -> the generator's JSON line in $W/gen.json; prints Mpps received
  ip netns exec "$P-gen" "$PKTGEN" --lcore 0 --json --duration "$SECS" --size 64 --flows 1024 \
    --port net_af_xdp0,iface=g0 --port net_af_xdp1,iface=g1 --dst-mac "$R0" --dst-ip 10.253.0.1 \
    2> "$W/gen.log" | tail -1 > "$W/gen.json" || true
  /usr/bin/python3 -c "import json; print(json.load(open('$W/gen.json'))['mpps'])" 2>/dev/null || echo 0
}
cpu1_busy() { # jiffies CPU 1 spent busy (user nice system irq softirq), and in all
  awk '$1 == "cpu1" { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat
}
r1_tx() { ip netns exec "$P-rtr" cat /sys/class/net/r1/statistics/tx_packets; }

kernel_on() {
  ip -n "$P-rtr" addr add 10.1.0.1/24 dev r0
  ip -n "$P-rtr" addr add 10.2.0.1/24 dev r1
  ip netns exec "$P-rtr" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.r0.rp_filter=0
  ip -n "$P-rtr" neigh replace 10.2.0.2 lladdr "$G1" dev r1
  ip -n "$P-rtr" neigh replace 10.1.0.2 lladdr "$G0" dev r0
  ip -n "$P-rtr" route replace 10.253.0.0/16 via 10.2.0.2
  ip -n "$P-rtr" route replace 198.18.0.0/16 via 10.1.0.2
  # The kernel's forwarding core: everything received on r0 is processed on CPU 1.
  ip netns exec "$P-rtr" sh -c 'echo 2 > /sys/class/net/r0/queues/rx-0/rps_cpus'
}
kernel_off() {
  ip netns exec "$P-rtr" sysctl -qw net.ipv4.ip_forward=0
  ip netns exec "$P-rtr" sh -c 'echo 0 > /sys/class/net/r0/queues/rx-0/rps_cpus'
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
HZ=$(getconf CLK_TCK)
: > "$W/k"; : > "$W/kc"; : > "$W/f"; : > "$W/fc"
for r in $(seq 1 "$RUNS"); do
  kernel_on
  read -r b0 t0 < <(cpu1_busy); p0=$(r1_tx)
  [ -z "${PROFILE:-}" ] || { sleep 2; perf record -q -e cpu-clock -C 1 -g -o "$PROFILE/kernel-$r.data" -- sleep 2 > /dev/null 2>&1; } &
  k=$(gen)
  read -r b1 t1 < <(cpu1_busy); p1=$(r1_tx)
  kernel_off
  # Packets per busy CPU-second on CPU 1, over the whole generator run (warm-up included).
  kc=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v p=$((p1 - p0)) -v hz="$HZ" \
    'BEGIN { printf "%.3f", (b > 0 ? p / (b / hz) / 1e6 : 0) }')
  kbusy=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.0f", (t ? 100 * b / t : 0) }')
  echo "$k" >> "$W/k"; echo "$kc" >> "$W/kc"
  ip netns exec "$P-rtr" "$FERRYD" --config "$W/ferry.yaml" --stats-file "$W/stats.json" \
    > "$W/ferry.out" 2> "$W/ferry.log" &
  pid=$!
  for _ in $(seq 1 50); do grep -q forwarding "$W/ferry.log" && break; sleep 0.1; done
  # PROFILE=DIR: a CPU 1 profile (perf record, kernel and user) of each router's run.
  [ -z "${PROFILE:-}" ] || { sleep 2; perf record -q -e cpu-clock -C 1 -g -o "$PROFILE/ferry-$r.data" -- sleep 2 > /dev/null 2>&1; } &
  f=$(gen)
  sleep 1.1
  read -r cpp tsc ppb < <(/usr/bin/python3 -c "import json; s = json.load(open('$W/stats.json')); t = s['total']; print(t['cycles_per_packet'], s['tsc_hz'], round(t['packets_per_burst'], 1))" 2>/dev/null || echo 0 0 0)
  kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  fc=$(awk -v c="$cpp" -v hz="$tsc" 'BEGIN { printf "%.3f", (c > 0 ? hz / c / 1e6 : 0) }')
  echo "$f" >> "$W/f"; echo "$fc" >> "$W/fc"
  echo "run $r: kernel $k Mpps (CPU 1 ${kbusy}% busy: $kc Mpps per core), ferryd $f Mpps ($(printf %.0f "$cpp") cycles/packet, $ppb packets/burst: $fc Mpps per core)"
  if [ -n "${JSON:-}" ]; then
    echo "{\"dut\": \"kernel-veth\", \"size\": 64, \"run\": $r, \"mpps\": $k, \"per_core_mpps\": $kc, \"cpu1_busy_pct\": $kbusy}" >> "$JSON"
    echo "{\"dut\": \"ferry-veth\", \"size\": 64, \"run\": $r, \"mpps\": $f, \"per_core_mpps\": $fc, \"cycles_per_packet\": $cpp}" >> "$JSON"
  fi
done
k=$(median < "$W/k"); kc=$(median < "$W/kc"); f=$(median < "$W/f"); fc=$(median < "$W/fc")
awk -v k="$k" -v kc="$kc" -v f="$f" -v fc="$fc" 'BEGIN {
  printf "median: kernel %.3f Mpps (%.3f per core), ferryd %.3f Mpps (%.3f per core); per-core ratio %.1fx\n",
    k, kc, f, fc, (kc ? fc / kc : 0) }'
