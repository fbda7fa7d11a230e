#!/usr/bin/env bash
# Build DPDK's l3fwd example from Debian's dpdk-doc sources in DIR (patched only to mask the
# rx offloads a virtual device lacks) and write the routes every device under test gets
# (DIR/r4.cfg, DIR/r6.cfg: 10.253.0.0/16 and 2001:db8::/32 to port 1). Prints the binary's
# path. Used by perf/bench and perf/callgrind-capacity.sh.
#
# Usage: perf/l3fwd-build.sh DIR
set -euo pipefail
W=${1:?usage: perf/l3fwd-build.sh DIR}
cp -r /usr/share/dpdk/examples/l3fwd /usr/share/dpdk/examples/common "$W/"
sed -i '/local_port_conf.rx_adv_conf.rss_conf.rss_hf &=/i\		local_port_conf.rxmode.offloads \&= dev_info.rx_offload_capa;\n		port_conf.rxmode.offloads = local_port_conf.rxmode.offloads;' "$W/l3fwd/main.c"
make -s -C "$W/l3fwd" -j2 > "$W/l3fwd-build.log" 2>&1 || { cat "$W/l3fwd-build.log" >&2; exit 1; }
printf 'R10.253.0.0/16 1\n' > "$W/r4.cfg"
printf 'R2001:db8::/32 1\n' > "$W/r6.cfg"
echo "$W/l3fwd/build/l3fwd"
