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
# --nat (issue 5): two more devices in each run, after the two above, measured the same way:
#   kernel-snat - the same kernel router plus an nftables table that SNATs the generator's
#                 sources (198.18.0.0/15) leaving by r1 to the pool address 10.2.0.10 on
#                 r1's subnet (conntrack on the forwarding path: the NAT most users would
#                 otherwise run, with the kernel's defaults);
#   ferry-snat  - ferryd with the same SNAT rule (nat: snat: from 198.18.0.0/15 out b, to
#                 10.2.0.10).
# Both get NAT_FLOWS flows (environment; default 10,000: source ports 1024-11023 of
# 198.18.0.1, sent round robin), each made once at the start of the run and then hit every
# NAT_FLOWS packets: the cost per packet of established flows. The route-only pair keeps
# its 1,024 flows (neither router keeps state per flow there), so its rows mean the same
# with or without --nat. A NAT run that translated nothing fails the script: for the
# kernel, the conntrack entries whose reply goes to the pool address (/proc/net/nf_conntrack
# of the router's namespace) and the SNAT rule's counter (a nat chain sees a connection's
# first packet only: connections SNAT'd); for ferryd, nat_created in its stats; its drop_*
# counters are printed. The NAT pair is printed beside the route-only pair, with its
# per-core ratio ferry-snat/kernel-snat and each router's per-core SNAT rate over its
# route-only one; JSON=FILE gets {"dut": "kernel-snat"} and {"dut": "ferry-snat"} lines too.
#
# Usage: perf/kernel-veth.sh [SECONDS] [RUNS] [--nat]      (as root; NAT_FLOWS=N, JSON=FILE,
#        PROFILE=DIR in the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
NAT='' ARGS=()
for a in "$@"; do
  case "$a" in
    --nat) NAT=1 ;;
    -*) sed -n '/^# Usage/p' "$0" >&2; exit 2 ;;
    *) ARGS+=("$a") ;;
  esac
done
SECS=${ARGS[0]:-4}
RUNS=${ARGS[1]:-3}
FLOWS=1024
NAT_FLOWS=${NAT_FLOWS:-10000}
POOL=10.2.0.10
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

