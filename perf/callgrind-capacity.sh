#!/usr/bin/env bash
# Instructions per packet of the whole forwarding loop, ferryd against DPDK's l3fwd (LPM, as
# perf/bench builds and runs it), in the capacity harness: 64-byte UDP/IPv4 frames (with
# --family 6, 78-byte UDP/IPv6 ones) replayed from memory by net_pcap (infinite_rx) into the
# device, routed to net_null, one core. Each device runs under valgrind --tool=callgrind
# (EAL with --no-huge), counting only its forwarding loop (ferryd's Worker::run, l3fwd's
# lpm_main_loop) for SECS seconds of forwarding. Instruction counts are repeatable where this machine's timings swing by ±30%;
# they are not cycles (l3fwd's SSE instructions do four lanes' work each).
#
# Prints, per device: packets counted, instructions per packet in all, in the drivers (the
# pcap PMD's receive with its copy, the null PMD's transmit with its mbuf frees: the same
# code for both devices) and in the device's own code (the rest: ethdev's inline wrappers,
# l3fwd's software packet-type callback, ferryd's shims).
#
# Usage: perf/callgrind-capacity.sh [--family 4|6] [SECS]   (as root; default 20 s; ~2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=64 DST=10.253.0.1 FAMILY=4
if [ "${1:-}" = --family ]; then
  case "${2:-}" in
    4) ;;
    6) SIZE=78 DST=2001:db8::1 FAMILY=6 ;;
    *) echo "--family: 4 or 6" >&2; exit 2 ;;
  esac
  shift 2
fi
SECS=${1:-20}
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || { echo "SECS: a whole number of seconds" >&2; exit 2; }
W=$(mktemp -d /tmp/ferry-cgcap.XXXXXX)
trap 'pkill -f "file-prefix=fcg-" 2>/dev/null || true; rm -rf /var/run/dpdk/fcg-* "$W"' EXIT

. perf/lib.sh
cap_setup "$W" "$SIZE" "$DST"
perf/cap-config.sh "$W/ferry.yaml" "$W/cap.pcap" fcg-ferry '"0@0", "1@0"' "$GEN1" \
  '"--no-huge", "-m", "512",'
EAL=(--no-huge -m 512 --no-pci "${CAP_VDEVS[@]}")
l3fwd_cap_app 0

# $1: device; $2: the loop function to count; $3: a shell test that is true once it forwards;
# the rest: the command. Runs it under callgrind, SECS seconds from the first forwarded packet.
run() {
  local dut=$1 fn=$2 ready=$3
  shift 3
  # Line-buffered, so that the log shows l3fwd's start as it happens; --fair-sched, or a
  # thread that spins (the forwarding loop) starves the one that takes SIGINT.
  stdbuf -oL -eL valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$W/$dut.cg" \
    --toggle-collect="$fn" "$@" > "$W/$dut.log" 2>&1 &
  local pid=$! i
  for i in $(seq 1 241); do
    eval "$ready" && break
    kill -0 "$pid" 2>/dev/null && [ "$i" -lt 241 ] ||
      { echo "$dut did not start forwarding:" >&2; tail "$W/$dut.log" >&2; exit 1; }
    sleep 0.5
  done
  sleep "$SECS"
  kill -INT "$pid"
  wait "$pid" || true
  [ -s "$W/$dut.cg" ] || { echo "$dut: no callgrind output" >&2; tail "$W/$dut.log" >&2; exit 1; }
}
run l3fwd lpm_main_loop 'grep -q "entering main loop" "$W/l3fwd.log"' \
  "$L3FWD" -l 0 --file-prefix=fcg-l3fwd "${EAL[@]}" -- "${L3FWD_APP[@]}"
# ferryd writes its stats every second, and once more when it stops.
run ferry 'ferry_dataplane::worker::Worker::run' \
  'python3 -c "import json,sys; sys.exit(json.load(open(\"$W/stats.json\"))[\"total\"][\"rx\"] == 0)" 2>/dev/null' \
  target/release/ferryd --config "$W/ferry.yaml" --stats-file "$W/stats.json"

for dut in l3fwd ferry; do
  callgrind_annotate --inclusive=yes --tree=caller "$W/$dut.cg" > "$W/$dut.tree" 2>/dev/null
done
/usr/bin/python3 - "$W" "$SIZE" "$FAMILY" <<'PY'
import json, re, sys
w, size, family = sys.argv[1], sys.argv[2], sys.argv[3]
LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+([<*>])\s+(.*?)(?: \(([\d,]+)x\))?(?: \[(.*)\])?\s*$")
PMD = re.compile(r"librte_net_(pcap|null)\.so")

def blocks(path):
    """The caller tree: for each function ('*' line), its Ir and its callers (Ir, name,
    calls, object)."""
    out, callers = [], []
    for l in open(path):
        m = LINE.match(l)
        if not m:
            callers = []
            continue
        ir, kind, name, calls, obj = m.groups()
        rec = (int(ir.replace(",", "")), name, int((calls or "0").replace(",", "")), obj or "")
        if kind == "<":
            callers.append(rec)
        elif kind == "*":
            out.append((rec, callers))
            callers = []
    return out

def figures(dut):
    b = blocks("%s/%s.tree" % (w, dut))
    loop = {"l3fwd": ":lpm_main_loop", "ferry": ":ferry_dataplane::worker::Worker::run"}[dut]
    total = max(r[0] for r, _ in b if r[1].endswith(loop))
    # Driver code: calls into the pcap and null PMDs from outside them.
    driver = sum(c[0] for r, cs in b if PMD.search(r[3]) for c in cs if not PMD.search(c[3]))
    calls = lambda fn: sum(c[2] for r, cs in b if r[1].endswith(":" + fn) for c in cs)
    if dut == "l3fwd":
        bursts = calls("l3fwd_lpm_process_packets")
        # Every burst full (32 packets: eight steps of four) or the count is not packets.
        if bursts == 0 or calls("processx4_step3") != 8 * bursts:
            sys.exit("l3fwd: %d bursts, %d four-packet steps: not all bursts were full"
                     % (bursts, calls("processx4_step3")))
        packets = 32 * bursts
    else:
        packets = json.load(open("%s/stats.json" % w))["total"]["rx"]
    if packets == 0:
        sys.exit("%s forwarded nothing" % dut)
    return packets, total / packets, driver / packets, (total - driver) / packets

rows = {d: figures(d) for d in ["l3fwd", "ferry"]}
print("\ninstructions per packet, capacity harness (pcap -> device -> null, %s-byte UDP/IPv%s), "
      "under callgrind" % (size, family))
print("%-6s %12s %8s %8s %8s" % ("dut", "packets", "total", "drivers", "own"))
for d, (p, t, dr, own) in rows.items():
    print("%-6s %12d %8.1f %8.1f %8.1f" % (d, p, t, dr, own))
(_, tl, _, ol), (_, tf, _, of) = rows["l3fwd"], rows["ferry"]
print("ferry/l3fwd: total %.2f, own %.2f" % (tf / tl, of / ol))
PY
