#!/usr/bin/env bash
# Instructions per packet of the route path (router::process, inclusive) under
# valgrind --tool=callgrind: repeatable on a noisy machine, so regressions show.
# Runs the route bench's small-table case (64-byte UDP/IPv4, one route via a gateway).
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
ROUTE_SMALL_ONLY=1 ROUTE_PACKETS="$N" valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" > /dev/null 2>&1
callgrind_annotate --inclusive=yes "$out" 2>/dev/null |
  awk -v n="$N" '/router::process \[/ { gsub(",", "", $1); printf "route path: %.0f instructions/packet (router::process, inclusive; %d packets)\n", $1 / (14 * n), 14 * n; found = 1 }
       END { if (!found) { print "router::process not found in the profile" > "/dev/stderr"; exit 1 } }'
