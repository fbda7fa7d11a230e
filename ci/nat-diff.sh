#!/usr/bin/env bash
# Differential test of Ferry's NAT against Linux nftables NAT: the same crafted packet
# sequences (hack/nat_diff.py) through two routers with the same addressing, side by side,
# and what comes out compared field by field.
#
#   kernel:  [nd-kc] c0 ──veth── veth-in [nd-kr: Linux, nftables snat/dnat] veth-out ──veth── s0 [nd-ks]
#   ferry:   [nd-fc] c0 ──veth── veth-in [nd-fn: ferryd, af_packet ports]  veth-out ──veth── s0 [nd-fs]
#            10.10.1.2/24, 10.10.1.3/24     10.10.1.1 | 10.10.2.1 (+ pool 10.10.2.100)    10.10.2.2/24, 10.10.2.3/24
#
# Rules on both routers: SNAT of 10.10.1.0/24 leaving by the outside port to 10.10.2.100;
# DNAT of tcp 10.10.2.1:8080 to 10.10.1.2:80. The client's and server's kernels drop all
# IP input (nft), so that only the script's crafted packets answer.
#
# Usage: ci/nat-diff.sh [FERRYD]    (default target/release/ferryd; run as root)
# Prints the fields compared, one "ok   ..." / "FAIL ...: detail" line per step (with its
# table of fields, expected / kernel / ferry, when it fails or the rigs differ), notes on
# legitimate differences, and "nat-diff: N passed, N failed"; exits non-zero on failure.
# ND_VERBOSE=1 prints every step's table (else only those that fail or differ). On failure
# the work directory (every table, ferryd's log, pcaps of both rigs) is kept.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FERRYD=$(readlink -f "${1:-$ROOT/target/release/ferryd}")
P=nd
NSS="$P-kc $P-kr $P-ks $P-fc $P-fn $P-fs"
WORK=$(mktemp -d /tmp/nat-diff.XXXXXX)
CFG=$WORK/ferry.yaml
STATS=$WORK/stats.json
LOG=$WORK/ferryd.log
OUT=$WORK/ferryd.out
PY=/usr/bin/python3
passed=0
failed=0
FERRY_PID=
KEEP=0
T0=$(date +%s.%N)

ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); KEEP=1; }

teardown() {
  for ns in $NSS; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
}

cleanup() {
  if [ -n "$FERRY_PID" ]; then
    kill -INT "$FERRY_PID" 2>/dev/null && wait "$FERRY_PID" 2>/dev/null
  fi
  teardown
  if [ "$KEEP" = 1 ]; then echo "nat-diff: logs and pcaps kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" != 0 ]; then echo "nat-diff: run as root" >&2; exit 2; fi
if [ ! -x "$FERRYD" ]; then echo "nat-diff: no ferryd at $FERRYD" >&2; exit 2; fi
if ! $PY -c "import scapy.all" 2>/dev/null; then
  echo "nat-diff: $PY cannot import scapy (hack/setup.sh installs python3-scapy)" >&2; exit 2
fi

quiet_if() { # ns ifname: no offloads (af_packet sees real frames, checksums are whole), no IPv6
  ip netns exec "$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
  ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=1"
}

link() { # nsA ifA nsB ifB
  ip link add "$P-tmp-a" type veth peer name "$P-tmp-b" || return 1
  ip link set "$P-tmp-a" netns "$1" name "$2"
  ip link set "$P-tmp-b" netns "$3" name "$4"
  quiet_if "$1" "$2"
  quiet_if "$3" "$4"
  ip -n "$1" link set "$2" up
  ip -n "$3" link set "$4" up
}

# Client and server ends (the same in both rigs): the addresses answer ARP, every IP
# packet is dropped at input, so no kernel RST, port unreachable or echo reply interferes.
endpoints() { # client-ns server-ns
  ip -n "$1" addr add 10.10.1.2/24 dev c0
  ip -n "$1" addr add 10.10.1.3/24 dev c0
  ip -n "$1" route add default via 10.10.1.1
  ip -n "$2" addr add 10.10.2.2/24 dev s0
  ip -n "$2" addr add 10.10.2.3/24 dev s0
  ip -n "$2" route add default via 10.10.2.1
  for ns in "$1" "$2"; do
    ip netns exec "$ns" nft -f - <<'EOF'
table inet nd {
  chain in { type filter hook input priority 0; policy drop; }
}
EOF
  done
}

