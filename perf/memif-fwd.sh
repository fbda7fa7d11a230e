#!/usr/bin/env bash
# Forwarding rate of one ferryd worker over memif, against testpmd macswap (the ceiling) in
# the same run. The generator is ferry-pktgen at its maximum rate (64-byte UDP, 1024 flows)
# on two memif ports; the device under test routes everything to its second port.
#
# Usage: perf/memif-fwd.sh [SECONDS] [RUNS]      (run as root; needs a release ferryd)
# Prints one line per run and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
RUNS=${2:-3}
FERRYD=${FERRYD:-target/release/ferryd}
W=$(mktemp -d /tmp/ferry-perf.XXXXXX)
trap 'pkill -f "file-prefix=fperf" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT

GEN_MAC0=02:fe:00:00:00:01
GEN_MAC1=02:fe:00:00:00:02
DUT_MAC0=02:fe:00:00:01:01
DUT_MAC1=02:fe:00:00:01:02

cat > "$W/ferry.yaml" <<YAML
dpdk:
  lcores: ["0@0", "1@1"]
  args: ["--in-memory", "--file-prefix=fperf-dut", "--log-level=pmd.net.memif:warning"]
ports:
  - name: a
    devargs: net_memif0,role=server,socket=$W/memif.sock,id=0,mac=$DUT_MAC0
    addresses: [192.168.98.1/24]
    exception: false
  - name: b
    devargs: net_memif1,role=server,socket=$W/memif.sock,id=1,mac=$DUT_MAC1
    addresses: [192.168.99.1/24]
    exception: false
routes:
  - prefix: 10.253.0.0/16
    via: [192.168.99.2]
neighbors:
  - { address: 192.168.99.2, mac: "$GEN_MAC1", port: b }
YAML

# The generator: ferry-pktgen (perf/src/bin/ferry-pktgen.rs) on CPU 0; the DUT's worker
# (or testpmd's forwarding lcore) on CPU 1, its main lcore on CPU 0.
PKTGEN=${PKTGEN:-target/release/ferry-pktgen}
generator() { # seconds -> prints "mpps p99_us" of what came back at the maximum rate
  "$PKTGEN" --lcore 0 --json --duration "$1" --flows 1024 --size 64 \
    --port "net_memif0,role=client,socket=$W/memif.sock,id=0" \
    --port "net_memif1,role=client,socket=$W/memif.sock,id=1" \
    --dst-mac "$DUT_MAC0" --dst-ip 10.253.0.1 2> "$W/gen.log" | tail -1 > "$W/gen.json" || true
  /usr/bin/python3 -c "import json; r = json.load(open('$W/gen.json')); print(int(r['mpps'] * 1e6), r['p99_us'])" 2>/dev/null || echo "0 0"
}

run_ferry() { # run number
  rm -f "$W/memif.sock" "$W/stats.json"
  sed -i "s/--file-prefix=fperf-dut[0-9-]*/--file-prefix=fperf-dut-$1/" "$W/ferry.yaml"
  "$FERRYD" --config "$W/ferry.yaml" --stats-file "$W/stats.json" > "$W/ferry.out" 2> "$W/ferry.log" &
  local pid=$!
  for _ in $(seq 1 100); do grep -q forwarding "$W/ferry.log" && break; sleep 0.1; done
  if ! grep -q forwarding "$W/ferry.log"; then
    echo "ferryd did not start:" >&2; tail -3 "$W/ferry.log" >&2
  fi
  local pps p99
  read -r pps p99 < <(generator "$SECS")
  sleep 1.1
  local cpp
  cpp=$(/usr/bin/python3 -c "import json; print(round(json.load(open('$W/stats.json'))['total']['cycles_per_packet']))" 2>/dev/null || echo 0)
  kill -INT $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  echo "$pps $cpp $p99"
}

run_macswap() {
  rm -f "$W/memif.sock"
  dpdk-testpmd --lcores=20@0,21@1 --main-lcore=20 --in-memory --file-prefix=fperf-dut --no-pci \
    --log-level=pmd.net.memif:warning \
    --vdev="net_memif0,role=server,socket=$W/memif.sock,id=0,mac=$DUT_MAC0" \
    --vdev="net_memif1,role=server,socket=$W/memif.sock,id=1,mac=$DUT_MAC1" \
    -- --forward-mode=macswap --auto-start --stats-period=0 --nb-cores=1 --total-num-mbufs=32768 \
    > "$W/macswap.log" 2>&1 < <(sleep 100000) &
  local pid=$!
  sleep 2
  local pps p99
  read -r pps p99 < <(generator "$SECS")
  kill -INT $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  echo "$pps $p99"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

[ -x "$PKTGEN" ] || cargo build --release -p ferry-perf --bin ferry-pktgen
echo "memif, 64-byte UDP, 1024 flows, 1 DUT core; $RUNS runs of ${SECS}s (Mpps = forwarded packets/s received back)"
: > "$W/ferry.txt"; : > "$W/macswap.txt"; : > "$W/cpp.txt"
for r in $(seq 1 "$RUNS"); do
  read -r f cpp fl < <(run_ferry "$r")
  read -r m ml < <(run_macswap)
  echo "$f" >> "$W/ferry.txt"; echo "$m" >> "$W/macswap.txt"; echo "$cpp" >> "$W/cpp.txt"
  awk -v r="$r" -v f="$f" -v m="$m" -v c="$cpp" -v fl="$fl" -v ml="$ml" 'BEGIN { printf "run %d: ferry %.2f Mpps (%d cycles/pkt, p99 %.0f us)  testpmd-macswap %.2f Mpps (p99 %.0f us)  ratio %.2f\n", r, f/1e6, c, fl, m/1e6, ml, (m ? f/m : 0) }'
done
f=$(median < "$W/ferry.txt"); m=$(median < "$W/macswap.txt"); c=$(median < "$W/cpp.txt")
awk -v f="$f" -v m="$m" -v c="$c" 'BEGIN { printf "median: ferry %.2f Mpps (%d cycles/pkt)  testpmd-macswap %.2f Mpps  ferry/ceiling %.2f\n", f/1e6, c, m/1e6, (m ? f/m : 0) }'
# Fail (for the CI smoke) on zero throughput, never on a number.
awk -v f="$f" -v m="$m" 'BEGIN { exit (f > 0 && m > 0) ? 0 : 1 }' || { echo "zero throughput" >&2; exit 1; }
