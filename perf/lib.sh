# Shell functions shared by perf/bench, perf/shared.sh and perf/callgrind-capacity.sh (sourced,
# from the tree's top).

# The capacity harness's parts (a pcap replayed from memory into a device that forwards to
# net_null) in directory $1: the release ferryd and ferry-pktgen, l3fwd (built by
# perf/l3fwd-build.sh, with the routes every device gets) and $1/cap.pcap, 1024 UDP flows of
# $2-byte frames to $3. Sets L3FWD and what cap_ports sets.
cap_setup() {
  cargo build --release -p ferry --bin ferryd -p ferry-perf --bin ferry-pktgen 2>&1 | tail -1
  L3FWD=$(perf/l3fwd-build.sh "$1")
  cap_ports "$1"
  target/release/ferry-pktgen --pcap "$1/cap.pcap" --size "$2" --flows 1024 --proto udp \
    --dst-mac "$PCAP_MAC" --dst-ip "$3" 2> /dev/null
}

# The capacity harness's ports, in directory $1: sets CAP_DIR ($1), CAP_VDEVS (the EAL
# arguments of port 0, $1/cap.pcap replayed by net_pcap, and port 1, net_null), GEN1 (port 1's
# next hop's MAC) and PCAP_MAC (net_pcap's own).
cap_ports() {
  CAP_DIR=$1 GEN1=02:fe:00:00:00:02 PCAP_MAC=02:70:63:61:70:00
  CAP_VDEVS=(--vdev="net_pcap0,rx_pcap=$1/cap.pcap,infinite_rx=1" --vdev="net_null0,no-rx=1")
}

# l3fwd's application arguments (after EAL's `--`) in the capacity harness, both ports polled
# by lcore $1: LPM with the routes cap_setup's l3fwd build wrote, port 1's next hop, packet
# types parsed in software (the PMDs give none). Sets the array L3FWD_APP.
l3fwd_cap_app() {
  L3FWD_APP=(-p 0x3 -P --config="(0,0,$1),(1,0,$1)" --rule_ipv4="$CAP_DIR/r4.cfg"
             --rule_ipv6="$CAP_DIR/r6.cfg" --eth-dest=1,"$GEN1" --parse-ptype)
}

# Port 1's transmitted packets of the DPDK process with file prefix $1, read as a secondary
# process (0 if unreadable). Debian's dpdk-proc-info (22.11) can crash on exit after printing
# the stats: the figure is read from what it printed, and the shell's crash notice is kept
# out of the output (`; true` keeps the subshell from exec'ing the tool, so that the subshell
# reports the crash).
port1_tx() {
  ( dpdk-proc-info --file-prefix="$1" --no-pci -- --stats; true ) 2>/dev/null |
    awk '/NIC statistics for port 1/ { p = 1 } p && /TX-packets:/ && !n { n = $2 }
         END { print n + 0 }'
}

# The CPU time (ns) of process $1's threads bound to CPU 1 alone: schedstat's run time, or
# without it (no CONFIG_SCHED_INFO) utime + stime in clock ticks.
cpu1_ns() {
  local t s=0 v
  for t in /proc/"$1"/task/*; do
    grep -Eq '^Cpus_allowed_list:[[:space:]]*1$' "$t/status" 2>/dev/null || continue
    if [ -r "$t/schedstat" ]; then v=$(cut -d' ' -f1 "$t/schedstat")
    else v=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1e9 / hz }' "$t/stat"); fi
    s=$((s + v))
  done
  echo "$s"
}

# Port 1's transmitted packets of the process with file prefix $1 and pid $2, and the CPU
# time of its threads on CPU 1 at about the same moment: the CPU time is read just before
# and just after the counters (a dpdk-proc-info run, a fraction of a second), and the
# midpoint taken. Prints "packets ns".
port1_sample() {
  local c0 p c1
  c0=$(cpu1_ns "$2")
  p=$(port1_tx "$1")
  c1=$(cpu1_ns "$2")
  echo "$p $(((c0 + c1) / 2))"
}
