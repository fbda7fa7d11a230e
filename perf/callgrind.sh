#!/usr/bin/env bash
# Instructions per packet of the route path under valgrind --tool=callgrind: repeatable on a
# noisy machine, so regressions show. Runs the route bench's small-table case (64-byte
# UDP/IPv4, one route via a gateway) and prints these figures:
#   router::process      - the full (slow) path, one packet at a time, inclusive
#   route_burst          - bursts of 32 as the worker runs them: fastpath::burst (header
#                          checks, FIB lookups, rewrite) and the hand-off per packet; then
#                          bursts of 32 whose checksums a NIC vouched for (mbuf flag
#                          RTE_MBUF_F_RX_IP_CKSUM_GOOD: the fast path does not sum them); then
#                          bursts of 2 (a lightly loaded port), where a burst's fixed cost shows;
#                          and both again for 78-byte UDP/IPv6 frames
#
# Usage: perf/callgrind.sh [PACKETS_PER_ROUND]     (default 100000; the bench runs 14 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
bin=$(cargo bench -p ferry-perf --bench route --no-run --message-format=json 2>/dev/null |
  /usr/bin/python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "route":
        print(m["executable"])' | tail -1)
out=$(mktemp /tmp/ferry-callgrind.XXXXXX)
trap 'rm -f "$out"' EXIT
# $1: burst size; $2: 1 to print router::process too; $3: "vouched" for buffers a NIC
# flagged "IPv4 checksum good"; $4: 6 for IPv6 frames.
count() {
  env ROUTE_SMALL_ONLY=1 ROUTE_PACKETS="$N" ROUTE_BURST="$1" ${3:+ROUTE_VOUCHED=1} \
    ROUTE_FAMILY="${4:-4}" valgrind --tool=callgrind \
    --callgrind-out-file="$out" "$bin" > /dev/null 2>&1
  callgrind_annotate --inclusive=yes "$out" 2>/dev/null |
    awk -v n="$N" -v bs="$1" -v slow="$2" -v how="${3:+, checksums vouched for by the NIC}${4:+, IPv$4}" '
      /router::process \[/ && !p { gsub(",", "", $1); if (slow) printf "router::process (one at a time%s): %.0f instructions/packet (%d packets)\n", how, $1 / (7 * n), 7 * n; p = 1 }
      /route::route_burst/ && !b { gsub(",", "", $1); m = int(n / bs) * bs; printf "route_burst (fast path, bursts of %d%s): %.0f instructions/packet (%d packets)\n", bs, how, $1 / (7 * m), 7 * m; b = 1 }
      END { if (!p || !b) { print "route functions not found in the profile" > "/dev/stderr"; exit 1 } }'
}
count 32 1
count 32 0 vouched
# A lightly loaded port: a poll brings a packet or two, so what a burst costs whatever its
# size shows here.
count 2 0
# 78-byte UDP/IPv6 frames, bursts of 32 (and the slow path).
count 32 1 "" 6
