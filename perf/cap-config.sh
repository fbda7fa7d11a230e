#!/usr/bin/env bash
# Write ferryd's config for the capacity harness (frames replayed from memory by net_pcap
# from PCAP into port a, routed to net_null on port b; the routes and neighbours every device
# under test gets) to OUT. EAL_ARGS: more EAL arguments, each a quoted YAML string followed
# by a comma (e.g. '"--no-huge", "-m", "512",'). Used by perf/bench and
# perf/callgrind-capacity.sh.
#
# Usage: perf/cap-config.sh OUT PCAP FILE_PREFIX LCORES NEXT_HOP_MAC [EAL_ARGS]
set -euo pipefail
[ $# -ge 5 ] || { sed -n 's/^# Usage: //p' "$0" >&2; exit 2; }
cat > "$1" <<YAML
dpdk:
  lcores: [$4]
  args: [${6:-} "--file-prefix=$3"]
ports:
  - { name: a, devargs: "net_pcap0,rx_pcap=$2,infinite_rx=1", addresses: [192.168.98.1/24, "fd98::1/64"], exception: false }
  - { name: b, devargs: "net_null0,no-rx=1", addresses: [192.168.99.1/24, "fd99::1/64"], exception: false }
routes:
  - { prefix: 10.253.0.0/16, via: [192.168.99.2] }
  - { prefix: "2001:db8::/32", via: ["fd99::2"] }
neighbors:
  - { address: 192.168.99.2, mac: "$5", port: b }
  - { address: "fd99::2", mac: "$5", port: b }
YAML
