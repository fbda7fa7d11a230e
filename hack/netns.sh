#!/usr/bin/env bash
# Test topology: three network namespaces joined by veth pairs.
#
#   [fy-client] c0 ──veth── veth-in [fy-node: ferryd, fx-* TAPs] veth-out ──veth── s0 [fy-server]
#   10.10.1.2/24                                                               10.10.2.2/24
#   fd10:1::2/64          (ferryd owns veth-in / veth-out through DPDK)        fd10:2::2/64
#                                                     [fy-server2] m1 10.10.2.3/24 (macvlan on s0)
# Both servers accept anything in 10.20.0.0/16 and 10.40.0.0/16 (local routes), so they
# are the two next hops of an ECMP route and the target of routes added on reload.
#
# Usage: hack/netns.sh up|down [PREFIX]   (PREFIX lets tests run side by side; default "fy")
set -euo pipefail
cmd=${1:-up}
P=${2:-fy}

down() {
  for ns in "$P-client" "$P-node" "$P-server" "$P-server2"; do
    ip netns del "$ns" 2>/dev/null || true
  done
}

quiet_if() { # ns ifname: no offloads (af_packet/af_xdp see real frames), no IPv6 DAD delay
  ip netns exec "$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
  ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.accept_dad=0" || true
}

up() {
  down
  for ns in "$P-client" "$P-node" "$P-server" "$P-server2"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  ip link add "$P-c0" type veth peer name "$P-vin"
  ip link add "$P-s0" type veth peer name "$P-vout"
  ip link set "$P-c0" netns "$P-client" name c0
  ip link set "$P-s0" netns "$P-server" name s0
  ip link set "$P-vin" netns "$P-node" name veth-in
  ip link set "$P-vout" netns "$P-node" name veth-out
  ip -n "$P-node" link set veth-in up
  ip -n "$P-node" link set veth-out up
  for i in veth-in veth-out; do
    quiet_if "$P-node" "$i"
    # ferryd owns these through af_packet, which sees frames before the ingress hook: drop
    # them there so the node's kernel does not also answer for the node's addresses.
    ip netns exec "$P-node" nft add table netdev ferry
    ip netns exec "$P-node" nft "add chain netdev ferry $i { type filter hook ingress device $i priority 0; policy drop; }"
  done
  ip netns exec "$P-node" sysctl -qw net.ipv6.conf.all.disable_ipv6=0
  # The node's kernel must not answer on the raw veths (ferryd owns them).
  ip netns exec "$P-node" sysctl -qw net.ipv6.conf.veth-in.disable_ipv6=1
  ip netns exec "$P-node" sysctl -qw net.ipv6.conf.veth-out.disable_ipv6=1

  quiet_if "$P-client" c0
  ip -n "$P-client" link set c0 up
  ip -n "$P-client" addr add 10.10.1.2/24 dev c0
  ip -n "$P-client" addr add fd10:1::2/64 dev c0 nodad
  ip -n "$P-client" route add default via 10.10.1.1
  ip -n "$P-client" -6 route add default via fd10:1::1

  quiet_if "$P-server" s0
  ip -n "$P-server" link set s0 up
  ip -n "$P-server" addr add 10.10.2.2/24 dev s0
  ip -n "$P-server" addr add fd10:2::2/64 dev s0 nodad
  ip -n "$P-server" route add default via 10.10.2.1
  ip -n "$P-server" -6 route add default via fd10:2::1

  ip netns exec "$P-server" ip link add link s0 name m1 type macvlan mode bridge
  ip netns exec "$P-server" ip link set m1 netns "$P-server2"
  quiet_if "$P-server2" m1
  ip -n "$P-server2" link set m1 up
  ip -n "$P-server2" addr add 10.10.2.3/24 dev m1
  ip -n "$P-server2" addr add fd10:2::3/64 dev m1 nodad
  ip -n "$P-server2" route add default via 10.10.2.1
  ip -n "$P-server2" -6 route add default via fd10:2::1
  for ns in "$P-server" "$P-server2"; do
    ip -n "$ns" route add local 10.20.0.0/16 dev lo
    ip -n "$ns" route add local 10.40.0.0/16 dev lo
    ip -n "$ns" -6 route add local fd20::/48 dev lo
  done
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down [prefix]" >&2; exit 2 ;;
esac