gen() { # flows -> the generator's JSON line in $W/gen.json; prints Mpps received
  ip netns exec "$P-gen" "$PKTGEN" --lcore 0 --json --duration "$SECS" --size 64 --flows "$1" \
    --port net_af_xdp0,iface=g0 --port net_af_xdp1,iface=g1 --dst-mac "$R0" --dst-ip 10.253.0.1 \
    2> "$W/gen.log" | tail -1 > "$W/gen.json" || true
  /usr/bin/python3 -c "import json; print(json.load(open('$W/gen.json'))['mpps'])" 2>/dev/null || echo 0
}
cpu1_busy() { # jiffies CPU 1 spent busy (user nice system irq softirq), and in all
  awk '$1 == "cpu1" { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat
}
r1_tx() { ip netns exec "$P-rtr" cat /sys/class/net/r1/statistics/tx_packets; }
ct_count() { ip netns exec "$P-rtr" cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo 0; }

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
# kernel-snat: the route-only router plus SNAT in a postrouting nat chain, which turns
# conntrack on in the router's namespace (its hooks are registered per namespace, on demand).
# The pool address is r1's too, as a deployment has it (so the kernel answers ARP for it and
# takes the replies); sending from it needs neither.
kernel_snat_on() {
  kernel_on
  ip -n "$P-rtr" addr add "$POOL/32" dev r1
  ip netns exec "$P-rtr" nft -f - <<NFT
table ip ${P}_nat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "r1" ip saddr 198.18.0.0/15 counter snat to $POOL
  }
}
NFT
}
# -> conns (the connections the rule SNAT'd) and entries (the conntrack entries that reply
# to the pool address); then the table is removed and conntrack flushed (a netlink
# IPCTNL_MSG_CT_DELETE with no tuple: conntrack -F without the conntrack tool), so that every
# kernel-snat run makes its flows afresh, as every ferry-snat run does, and the route-only
# runs after it run without conntrack (checked: ct_count does not move over them).
kernel_snat_off() {
  conns=$(ip netns exec "$P-rtr" nft list chain ip "${P}_nat" post | awk '/snat to/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }')
  if [ -r /proc/net/nf_conntrack ]; then
    entries=$(ip netns exec "$P-rtr" grep -c "dst=$POOL " /proc/net/nf_conntrack || true)
  else   # (a kernel without CONFIG_NF_CONNTRACK_PROCFS: all of the namespace's entries)
    entries=$(ct_count)
  fi
  ip netns exec "$P-rtr" nft delete table ip "${P}_nat"
  ip netns exec "$P-rtr" /usr/bin/python3 -c "
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
s.send(struct.pack('=IHHIIBBH', 20, 1 << 8 | 2, 1 | 4, 1, 0, socket.AF_INET, 0, 0))
assert struct.unpack('=i', s.recv(4096)[16:20])[0] == 0, 'conntrack flush refused'"
  kernel_off
  conns=${conns:-0} entries=${entries:-0}
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
# ferry-snat: the same, and the generator's sources leaving by b (r1) SNAT'd to the pool.
cp "$W/ferry.yaml" "$W/ferry-snat.yaml"
cat >> "$W/ferry-snat.yaml" <<YAML
nat:
  snat:
    - { name: egress, match: { from: [198.18.0.0/15], out: b }, to: { addresses: [$POOL] } }
YAML

# Kernel runs: the router is set up (kernel_on or kernel_snat_on); name flows -> k (Mpps
# received), kc (Mpps per busy CPU 1 second), kbusy (CPU 1 busy %).
kernel_run() {
  local b0 t0 b1 t1 p0 p1
  read -r b0 t0 < <(cpu1_busy); p0=$(r1_tx)
  [ -z "${PROFILE:-}" ] || { sleep 2; perf record -q -e cpu-clock -C 1 -g -o "$PROFILE/$1-$r.data" -- sleep 2 > /dev/null 2>&1; } &
  k=$(gen "$2")
  read -r b1 t1 < <(cpu1_busy); p1=$(r1_tx)
  # Packets per busy CPU-second on CPU 1, over the whole generator run (warm-up included).
  kc=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v p=$((p1 - p0)) -v hz="$HZ" \
    'BEGIN { printf "%.3f", (b > 0 ? p / (b / hz) / 1e6 : 0) }')
  kbusy=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN { printf "%.0f", (t ? 100 * b / t : 0) }')
}
# ferryd runs: config name flows -> f (Mpps received), fc (Mpps per core), cpp (busy cycles
# per packet), ppb (packets per burst), and from its stats: created (nat_created), drops
# (all drop_* counters) and dropped (the reasons with their counts).
ferry_run() {
  local pid tsc
  ip netns exec "$P-rtr" "$FERRYD" --config "$W/$1.yaml" --stats-file "$W/stats.json" \
    --no-grpc-socket > "$W/ferry.out" 2> "$W/ferry.log" &
  pid=$!
  for _ in $(seq 1 50); do grep -q forwarding "$W/ferry.log" && break; sleep 0.1; done
  # PROFILE=DIR: a CPU 1 profile (perf record, kernel and user) of each router's run.
  [ -z "${PROFILE:-}" ] || { sleep 2; perf record -q -e cpu-clock -C 1 -g -o "$PROFILE/$2-$r.data" -- sleep 2 > /dev/null 2>&1; } &
  f=$(gen "$3")
  sleep 1.1   # ferryd writes its stats every second
  read -r cpp tsc ppb created drops dropped < <(/usr/bin/python3 -c "
import json
s = json.load(open('$W/stats.json')); t = s['total']
d = {k: v for k, v in t.items() if k.startswith('drop_') and v}
print(t['cycles_per_packet'], s['tsc_hz'], round(t['packets_per_burst'], 1), t.get('nat_created', 0),
      sum(d.values()), ','.join('%s=%d' % x for x in sorted(d.items())) or '-')" 2>/dev/null || echo 0 0 0 0 0 -)
  kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  fc=$(awk -v c="$cpp" -v hz="$tsc" 'BEGIN { printf "%.3f", (c > 0 ? hz / c / 1e6 : 0) }')
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
HZ=$(getconf CLK_TCK)
: > "$W/k"; : > "$W/kc"; : > "$W/f"; : > "$W/fc"; : > "$W/ks"; : > "$W/ksc"; : > "$W/fs"; : > "$W/fsc"
for r in $(seq 1 "$RUNS"); do
  kernel_on
  c0=$(ct_count)
  kernel_run kernel "$FLOWS"
  c1=$(ct_count)
  kernel_off
  [ "$c1" = "$c0" ] || echo "warning: run $r: conntrack counted $c0 -> $c1 entries in the route-only kernel run" >&2
  echo "$k" >> "$W/k"; echo "$kc" >> "$W/kc"
  ferry_run ferry ferry "$FLOWS"
  echo "$f" >> "$W/f"; echo "$fc" >> "$W/fc"
  echo "run $r: kernel $k Mpps (CPU 1 ${kbusy}% busy: $kc Mpps per core), ferryd $f Mpps ($(printf %.0f "$cpp") cycles/packet, $ppb packets/burst: $fc Mpps per core)"
  if [ -n "${JSON:-}" ]; then
    echo "{\"dut\": \"kernel-veth\", \"size\": 64, \"run\": $r, \"mpps\": $k, \"per_core_mpps\": $kc, \"cpu1_busy_pct\": $kbusy}" >> "$JSON"
    echo "{\"dut\": \"ferry-veth\", \"size\": 64, \"run\": $r, \"mpps\": $f, \"per_core_mpps\": $fc, \"cycles_per_packet\": $cpp}" >> "$JSON"
  fi
  [ -n "$NAT" ] || continue
  kernel_snat_on
  kernel_run kernel-snat "$NAT_FLOWS"
  kernel_snat_off
  echo "$k" >> "$W/ks"; echo "$kc" >> "$W/ksc"
  ferry_run ferry-snat ferry-snat "$NAT_FLOWS"
  echo "$f" >> "$W/fs"; echo "$fc" >> "$W/fsc"
  echo "run $r: kernel-snat $k Mpps (CPU 1 ${kbusy}% busy: $kc Mpps per core; $conns connections SNAT'd, $entries conntrack entries to $POOL), ferryd-snat $f Mpps ($(printf %.0f "$cpp") cycles/packet, $ppb packets/burst: $fc Mpps per core; nat_created $created, drops $drops$([ "$dropped" = - ] || echo " ($dropped)"))"
  if [ -n "${JSON:-}" ]; then
    echo "{\"dut\": \"kernel-snat\", \"size\": 64, \"run\": $r, \"mpps\": $k, \"per_core_mpps\": $kc, \"cpu1_busy_pct\": $kbusy, \"flows\": $NAT_FLOWS, \"nat_connections\": $conns, \"conntrack_entries\": $entries}" >> "$JSON"
    echo "{\"dut\": \"ferry-snat\", \"size\": 64, \"run\": $r, \"mpps\": $f, \"per_core_mpps\": $fc, \"cycles_per_packet\": $cpp, \"flows\": $NAT_FLOWS, \"nat_created\": $created, \"drops\": $drops}" >> "$JSON"
  fi
  if [ "$conns" = 0 ] || [ "$entries" = 0 ] || [ "$created" = 0 ]; then
    echo "run $r: a NAT device translated nothing (kernel-snat: $conns connections, $entries entries; ferry-snat: nat_created $created): its figures are not NAT's" >&2
    exit 1
  fi
done
k=$(median < "$W/k"); kc=$(median < "$W/kc"); f=$(median < "$W/f"); fc=$(median < "$W/fc")
awk -v k="$k" -v kc="$kc" -v f="$f" -v fc="$fc" 'BEGIN {
  printf "median: kernel %.3f Mpps (%.3f per core), ferryd %.3f Mpps (%.3f per core); per-core ratio %.1fx\n",
    k, kc, f, fc, (kc ? fc / kc : 0) }'
[ -n "$NAT" ] || exit 0
ks=$(median < "$W/ks"); ksc=$(median < "$W/ksc"); fs=$(median < "$W/fs"); fsc=$(median < "$W/fsc")
# And what SNAT costs each, per core: its NAT rate over its own route-only rate.
awk -v k="$ks" -v kc="$ksc" -v f="$fs" -v fc="$fsc" -v kr="$kc" -v fr="$fc" -v n="$NAT_FLOWS" 'BEGIN {
  printf "median SNAT (%d flows): kernel-snat %.3f Mpps (%.3f per core), ferryd-snat %.3f Mpps (%.3f per core); per-core ratio ferry-snat/kernel-snat %.1fx\n",
    n, k, kc, f, fc, (kc ? fc / kc : 0)
  printf "per core, SNAT over route-only: kernel %.2f, ferryd %.2f\n", (kr ? kc / kr : 0), (fr ? fc / fr : 0) }'
