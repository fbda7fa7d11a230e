#!/usr/bin/env bash
# The control plane's benchmark (issue 4's targets), as root:
#   1. load: ferryd (memif ports, worker on CPU 1, control on CPU 0) takes its running
#      config plus 1M BGP-like IPv4 routes as one gRPC apply; accepted and active times,
#      the apply's own validate/compile split, ferryd's peak RSS;
#   2. churn: 1,000 route changes a second for 30 s against that table, each its own gRPC
#      delta, each timed until it is active on every worker (p50/p99/max), the control
#      side's CPU (ferryd's non-worker threads), while ferry-pktgen sends traffic whose
#      route does not change through ferryd: its loss must be zero.
# Usage: perf/control.sh [--routes N] [--rate R] [--secs S] [--pps P] [--json FILE]
# Prints the two phases' JSON and a summary; --json writes them as one object.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUTES=1000000 RATE=1000 SECS=30 PPS=200000 JSON=
while [ $# -gt 0 ]; do
  case "$1" in
    --routes) ROUTES=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --pps) PPS=$2; shift 2 ;;
    --json) JSON=$2; shift 2 ;;
    *) echo "usage: $0 [--routes N] [--rate R] [--secs S] [--pps P] [--json FILE]" >&2; exit 2 ;;
  esac
done
W=$(mktemp -d /tmp/ferry-ctl.XXXXXX)
FERRY_PID= GEN_PID=
cleanup() {
  [ -n "$GEN_PID" ] && kill "$GEN_PID" 2>/dev/null
  [ -n "$FERRY_PID" ] && kill -INT "$FERRY_PID" 2>/dev/null && wait "$FERRY_PID" 2>/dev/null
  rm -rf /var/run/dpdk/fctl-* /dev/hugepages/fctl-*
  [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT

cargo build --release -p ferry --bin ferryd -p ferry-perf --bin ferry-pktgen --bin ferry-ctlbench 2>&1 | tail -1
DUT0=02:fe:00:00:01:01 DUT1=02:fe:00:00:01:02 GEN1=02:fe:00:00:00:02
SOCK=$W/memif.sock
cat > "$W/ferry.yaml" <<YAML
dpdk:
  lcores: ["0@0", "1@1"]
  args: ["--in-memory", "--file-prefix=fctl-ferry", "--log-level=pmd.net.memif:warning"]
ports:
  - { name: a, devargs: "net_memif0,role=server,socket=$SOCK,id=0,mac=$DUT0", addresses: [192.168.98.1/24], exception: false }
  - { name: b, devargs: "net_memif1,role=server,socket=$SOCK,id=1,mac=$DUT1", addresses: [192.168.99.1/24], exception: false }
routes:
  - { prefix: 10.253.0.0/16, via: [192.168.99.2] }
neighbors:
  - { address: 192.168.99.2, mac: "$GEN1", port: b }
YAML
target/release/ferryd --config "$W/ferry.yaml" --grpc-socket "$W/ferry.sock" \
  --stats-file "$W/stats.json" > "$W/ferryd.out" 2> "$W/ferryd.log" &
FERRY_PID=$!
for _ in $(seq 1 100); do grep -q forwarding "$W/ferryd.log" && break; sleep 0.2; done
grep -q forwarding "$W/ferryd.log" || { echo "ferryd did not start:"; cat "$W/ferryd.log"; exit 1; }

CTL=(taskset -c 0 target/release/ferry-ctlbench --socket "$W/ferry.sock" --pid "$FERRY_PID"
     --via 192.168.99.2 --keep 10.253.0.0/16)
echo "== load: $ROUTES routes in one apply"
if [ -n "${PROFILE:-}" ]; then   # PROFILE=file: perf record ferryd's control side during the load
  perf record -g -o "$PROFILE" -p "$FERRY_PID" > /dev/null 2>&1 & PERF_PID=$!
  sleep 0.5
fi
"${CTL[@]}" load --routes "$ROUTES" | tee "$W/load.json"
if [ -n "${PROFILE:-}" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; fi

echo "== churn: $RATE changes/s for $SECS s, with ferry-pktgen at $PPS pps beside it"
target/release/ferry-pktgen --lcore 0 --json --duration $((SECS + 8)) --size 64 --flows 1024 \
  --rate "$PPS" --port "net_memif0,role=client,socket=$SOCK,id=0" \
  --port "net_memif1,role=client,socket=$SOCK,id=1" \
  --dst-mac "$DUT0" --dst-ip 10.253.0.1 > "$W/gen.json" 2> "$W/gen.log" &
GEN_PID=$!
sleep 3
"${CTL[@]}" churn --rate "$RATE" --secs "$SECS" | tee "$W/churn.json"
rc=0; wait "$GEN_PID" || rc=$?; GEN_PID=
[ "$rc" = 0 ] || { echo "ferry-pktgen failed ($rc):"; tail -5 "$W/gen.log"; exit 1; }
tail -1 "$W/gen.json" > "$W/gen-last.json"
kill -INT "$FERRY_PID"; wait "$FERRY_PID" || true; FERRY_PID=
/usr/bin/python3 - "$W" "$JSON" <<'PY'
import json, sys
w, out = sys.argv[1], sys.argv[2]
load = json.load(open(f"{w}/load.json"))
churn = json.load(open(f"{w}/churn.json"))
gen = json.load(open(f"{w}/gen-last.json"))
print(f"load:  {load['routes']} routes: accepted in {load['accepted_s']:.2f} s "
      f"(validate {load['validate_s']:.2f} s, compile {load['compile_s']:.2f} s), "
      f"active on every worker in {load['active_s']:.2f} s; peak RSS {load['peak_rss_mib']} MiB")
print(f"churn: {churn['changes']} changes at {churn['rate_per_s']:.0f}/s: active on every worker "
      f"p50 {churn['active_ms_p50']:.2f} ms, p99 {churn['active_ms_p99']:.2f} ms, max {churn['active_ms_max']:.2f} ms; "
      f"control side {churn['control_cpu_cores']:.2f} cores; NACKs {churn['nacks']}")
print(f"traffic: {gen.get('mpps', 0) * 1e6:.0f} pps, loss {gen.get('loss', 1) * 100:.4f}%")
if out:
    json.dump({"load": load, "churn": churn, "traffic": gen}, open(out, "w"), indent=1)
PY
