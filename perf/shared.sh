#!/usr/bin/env bash
# Two devices under test on one shared CPU, for a ratio that this noisy VM cannot move: both
# forward the same frames, replayed from memory by net_pcap (infinite_rx) into net_null (the
# capacity harness of perf/bench), at the same time, their forwarding threads both bound to
# CPU 1 and time-sliced by the scheduler. Each one's rate is its transmitted packets (port
# counters, dpdk-proc-info) over the CPU time of its threads on CPU 1 (schedstat, read just
# before and after the counters, the midpoint taken): packets per CPU-second, over the same
# ten seconds or so for both, so the machine's slow and fast phases fall on both alike. Prints each run's B/A ratio and the median; exits non-zero if a device
# forwarded nothing, or exited with an error or before it was stopped (lib.sh's dut_stop).
#
# A and B: `l3fwd` (DPDK's example, built as perf/bench builds it), `ferry` (this tree's
# release ferryd) or the path of another ferryd build (an A/B of two builds). `--b l3fwd`
# puts l3fwd against itself: the method's own spread (it should centre on 1.00).
#
# Usage: perf/shared.sh [--runs N] [--secs S] [--size BYTES] [--family 4|6] [--a DUT] [--b DUT]
#        (as root; defaults: 8 runs of 10 s, 64 bytes, IPv4, A l3fwd, B ferry)
set -euo pipefail
RUNS=8 SECS=10 SIZE=64 FAMILY=4 A=l3fwd B=ferry
# A ferryd path, made absolute (the script runs from the tree's top).
dut() { case "$1" in l3fwd | ferry) echo "$1" ;; *) realpath -e "$1" 2>/dev/null || echo "$1" ;; esac; }
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --family) FAMILY=$2; shift 2 ;;
    --a) A=$(dut "$2"); shift 2 ;;
    --b) B=$(dut "$2"); shift 2 ;;
    *) sed -n 's/^# Usage: //p' "$0" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
case "$FAMILY" in
  4) DST=10.253.0.1 ;;
  6) DST=2001:db8::1; [ "$SIZE" = 64 ] && SIZE=78 ;;   # IPv6 frames start at 78 bytes
  *) echo "--family: 4 or 6" >&2; exit 2 ;;
esac
for d in "$A" "$B"; do
  case "$d" in
    l3fwd | ferry) ;;
    *) [ -x "$d" ] || { echo "$d: not l3fwd, ferry or an executable ferryd" >&2; exit 2; } ;;
  esac
done
W=$(mktemp -d /tmp/ferry-shared.XXXXXX)
P=fsh-$$   # the file prefix of this invocation's devices
. perf/lib.sh
# DPDK leaves its hugepage files behind at exit (l3fwd ~110 of the 512 pages): removed with
# the devices gone, since no later run uses this invocation's prefix.
trap 'dut_cleanup; rm -rf /var/run/dpdk/"$P"-* /dev/hugepages/"$P"-* "$W"' EXIT
dut_stdin "$W"
cap_setup "$W" "$SIZE" "$DST"
l3fwd_cap_app 21

# $1: the device (l3fwd, ferry or a ferryd path); $2: its name here (a or b). Sets STARTED
# to its pid (started by this shell, which can then wait for it: not in a subshell).
start() {
  local prefix="$P-$2"
  case "$1" in
    l3fwd)
      "$L3FWD" --lcores=21@1 --file-prefix="$prefix" --no-pci "${CAP_VDEVS[@]}" -- \
        "${L3FWD_APP[@]}" > "$W/$2.log" 2>&1 < "$DUT_STDIN" &
      STARTED=$!; dut_started $! ;;
    *)
      local bin=target/release/ferryd
      [ "$1" = ferry ] || bin=$1
      # The main lcore (control thread) on CPU 0, the worker on CPU 1.
      perf/cap-config.sh "$W/$2.yaml" "$W/cap.pcap" "$prefix" '"0@0", "1@1"' "$GEN1"
      "$bin" --config "$W/$2.yaml" --stats-file "$W/$2.json" > "$W/$2.log" 2>&1 &
      STARTED=$!; dut_started $! ;;
  esac
}
sample() { port1_sample "$P-$1" "$2"; }   # name pid -> "packets ns"
# Stop device a or b ($1); fail if it had exited, or exits with an error (lib.sh).
stop() {
  local pid=$pa dev=$A
  [ "$1" = a ] || { pid=$pb dev=$B; }
  dut_stop "$pid" "$dev ($1)" "$W/$1.log"
}

echo "A = $A, B = $B; $SIZE-byte UDP/IPv$FAMILY frames; $RUNS runs of $SECS s on one shared CPU"
: > "$W/ratios"
for r in $(seq 1 "$RUNS"); do
  # Which one starts first alternates.
  if [ $((r % 2)) = 1 ]; then start "$A" a; pa=$STARTED; start "$B" b; pb=$STARTED
  else start "$B" b; pb=$STARTED; start "$A" a; pa=$STARTED; fi
  sleep 3
  dut_alive "$pa" "$A (a)" "$W/a.log"; dut_alive "$pb" "$B (b)" "$W/b.log"
  # Each device's packets and CPU time read together (port1_sample), the two devices in the
  # same order at the start and the end of the window, which order alternating by run.
  if [ $((r % 2)) = 1 ]; then read -r a0 ca0 < <(sample a "$pa"); read -r b0 cb0 < <(sample b "$pb")
  else read -r b0 cb0 < <(sample b "$pb"); read -r a0 ca0 < <(sample a "$pa"); fi
  sleep "$SECS"
  if [ $((r % 2)) = 1 ]; then read -r a1 ca1 < <(sample a "$pa"); read -r b1 cb1 < <(sample b "$pb")
  else read -r b1 cb1 < <(sample b "$pb"); read -r a1 ca1 < <(sample a "$pa"); fi
  stop a; stop b
  awk -v r="$r" -v a0="$a0" -v a1="$a1" -v b0="$b0" -v b1="$b1" -v ca0="$ca0" -v ca1="$ca1" \
      -v cb0="$cb0" -v cb1="$cb1" -v ra="$W/ratios" 'BEGIN {
    ma = (ca1 > ca0) ? (a1 - a0) / (ca1 - ca0) * 1e3 : 0
    mb = (cb1 > cb0) ? (b1 - b0) / (cb1 - cb0) * 1e3 : 0
    if (ma <= 0 || mb <= 0) { printf "run %d: a device forwarded nothing (A %.2f, B %.2f Mpps per CPU-second)\n", r, ma, mb; exit 1 }
    printf "run %d: A %6.2f, B %6.2f Mpps per CPU-second (%.2f and %.2f s of CPU); B/A %.3f\n", r, ma, mb, (ca1 - ca0) / 1e9, (cb1 - cb0) / 1e9, mb / ma
    print mb / ma >> ra }'
done
sort -n "$W/ratios" | awk '{ v[NR] = $1 } END {
  m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
  printf "B/A, sorted:"; for (i = 1; i <= NR; i++) printf " %.3f", v[i]
  printf "; median %.3f\n", m }'
