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
  pcap_gen "$1/cap.pcap" --size "$2" --flows 1024 --proto udp --dst-mac "$PCAP_MAC" --dst-ip "$3"
}

# pcap_gen FILE ARGS...: ferry-pktgen writes the frames ARGS describe to FILE (its messages to
# FILE.log); fails the script, naming it, if it does not succeed.
pcap_gen() {
  local out=$1 rc=0
  shift
  target/release/ferry-pktgen --pcap "$out" "$@" 2> "$out.log" || rc=$?
  gen_status "$rc" "$out.log"
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

# Devices under test (testpmd, l3fwd, ferryd) run in the background and are stopped with
# SIGINT; the generator (ferry-pktgen) runs in the foreground. A device that exits with an
# error, or before it is stopped, fails the script (exit 1) with a message naming it, its
# exit status and the end of its log: a smoke must not pass on a crash that still left some
# throughput measured. Each device must be started by the calling shell itself, not in a
# command substitution (a subshell), so that the shell can `wait` for it and read how it
# exited.

# dut_stdin DIR: set DUT_STDIN to a FIFO in DIR that this shell holds open (read-write) and
# never writes to, for the devices' stdin: dpdk-testpmd (without -i) runs until a line or
# the end of its stdin, so reads must wait, and no process has to hold the pipe open (each
# device used to get its own `sleep 100000`, left behind after it stopped).
dut_stdin() {
  DUT_STDIN=$1/dut-stdin
  mkfifo "$DUT_STDIN"
  exec {DUT_STDIN_FD}<> "$DUT_STDIN"
}

# The devices started and not yet stopped (pids as keys), for dut_cleanup.
declare -gA DUT_LIVE=()

# dut_started PID: note a device this shell started in the background (dut_cleanup stops it).
dut_started() { DUT_LIVE[$1]=1; }

# Stop (SIGINT, then SIGKILL after 5 s) the devices started and not stopped: for an EXIT trap,
# when the script stops early. Only those pids, none found by name.
dut_cleanup() {
  local p
  for p in "${!DUT_LIVE[@]}"; do kill -INT "$p" 2> /dev/null || true; done
  for _ in $(seq 1 50); do
    for p in "${!DUT_LIVE[@]}"; do running "$p" || unset "DUT_LIVE[$p]"; done
    [ ${#DUT_LIVE[@]} = 0 ] && return 0
    sleep 0.1
  done
  for p in "${!DUT_LIVE[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
}

# Whether process $1 is running: there, and not a zombie waiting to be reaped.
# How many segfaults the kernel has logged in DPDK's memif driver ("unknown" if its log
# cannot be read): perf/bench tells that known driver defect from a device's own crash.
memif_faults() {
  local log
  log=$(dmesg 2>/dev/null) || { echo unknown; return; }
  grep -c 'segfault.*librte_net_memif' <<<"$log" || true
}

running() {
  local s
  s=$(sed 's/.*) //' "/proc/$1/stat" 2> /dev/null) || return 1
  [ -n "$s" ] && [ "${s%% *}" != Z ]
}

# Print "$0: $1" and the last lines of log $2 to stderr, and exit 1.
device_failed() {
  echo "perf/${0##*/}: $1; the end of its log ($2):" >&2
  if [ -s "$2" ]; then tail -n 15 "$2" | sed 's/^/  | /' >&2; else echo "  (empty)" >&2; fi
  exit 1
}

# dut_alive PID NAME LOG: fail unless device NAME (pid PID, log LOG), started by this shell,
# is still running; one that has exited is reaped and its status reported.
dut_alive() {
  local rc=0
  running "$1" && return 0
  unset "DUT_LIVE[$1]"
  wait "$1" || rc=$?
  device_failed "$2 (pid $1) exited with status $rc before it was stopped" "$3"
}

# dut_stop PID NAME LOG: stop device NAME (pid PID, started by this shell; log LOG) with
# SIGINT, wait for it, and fail unless it was still running, stopped within 10 s and exited
# with status 0. Stopped so, ferryd, l3fwd and dpdk-testpmd (Debian's 22.11) clean up and
# exit 0 (ferryd on SIGTERM too).
dut_stop() {
  local pid=$1 name=$2 log=$3 rc=0
  dut_alive "$pid" "$name" "$log"
  kill -INT "$pid" 2> /dev/null || true
  for _ in $(seq 1 100); do running "$pid" || break; sleep 0.1; done
  unset "DUT_LIVE[$pid]"
  if running "$pid"; then
    kill -KILL "$pid" 2> /dev/null || true
    wait "$pid" || true
    device_failed "$name (pid $pid) did not stop within 10 s of SIGINT (killed)" "$log"
  fi
  wait "$pid" || rc=$?
  [ "$rc" = 0 ] || device_failed "$name (pid $pid) exited with status $rc when stopped with SIGINT" "$log"
}

# gen_status STATUS LOG: fail if the generator (ferry-pktgen) exited with STATUS other than 0.
gen_status() {
  [ "$1" = 0 ] || device_failed "the generator ferry-pktgen exited with status $1" "$2"
}
