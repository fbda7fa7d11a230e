#!/usr/bin/env bash
# Virtual services (issue 6) against the real ferryd: a kernel client, three backend
# namespaces running real HTTP servers (hack/lbsrv.py, each answering with its name), and
# ferryd between them with built-in health checks.
#
#   [client] c0 10.10.1.2/24 (+ .3) ── veth-in [node: ferryd] veth-out ── s0 [b1] 10.10.2.11
#            fd10:1::2/64                                              m1 [b2] 10.10.2.12 (macvlan)
#                                                                      m2 [b3] 10.10.2.13 (macvlan)
# Usage: ci/netns-lb.sh FERRYD WORKERS     (as root; WORKERS 1 or 2)
set -uo pipefail

FERRYD=$(readlink -f "${1:?usage: $0 FERRYD WORKERS}")
FERRYCTL=$(dirname "$FERRYD")/ferryctl
WORKERS=${2:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
P=${FERRY_NETNS_PREFIX:-lb}$WORKERS
WORK=$(mktemp -d /tmp/ferry-lb.XXXXXX)
CFG=$WORK/ferry.yaml
LOG=$WORK/ferryd.log
SOCK=$WORK/ferry.sock
METRICS_PORT=$((19500 + WORKERS))
PY=/usr/bin/python3
CLI="$PY $ROOT/hack/lbcli.py"
passed=0
failed=0
FERRY_PID=
declare -A SRV

C() { ip netns exec "$P-client" "$@"; }
N() { ip netns exec "$P-node" "$@"; }
B() { local b=$1; shift; ip netns exec "$P-$b" "$@"; }
CTL() { N "$FERRYCTL" --socket "$SOCK" "$@"; }
ok() { echo "ok   [lb, $WORKERS worker(s)] $1"; passed=$((passed + 1)); }
fail() { echo "FAIL [lb, $WORKERS worker(s)] $1: $2"; failed=$((failed + 1)); }
jq_() { $PY -c "import json,sys; d=json.loads(sys.argv[1]); print($2)" "$1" 2>/dev/null; }

cleanup() {
  [ -n "$FERRY_PID" ] && kill -INT "$FERRY_PID" 2>/dev/null && wait "$FERRY_PID" 2>/dev/null
  for ns in client node b1 b2 b3; do
    ip netns pids "$P-$ns" 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del "$P-$ns" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

quiet_if() { # ns ifname
  ip netns exec "$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
  ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.accept_dad=0" || true
}

topology() {
  modprobe ipip 2>/dev/null; modprobe ip6_tunnel 2>/dev/null; modprobe fou 2>/dev/null
  for ns in client node b1 b2 b3; do
    ip netns del "$P-$ns" 2>/dev/null
    ip netns add "$P-$ns" && ip -n "$P-$ns" link set lo up
  done
  ip link add "$P-c0" type veth peer name "$P-vin"
  ip link add "$P-s0" type veth peer name "$P-vout"
  ip link set "$P-c0" netns "$P-client" name c0
  ip link set "$P-s0" netns "$P-b1" name s0
  ip link set "$P-vin" netns "$P-node" name veth-in
  ip link set "$P-vout" netns "$P-node" name veth-out
  for i in veth-in veth-out; do
    ip -n "$P-node" link set "$i" up
    quiet_if "$P-node" "$i"
    N nft add table netdev ferry
    N nft "add chain netdev ferry $i { type filter hook ingress device $i priority 0; policy drop; }"
    N sysctl -qw "net.ipv6.conf.$i.disable_ipv6=1"
  done
  quiet_if "$P-client" c0
  ip -n "$P-client" link set c0 up
  ip -n "$P-client" addr add 10.10.1.2/24 dev c0
  ip -n "$P-client" addr add 10.10.1.3/24 dev c0
  ip -n "$P-client" addr add fd10:1::2/64 dev c0 nodad
  ip -n "$P-client" route add default via 10.10.1.1
  ip -n "$P-client" -6 route add default via fd10:1::1
  quiet_if "$P-b1" s0
  ip -n "$P-b1" link set s0 up
  local i=1
  for b in b2 b3; do
    B b1 ip link add link s0 name "m$i" type macvlan mode bridge
    B b1 ip link set "m$i" netns "$P-$b"
    quiet_if "$P-$b" "m$i"
    ip -n "$P-$b" link set "m$i" up
    i=$((i + 1))
  done
  local n=11
  for b in b1 b2 b3; do
    local dev
    dev=$(ip -n "$P-$b" -o link | awk -F': ' '$2 ~ /^(s0|m[0-9])/ { sub(/@.*/, "", $2); print $2 }')
    ip -n "$P-$b" addr add "10.10.2.$n/24" dev "$dev"
    ip -n "$P-$b" addr add "fd10:2::$n/64" dev "$dev" nodad
    ip -n "$P-$b" route add default via 10.10.2.1
    ip -n "$P-$b" -6 route add default via fd10:2::1
    # DR and tunnels: the VIPs on the loopback, never answered in ARP.
    B "$b" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
      net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    ip -n "$P-$b" addr add 10.10.1.102/32 dev lo
    ip -n "$P-$b" addr add 10.10.1.103/32 dev lo
    ip -n "$P-$b" addr add fd10:1::103/128 dev lo
    n=$((n + 1))
  done
  # Tunnel endpoints: the kernel's own (ipip, ip6_tunnel, fou) if it has them, else
  # hack/decap.py, which decapsulates in user space into a TUN device (this machine's
  # kernel is built without them).
  decap b3 ipip tunl0 "ipip" && decap b3 ip6ip6 ip6tnl0 "ip6_tunnel" && decap b2 gue "" "fou"
}

decap() { # backend mode kernel-device module
  if modprobe "$4" 2>/dev/null && [ -n "$3" ] && ip -n "$P-$1" link show "$3" >/dev/null 2>&1; then
    ip -n "$P-$1" link set "$3" up
    B "$1" sysctl -qw "net.ipv4.conf.$3.rp_filter=0" 2>/dev/null
    DECAP="$DECAP $2:kernel"
    return 0
  fi
  ip netns exec "$P-$1" "$PY" "$ROOT/hack/decap.py" "$2" > "$WORK/decap-$2" 2>&1 &
  for _ in $(seq 1 30); do grep -q ready "$WORK/decap-$2" && break; sleep 0.1; done
  DECAP="$DECAP $2:user"
  grep -q ready "$WORK/decap-$2"
}
DECAP=""

server_start() { # backend
  # (Not through B(): $! must be the server itself, which ip netns exec execs.)
  ip netns exec "$P-$1" "$PY" "$ROOT/hack/lbsrv.py" "$1" 8080 8081 > /dev/null 2>&1 &
  SRV[$1]=$!
  for _ in $(seq 1 50); do
    B "$1" ss -Hltn | grep -q ':8080 ' && return 0
    sleep 0.1
  done
  echo "backend $1 did not listen"
}
server_stop() { # backend
  kill "${SRV[$1]}" 2>/dev/null
  wait "${SRV[$1]}" 2>/dev/null
}

BACK3='[{address: 10.10.2.11, port: 8080}, {address: 10.10.2.12, port: 8080}, {address: 10.10.2.13, port: 8080}]'
HEALTH='{type: http, path: /healthz, interval_ms: 500, timeout_ms: 300, rise: 2, fall: 2}'
write_config() {
  local lcores="[0, 1]"
  [ "$WORKERS" = 2 ] && lcores='[0, 1, "2@1"]'
  cat > "$CFG" <<EOF
dpdk:
  lcores: $lcores
  args: ["--in-memory", "--file-prefix=$P", "--log-level=pmd.net.af_packet:warning", "--log-level=pmd.net.tap:error"]
ports:
  - name: front
    devargs: net_af_packet_$P-0,iface=veth-in,qpairs=$WORKERS
    addresses: [10.10.1.1/24, "fd10:1::1/64"]
  - name: back
    devargs: net_af_packet_$P-1,iface=veth-out,qpairs=$WORKERS
    addresses: [10.10.2.1/24, "fd10:2::1/64"]
nat:
  max_flows: 65536
services:
  - {name: rr, vip: 10.10.1.100, port: 80, protocol: tcp, scheduler: rr, backends: $BACK3}
  - name: wrr
    vip: 10.10.1.100
    port: 81
    protocol: tcp
    scheduler: wrr
    backends:
      - {address: 10.10.2.11, port: 8080, weight: 1}
      - {address: 10.10.2.12, port: 8080, weight: 2}
      - {address: 10.10.2.13, port: 8080, weight: 3}
  - {name: sh, vip: 10.10.1.100, port: 82, protocol: tcp, scheduler: sh, backends: $BACK3}
  - {name: sticky, vip: 10.10.1.100, port: 85, protocol: tcp, scheduler: rr, persistence_s: 30, backends: $BACK3}
  - {name: passive, vip: 10.10.1.100, port: 86, protocol: tcp, scheduler: rr, backends: [{address: 10.10.2.11, port: 8080}, {address: 10.10.2.13, port: 8089}], health: {type: tcp, port: 8080, interval_ms: 500, timeout_ms: 300, rise: 2, fall: 2}}
  - {name: web, vip: 10.10.1.100, port: 83, protocol: tcp, scheduler: maglev, backends: $BACK3, health: $HEALTH}
  - {name: full, vip: 10.10.1.101, port: 80, protocol: tcp, scheduler: rr, forward: fullnat, local_addresses: [10.10.2.250], backends: $BACK3}
  - {name: dr, vip: 10.10.1.102, port: 8080, protocol: tcp, scheduler: rr, forward: dr, backends: [{address: 10.10.2.11}, {address: 10.10.2.12}]}
  - {name: tun, vip: 10.10.1.103, port: 8080, protocol: tcp, scheduler: rr, forward: ipip, backends: [{address: 10.10.2.13}]}
  - {name: gue, vip: 10.10.1.103, port: 8081, protocol: tcp, scheduler: rr, forward: gue, backends: [{address: 10.10.2.12}]}
  - name: web6
    vip: "fd10:1::100"
    port: 80
    protocol: tcp
    scheduler: rr
    backends: [{address: "fd10:2::11", port: 8080}, {address: "fd10:2::12", port: 8080}, {address: "fd10:2::13", port: 8080}]
  - {name: tun6, vip: "fd10:1::103", port: 8080, protocol: tcp, scheduler: rr, forward: ipip, backends: [{address: "fd10:2::13"}]}
  - {name: dead, vip: 10.10.1.104, port: 80, protocol: tcp, scheduler: rr, backends: [{address: 10.10.2.13, port: 8089}], health: {type: tcp, interval_ms: 200, timeout_ms: 100, rise: 1, fall: 1}}
EOF
}

start_ferry() {
  ip netns exec "$P-node" "$FERRYD" --config "$CFG" --grpc-socket "$SOCK" \
    --metrics-listen "127.0.0.1:$METRICS_PORT" > "$WORK/ferryd.out" 2> "$LOG" &
  FERRY_PID=$!
  for _ in $(seq 1 100); do
    grep -q "forwarding" "$LOG" && return 0
    kill -0 "$FERRY_PID" 2>/dev/null || { cat "$LOG"; FERRY_PID=; return 1; }
    sleep 0.2
  done
  cat "$LOG"
  return 1
}

count() { jq_ "$1" "d['counts'].get('$2', 0)"; }

t_ping() {
  if C ping -c 2 -i 0.2 -W 1 10.10.1.100 >/dev/null && C ping -6 -c 2 -i 0.2 -W 1 fd10:1::100 >/dev/null; then
    ok "the VIPs answer ping (IPv4 and IPv6)"
  else fail "VIP ping" "no answer"; fi
}

t_rr() {
  local o
  o=$(C $CLI 10.10.1.100 80 300)
  if [ "$(count "$o" b1)/$(count "$o" b2)/$(count "$o" b3)" = 100/100/100 ] && [ "$(jq_ "$o" "d['failed']")" = 0 ]; then
    ok "rr: 300 connections, exactly 100 to each backend"
  else fail "rr" "$o"; fi
}

t_wrr() {
  local o
  o=$(C $CLI 10.10.1.100 81 600)
  if [ "$(count "$o" b1)/$(count "$o" b2)/$(count "$o" b3)" = 100/200/300 ]; then
    ok "wrr 1:2:3: 600 connections split exactly 100/200/300"
  else fail "wrr" "$o"; fi
  # Smooth: the heaviest never takes more than its share in a row.
  local run
  run=$(jq_ "$o" "max(len(list(g)) for _, g in __import__('itertools').groupby(d['order']))")
  if [ "${run:-9}" -le 2 ]; then ok "wrr is smooth (longest run of one backend: $run)"
  else fail "wrr smooth" "longest run $run"; fi
}

# N connections to VIP port PORT from each of the client's two addresses: each address's
# all reach one backend, none fails.
one_backend_per_client() { # port n what message
  local a b
  a=$(C $CLI 10.10.1.100 "$1" "$2" --src 10.10.1.2)
  b=$(C $CLI 10.10.1.100 "$1" "$2" --src 10.10.1.3)
  if [ "$(jq_ "$a" "len(d['counts'])")" = 1 ] && [ "$(jq_ "$b" "len(d['counts'])")" = 1 ] \
    && [ "$(jq_ "$a" "d['failed']")" = 0 ]; then
    ok "$4 ($(jq_ "$a" "list(d['counts'])[0]"), $(jq_ "$b" "list(d['counts'])[0]"))"
  else fail "$3" "$a $b"; fi
}

t_sh() { one_backend_per_client 82 50 sh "sh: each client address always reaches one backend"; }

t_persist() {
  one_backend_per_client 85 30 persistence \
    "persistence (rr, 30 s): each client's 30 connections all reach the backend its first took"
}

t_passive() {
  # b3's service port refuses connections while its health port (8080) answers: the
  # active checks pass, the resets count against it.
  local a b j
  a=$(C $CLI 10.10.1.100 86 20)
  sleep 1.5
  b=$(C $CLI 10.10.1.100 86 30)
  j=$(CTL services passive -o json)
  if [ "$(count "$a" b3)" = 0 ] && [ "$(jq_ "$a" "d['failed']")" -gt 0 ] && [ "$(jq_ "$b" "d['failed']")" = 0 ] \
    && [ "$(count "$b" b1)" = 30 ] && [ "$(jq_ "$j" "d['passive']['backends'][1]['health']")" = down ] \
    && jq_ "$j" "d['passive']['backends'][1]['last_check']" | grep -q ejected; then
    ok "passive health: a backend whose service port refuses ($(jq_ "$a" "d['failed']") of 20) is ejected though its checks pass; the next 30 all succeed"
  else fail "passive" "$a $b $j"; fi
}

t_maglev() {
  local o
  o=$(C $CLI 10.10.1.100 83 1000 --keep 3)
  local c1 c2 c3
  c1=$(count "$o" b1); c2=$(count "$o" b2); c3=$(count "$o" b3)
  if [ "$(jq_ "$o" "d['split']")" = 0 ] && [ "$(jq_ "$o" "d['failed']")" = 0 ] \
    && [ "$c1" -gt 250 ] && [ "$c2" -gt 250 ] && [ "$c3" -gt 250 ]; then
    ok "maglev: 1000 connections of 3 requests each, every one on one backend ($c1/$c2/$c3)"
  else fail "maglev" "$o"; fi
  # The table depends on the backends, not their order: a service with them reversed
  # has the same digest.
  cp "$CFG" "$WORK/rev.yaml"
  echo "  - {name: rev, vip: 10.10.1.100, port: 84, protocol: tcp, scheduler: maglev, backends: [{address: 10.10.2.13, port: 8080}, {address: 10.10.2.12, port: 8080}, {address: 10.10.2.11, port: 8080}]}" >> "$WORK/rev.yaml"
  CTL apply -f "$WORK/rev.yaml" > "$WORK/rev.out" 2>&1
  local j d1 d2
  j=$(CTL services -o json)
  d1=$(jq_ "$j" "d['web']['digest']")
  d2=$(jq_ "$j" "d.get('rev', {}).get('digest')")
  if [ -n "$d1" ] && [ "$d1" = "$d2" ]; then
    ok "maglev digest is the same with the backends in another order ($d1)"
  else fail "maglev digest" "$d1 vs $d2 $(cat "$WORK/rev.out")"; fi
}

t_health() {
  server_stop b2
  local t0=$SECONDS
  sleep 2 # fall x interval + 1 s
  local o
  o=$(C $CLI 10.10.1.100 83 300)
  if [ "$(count "$o" b2)" = 0 ] && [ "$(jq_ "$o" "d['failed']")" = 0 ]; then
    ok "b2 stopped: within fall x interval + 1 s no new connection goes to it; 300 in a row succeed"
  else fail "health down" "$o $(CTL services web)"; fi
  local m
  m=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" --noproxy '*' 2>/dev/null ||
    N curl -s "http://127.0.0.1:$METRICS_PORT/metrics")
  if echo "$m" | grep -q 'ferry_backend_up{service="web",backend="10.10.2.12:8080"} 0'; then
    ok "ferry_backend_up shows b2 down; the transition is logged"
  else fail "metrics down" "$(echo "$m" | grep backend_up | head -5)"; fi
  grep -q "backend down" "$LOG" || fail "health log" "no 'backend down' in the log"
  server_start b2
  sleep 1.6 # rise x interval + a bit
  o=$(C $CLI 10.10.1.100 83 300)
  if [ "$(count "$o" b2)" -gt 50 ]; then
    ok "b2 started again: back after rise probes ($(count "$o" b2) of 300)"
  else fail "health up" "$o $(CTL services web)"; fi
  : "$t0"
}

# A 10 s stream to the rr service in the background; prints its backend, lines, and END.
stream() { # seconds out-file
  C "$PY" - "$1" > "$2" 2>&1 <<'EOF' &
import socket, sys, time
s = socket.create_connection(("10.10.1.100", 80), timeout=5)
s.sendall(b"GET /stream?s=%s HTTP/1.1\r\nHost: x\r\n\r\n" % sys.argv[1].encode())
t0, data, named = time.time(), b"", False
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
        if not named and b"\r\n\r\n" in data and b"\n" in data.split(b"\r\n\r\n", 1)[1]:
            named = True
            print("backend", data.split(b"\r\n\r\n", 1)[1].split()[0].decode(), flush=True)
except Exception as e:
    print("error", type(e).__name__)
body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").split("\n")
print("secs %.1f" % (time.time() - t0))
print("end" if "END" in body else "cut")
EOF
}

# Start a 10 s stream into FILE and, a second later, set NAME and X to its backend's name
# and address, and PID to the stream's.
stream_started() { # file
  stream 10 "$1"
  PID=$!
  sleep 1
  name=$(awk '$1 == "backend" { print $2 }' "$1")
  x=10.10.2.$(( ${name#b} + 10 ))
}

t_drain() {
  local name x PID
  stream_started "$WORK/stream1"
  local pid=$PID
  CTL backend drain rr "$x:8080" > /dev/null
  local o
  o=$(C $CLI 10.10.1.100 80 30)
  wait $pid
  local r
  r=$(cat "$WORK/stream1")
  if [ "$(count "$o" "$name")" = 0 ] && echo "$r" | grep -q "^end" && echo "$r" | grep -q "backend $name"; then
    ok "drain: the stream to $name ran its 10 s to the end while 30 new connections went elsewhere"
  else fail "drain" "$x $r $o"; fi
  CTL backend undrain rr "$x:8080" > /dev/null
}

t_remove() {
  local name x PID
  stream_started "$WORK/stream2"
  local pid=$PID
  CTL backend del rr "$x:8080" > /dev/null
  wait $pid
  local r
  r=$(cat "$WORK/stream2")
  if echo "$r" | grep -q "^cut\|^error"; then
    ok "a removed backend's flow ends: the stream is cut, never finished ($(echo "$r" | tr '\n' ' '))"
  else fail "remove" "$x $r"; fi
  CTL backend add rr "$x:8080" > /dev/null
}

t_fullnat() {
  local o
  o=$(C $CLI 10.10.1.101 80 30)
  if [ "$(jq_ "$o" "list(d['peers'])")" = "['10.10.2.250']" ] && [ "$(jq_ "$o" "len(d['counts'])")" = 3 ]; then
    ok "fullnat: all 3 backends see the local address 10.10.2.250 as the client"
  else fail "fullnat" "$o"; fi
}

t_dr() {
  local o
  o=$(C $CLI 10.10.1.102 8080 20)
  if [ "$(jq_ "$o" "d['failed']")" = 0 ] && [ "$(jq_ "$o" "list(d['locals'])")" = "['10.10.1.102']" ] \
    && [ "$(jq_ "$o" "list(d['peers'])")" = "['10.10.1.2']" ] && [ "$(jq_ "$o" "len(d['counts'])")" = 2 ]; then
    ok "dr: backends get the VIP (on their loopback) and the real client, and answer it themselves"
  else fail "dr" "$o"; fi
}

t_tunnel() { # vip port backend family proto what
  local cap=$WORK/cap$5
  B "$3" timeout 8 tshark -i "$4" -n -l -f "$5" -c 1 -T fields -e ip.src -e ipv6.src > "$cap" 2> "$cap.err" &
  local tp=$!
  for _ in $(seq 1 50); do grep -q "Capturing on" "$cap.err" && break; sleep 0.1; done
  local o
  o=$(C $CLI "$1" "$2" 10)
  wait $tp
  if [ "$(jq_ "$o" "d['failed']")" = 0 ] && [ "$(jq_ "$o" "list(d['counts'])")" = "['$3']" ] \
    && [ "$(jq_ "$o" "list(d['locals'])")" = "['$1']" ] && [ -s "$cap" ]; then
    ok "$6: the backend decapsulates ($(head -1 "$cap" | tr '\t' ' ') on the wire;$DECAP) and answers from the VIP"
  else fail "$6" "$o cap=$(cat "$cap")"; fi
}

t_v6() {
  local o
  o=$(C $CLI fd10:1::100 80 30)
  if [ "$(jq_ "$o" "d['failed']")" = 0 ] && [ "$(jq_ "$o" "len(d['counts'])")" = 3 ] \
    && [ "$(jq_ "$o" "list(d['peers'])")" = "['fd10:1::2']" ]; then
    ok "IPv6 NAT service: 30 connections over 3 backends, each seeing the client"
  else fail "v6 nat" "$o"; fi
}

t_reject() {
  sleep 0.5
  local t0 o
  t0=$(date +%s%N)
  o=$(C $CLI 10.10.1.104 80 3)
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  if jq_ "$o" "list(d['errors'])" | grep -q "ConnectionRefused" && [ "$ms" -lt 1500 ]; then
    ok "no backend up: new connections are refused at once (ICMP port unreachable; $ms ms for 3)"
  else fail "reject" "$ms ms $o"; fi
}

t_views_and_errors() {
  local t
  t=$(CTL services)
  if echo "$t" | grep -q "TCP  10.10.1.100:83 maglev nat (web)" && echo "$t" | grep -q -- "-> 10.10.2.12:8080"; then
    ok "ferryctl services lists services and backends as ipvsadm -Ln does"
  else fail "services view" "$t"; fi
  local e rc=0
  e=$(CTL backend weight rr 10.10.2.99:8080 5 2>&1) || rc=$?
  if [ "$rc" != 0 ] && echo "$e" | grep -q "no backend"; then ok "a change to a backend that does not exist is refused ($e)"
  else fail "bad backend" "rc=$rc $e"; fi
  rc=0
  e=$(CTL backend add nosuch 10.10.2.11:8080 2>&1) || rc=$?
  if [ "$rc" != 0 ] && echo "$e" | grep -q "service"; then ok "a backend for a service that does not exist is refused, naming the field"
  else fail "bad service" "rc=$rc $e"; fi
  local before after
  before=$(CTL get config -o yaml | md5sum)
  cp "$CFG" "$WORK/bad.yaml"
  echo "  - {name: bad, vip: 10.10.1.110, protocol: tcp, scheduler: random}" >> "$WORK/bad.yaml"
  CTL apply -f "$WORK/bad.yaml" > "$WORK/bad.out" 2>&1
  after=$(CTL get config -o yaml | md5sum)
  if grep -q "scheduler" "$WORK/bad.out" && [ "$before" = "$after" ]; then
    ok "a service with a bad scheduler is refused naming the field; the running config is unchanged"
  else fail "bad service apply" "$(cat "$WORK/bad.out")"; fi
}

# ---- run ----
topology || { echo "cannot build the namespaces"; exit 1; }
for b in b1 b2 b3; do server_start $b; done
write_config
if start_ferry; then
  C ping -c 1 -W 1 10.10.1.1 >/dev/null
  sleep 1
  # LB_TESTS: run only these (a debugging aid); LB_HOLD=1: keep everything up at the end.
  for t in ${LB_TESTS:-ping rr wrr sh persist passive maglev fullnat dr ipip gue ip6ip6 v6 reject health drain remove views_and_errors}; do
    case $t in
      ipip) t_tunnel 10.10.1.103 8080 b3 m2 "ip proto 4" "ipip" ;;
      gue) t_tunnel 10.10.1.103 8081 b2 m1 "udp port 6080" "gue" ;;
      ip6ip6) t_tunnel fd10:1::103 8080 b3 m2 "ip6 proto 41" "ip6ip6" ;;
      *) "t_$t" ;;
    esac
  done
  if [ "$failed" != 0 ]; then
    echo "-- counters:"; CTL stats | grep -v " 0$" | head -40
    echo "-- log:"; grep -v "^$" "$LOG" | tail -20
  fi
  [ "${LB_HOLD:-0}" = 1 ] && { echo "holding: $P-*, ctl: ip netns exec $P-node $FERRYCTL --socket $SOCK"; sleep 100000; }
  kill -INT "$FERRY_PID"; wait "$FERRY_PID"; FERRY_PID=
else
  fail "start ferryd" "see the log above"
fi
echo "lb: $passed passed, $failed failed"
[ "$failed" = 0 ]
