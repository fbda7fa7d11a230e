#!/usr/bin/env bash
# What a scan of unused addresses costs ferryd (issue: neighbour resolution under a scan):
# the README's namespace rig (hack/netns.sh) with one worker on CPU 1, a client sending
# 100k small UDP datagrams at 50k pps to 2,000 unused addresses of a connected /16
# (hack/scan.py, on CPU 0), then the ~6 s the resolver needs to fail them all under the
# 1000/s solicitation cap. Prints the control thread's and the worker's CPU time (from
# /proc), the solicitations ferryd sent (its own count and tshark's on the wire), the
# busiest second, and a ping's loss beside the scan.
#
# Usage: perf/scan.sh [FERRYD] [4|6]   (as root; default target/release/ferryd, IPv4; ~30 s)
set -euo pipefail
cd "$(dirname "$0")/.."
FERRYD=$(readlink -f "${1:-target/release/ferryd}")
FAM=${2:-4}
P=fscan
W=$(mktemp -d /tmp/ferry-scan.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  for ns in "$P-client" "$P-node" "$P-server" "$P-server2"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
  done
  ./hack/netns.sh down "$P"
  rm -rf "$W"
}
trap cleanup EXIT
./hack/netns.sh up "$P" > /dev/null
cat > "$W/cfg.yaml" <<YAML
dpdk:
  lcores: [0, 1]
  args: ["--in-memory", "--file-prefix=$P", "--log-level=pmd.net.af_packet:warning", "--log-level=pmd.net.tap:error"]
ports:
  - name: inside
    devargs: net_af_packet_$P-0,iface=veth-in
    addresses: [10.10.1.1/24, "fd10:1::1/64"]
  - name: outside
    devargs: net_af_packet_$P-1,iface=veth-out
    addresses: [10.10.2.1/24, "fd10:2::1/64", 10.50.0.1/16, "fd50::1/64"]
YAML
ip netns exec "$P-node" "$FERRYD" --config "$W/cfg.yaml" --stats-file "$W/stats.json" \
  > "$W/out" 2> "$W/log" &
pid=$!
for _ in $(seq 1 100); do grep -q forwarding "$W/log" && [ -s "$W/stats.json" ] && break; sleep 0.2; done
if [ "$FAM" = 4 ]; then
  dst=10.10.2.2; filter="arp[6:2] == 1"; prefix=10.50.; field=arp.dst.proto_ipv4
else
  dst=fd10:2::2; filter="icmp6 and ip6[40] == 135"; prefix=fd50::; field=icmpv6.nd.ns.target_address
fi
ip netns exec "$P-client" ping -c 2 -W 2 "$dst" > /dev/null
ip netns exec "$P-server" taskset -c 0 tshark -i s0 -n -l -f "$filter" -T fields \
  -e frame.time_epoch -e "$field" -a duration:30 > "$W/cap" 2> "$W/tshark.err" &
tpid=$!
for _ in $(seq 1 50); do grep -q "Capturing on" "$W/tshark.err" && break; sleep 0.1; done
ticks() { awk '{print $14 + $15}' "/proc/$pid/task/$1/stat"; }
worker=$(grep -l rte-worker /proc/"$pid"/task/*/comm | sed -n 1p)
worker=$(basename "$(dirname "$worker")")
m0=$(ticks "$pid"); w0=$(ticks "$worker"); t0=$(date +%s.%N)
ip netns exec "$P-client" taskset -c 0 ping -"$FAM" -i 0.02 -c 150 -W 1 "$dst" > "$W/ping" 2>&1 &
ppid=$!
ip netns exec "$P-client" taskset -c 0 /usr/bin/python3 hack/scan.py "$FAM" 100000 50000 2000 > /dev/null
wait "$ppid"
stat() { /usr/bin/python3 -c "import json; s=json.load(open('$W/stats.json')); print(s$1)"; }
for _ in $(seq 1 120); do [ "$(stat "['resolver']['incomplete']")" = 0 ] && break; sleep 0.1; done
m1=$(ticks "$pid"); w1=$(ticks "$worker"); t1=$(date +%s.%N)
sleep 1.1
kill -INT "$tpid" 2>/dev/null; wait "$tpid" || true
/usr/bin/python3 - "$W" "$prefix" "$((m1 - m0))" "$((w1 - w0))" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY'
import bisect, collections, json, sys
w, prefix, m, wk, t0, t1, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
s = json.load(open(w + "/stats.json"))
per, times = collections.Counter(), []
for line in open(w + "/cap"):
    f = line.split()
    if len(f) == 2 and f[1].startswith(prefix):
        per[f[1]] += 1
        times.append(float(f[0]))
times.sort()
busiest = max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)
el = t1 - t0
ping = [l for l in open(w + "/ping") if "packet loss" in l]
r, t = s["resolver"], s["total"]
print(f"scan of 2,000 unused addresses, 100k datagrams at 50k pps, then resolution: {el:.1f} s")
print(f"  control thread  {100 * m / hz / el:5.1f}% of a CPU   worker {100 * wk / hz / el:5.1f}% (it busy-polls)")
print(f"  solicitations   ferryd {r['solicits']}, on the wire {sum(per.values())} for {len(per)} addresses, at most {max(per.values(), default=0)} each")
print(f"  busiest second  {busiest} (cap 1000/s); held back {r['rate_limited']} times; failed {r['failures']}")
print(f"  drops           hold_queue_full {t['drop_hold_queue_full']} neighbor_unresolved {t['drop_neighbor_unresolved']} neighbor_failed {t['drop_neighbor_failed']}")
print(f"  ping beside it  {ping[0].strip() if ping else '?'}")
PY