setup() {
  teardown
  for ns in $NSS; do
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
  done
  link "$P-kc" c0 "$P-kr" veth-in || return 1
  link "$P-kr" veth-out "$P-ks" s0 || return 1
  link "$P-fc" c0 "$P-fn" veth-in || return 1
  link "$P-fn" veth-out "$P-fs" s0 || return 1
  endpoints "$P-kc" "$P-ks"
  endpoints "$P-fc" "$P-fs"

  # The kernel router: forwarding, the pool address on its outside port (answers ARP),
  # and the NAT rules.
  ip -n "$P-kr" addr add 10.10.1.1/24 dev veth-in
  ip -n "$P-kr" addr add 10.10.2.1/24 dev veth-out
  ip -n "$P-kr" addr add 10.10.2.100/32 dev veth-out
  ip netns exec "$P-kr" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$P-kr" nft -f - <<'EOF' || return 1
table ip nd {
  chain pre {
    type nat hook prerouting priority dstnat;
    ip daddr 10.10.2.1 tcp dport 8080 dnat to 10.10.1.2:80
  }
  chain post {
    type nat hook postrouting priority srcnat;
    ip saddr 10.10.1.0/24 oifname "veth-out" snat to 10.10.2.100
  }
}
EOF

  # The ferry node: its kernel must not answer on the raw veths (af_packet sees frames
  # before the ingress hook; drop them there).
  ip netns exec "$P-fn" nft add table netdev ferry
  for i in veth-in veth-out; do
    ip netns exec "$P-fn" nft "add chain netdev ferry $i { type filter hook ingress device $i priority 0; policy drop; }"
  done
}

write_config() {
  cat > "$CFG" <<EOF
dpdk:
  lcores: [0, 1]
  args: ["--in-memory", "--file-prefix=$P", "--log-level=pmd.net.af_packet:warning"]
ports:
  - name: inside
    devargs: net_af_packet_$P-0,iface=veth-in,qpairs=1
    addresses: [10.10.1.1/24]
  - name: outside
    devargs: net_af_packet_$P-1,iface=veth-out,qpairs=1
    addresses: [10.10.2.1/24]
nat:
  snat:
    - name: egress
      match: {from: [10.10.1.0/24], out: outside}
      to: {addresses: [10.10.2.100]}
  dnat:
    - name: web
      match: {address: 10.10.2.1, protocol: tcp, port: 8080}
      to: {address: 10.10.1.2, port: 80}
EOF
}

start_ferry() {
  # Not through a wrapper: $! must be ferryd itself (ip netns exec execs it).
  ip netns exec "$P-fn" "$FERRYD" --config "$CFG" --stats-file "$STATS" --no-grpc-socket > "$OUT" 2> "$LOG" &
  FERRY_PID=$!
  for _ in $(seq 1 200); do
    if grep -q "forwarding" "$LOG"; then return 0; fi
    if ! kill -0 "$FERRY_PID" 2>/dev/null; then
      FERRY_PID=
      echo "ferryd exited during start:"; cat "$LOG"; return 1
    fi
    sleep 0.1
  done
  echo "ferryd did not start in 20 s:"; cat "$LOG"; return 1
}

if ! setup; then
  fail "namespaces" "setting up the rigs failed"
  echo "nat-diff: $passed passed, $failed failed"
  exit 1
fi
write_config
if start_ferry; then
  ok "ferryd starts with the nat section and forwards"
else
  fail "ferryd start" "see above"
  echo "nat-diff: $passed passed, $failed failed"
  exit 1
fi

verbose=()
[ "${ND_VERBOSE:-0}" = 1 ] && verbose=(--verbose)
$PY "$ROOT/hack/nat_diff.py" --kernel "$P-kc,$P-ks" --ferry "$P-fc,$P-fs" \
  --pcap-dir "$WORK" --counts "$WORK/counts" --table "$WORK/table.txt" "${verbose[@]}"
rc=$?
if [ -s "$WORK/counts" ]; then
  read -r p f < "$WORK/counts"
  passed=$((passed + p))
  failed=$((failed + f))
  [ "$f" -gt 0 ] && KEEP=1
fi
if [ "$rc" != 0 ] && [ ! -s "$WORK/counts" ]; then fail "hack/nat_diff.py" "exited $rc"; fi

if kill -0 "$FERRY_PID" 2>/dev/null; then
  kill -INT "$FERRY_PID"
  frc=0
  wait "$FERRY_PID" || frc=$?
  FERRY_PID=
  if [ "$frc" = 0 ]; then ok "ferryd still running after the sequences, exits 0 on SIGINT"
  else fail "ferryd exit" "exit code $frc"; fi
else
  FERRY_PID=
  fail "ferryd" "died during the sequences: $(tail -5 "$LOG")"
fi

echo "nat-diff: $passed passed, $failed failed ($(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $T0 }") s)"
[ "$failed" = 0 ]
