#!/usr/bin/env bash
# The demo: installs what is needed, builds ferryd, and routes real traffic between a client
# and a server namespace through it: ping, a traceroute hop, an HTTP download, IPv6, a TCP
# connection to the node's own kernel over the exception path; then ferryctl (status, a route
# added while traffic runs), a Prometheus server scraping ferryd's metrics, NAT rules applied
# live (SNAT, DNAT, traceroute through NAT, ferryctl nat and conntrack), a virtual service
# over two HTTP backends with health checks (one stopped: new connections avoid it), Ferry's
# counters and a clean stop. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
./hack/setup.sh
echo "== building ferryd and ferryctl (release)"
cargo build --release --bin ferryd --bin ferryctl 2>&1 | tail -1

P=fy
WORK=$(mktemp -d /tmp/ferry-demo.XXXXXX)
FERRY_PID=
cleanup() {
  [ -n "$FERRY_PID" ] && kill -INT "$FERRY_PID" 2>/dev/null && wait "$FERRY_PID" 2>/dev/null || true
  for ns in $P-client $P-node $P-server $P-server2; do ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true; done
  ./hack/netns.sh down $P
  rm -rf "$WORK"
}
trap cleanup EXIT
run() { echo; echo "\$ $*"; "$@"; }

echo "== namespaces: $P-client (10.10.1.2) -- ferryd in $P-node -- $P-server (10.10.2.2)"
./hack/netns.sh up $P
echo "== starting ferryd with configs/demo.yaml"
ip netns exec $P-node target/release/ferryd --config configs/demo.yaml \
  --stats-file "$WORK/stats.json" --grpc-socket "$WORK/ferry.sock" \
  --metrics-listen 127.0.0.1:9477 > "$WORK/ferryd.out" 2> "$WORK/ferryd.log" &
FERRY_PID=$!
for _ in $(seq 1 100); do grep -q forwarding "$WORK/ferryd.log" && break; sleep 0.2; done
grep -E "port up|exception path|tables compiled|forwarding" "$WORK/ferryd.log" | sed 's/\x1b\[[0-9;]*m//g'

run ip netns exec $P-client ping -c 4 -i 0.2 10.10.2.2
run ip netns exec $P-client ping -6 -c 3 -i 0.2 fd10:2::2
run ip netns exec $P-client traceroute -n -q 1 -w 1 10.10.2.2

mkdir -p "$WORK/www"
head -c 50000000 /dev/urandom > "$WORK/www/file.bin"
ip netns exec $P-server /usr/bin/python3 hack/httpd.py 10.10.2.2 8080 "$WORK/www" &
ip netns exec $P-node /usr/bin/python3 hack/httpd.py 10.10.1.1 8081 "$WORK/www" &
sleep 1
run ip netns exec $P-client curl -sS -o "$WORK/got.bin" -w "downloaded %{size_download} bytes at %{speed_download} bytes/s\n" http://10.10.2.2:8080/file.bin
echo "sha256 sent: $(sha256sum < "$WORK/www/file.bin" | cut -c1-16)…  received: $(sha256sum < "$WORK/got.bin" | cut -c1-16)…"
echo; echo "# a TCP connection to the node itself (Ferry hands it to the kernel's fx-inside TAP)"
run ip netns exec $P-client curl -sS -o /dev/null -w "node kernel answered HTTP %{http_code}\n" http://10.10.1.1:8081/file.bin

echo; echo "== ferryctl: the gRPC API over ferryd's unix socket"
ferryctl() { ip netns exec $P-node target/release/ferryctl --socket "$WORK/ferry.sock" "$@"; }
run ferryctl status
echo; echo "# 10.40.0.0/16 has no route yet:"
run ip netns exec $P-client ping -c 1 -W 1 10.40.0.1 || true
run ferryctl route add 10.40.0.0/16 via 10.10.2.2 --wait
run ip netns exec $P-client ping -c 3 -i 0.2 10.40.0.1
run ferryctl routes -f 4
run ferryctl neighbors

echo; echo "== Prometheus (Debian's prometheus) scraping ferryd's /metrics"
mkdir -p "$WORK/prom"
printf '%s\n' 'global: { scrape_interval: 1s }' 'scrape_configs:' '  - job_name: ferry' \
  '    static_configs: [{ targets: ["127.0.0.1:9477"] }]' > "$WORK/prom/prometheus.yml"
ip netns exec $P-node prometheus --config.file="$WORK/prom/prometheus.yml" \
  --storage.tsdb.path="$WORK/prom/data" --web.listen-address=127.0.0.1:9090 > "$WORK/prom/log" 2>&1 &
PROM_PID=$!
q=""
for _ in $(seq 1 30); do
  sleep 0.5
  q=$(ip netns exec $P-node curl -s "http://127.0.0.1:9090/api/v1/query?query=ferry_rx_packets_total" || true)
  grep -q '"worker"' <<<"$q" && break
done
echo "\$ curl 'http://127.0.0.1:9090/api/v1/query?query=ferry_rx_packets_total'   # Prometheus's query API"
echo "$q"
echo "\$ curl -s http://127.0.0.1:9477/metrics | grep -E '^ferry_(rx_packets|generation)'"
ip netns exec $P-node curl -s http://127.0.0.1:9477/metrics | grep -E '^ferry_(rx_packets|generation)' || true
kill $PROM_PID 2>/dev/null; wait $PROM_PID 2>/dev/null || true

echo; echo "== NAT: SNAT and DNAT rules applied while ferryd runs (ferryctl apply -f)"
cp configs/demo.yaml "$WORK/demo-nat.yaml"
cat >> "$WORK/demo-nat.yaml" <<'YAML'
nat:
  snat:
    - name: egress
      match: {from: [10.10.1.0/24, "fd10:1::/64"], out: outside}
      to: {addresses: [10.10.2.100, "fd10:2::100"]}
  dnat:
    - name: web
      match: {address: 10.10.2.1, protocol: tcp, port: 8088}
      to: {address: 10.10.1.2, port: 8088}
YAML
run ferryctl apply -f "$WORK/demo-nat.yaml" --wait
# A server that says whom it sees: the client's SNAT'd address from the server side; the
# server's real address through DNAT from the client side.
peer_server() { # ns addr port
  ip netns exec "$1" /usr/bin/python3 -c "
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('$2', $3)); s.listen(4); s.settimeout(10)
c, a = s.accept(); c.sendall(('you are %s port %d\\n' % a).encode()); c.close()" &
  PEERS+=($!)
}
PEERS=()
peer_server $P-server 10.10.2.2 9000; sleep 0.5
run ip netns exec $P-client /usr/bin/python3 -c "import socket; print('server 10.10.2.2:9000 says:', socket.create_connection(('10.10.2.2', 9000), timeout=3).recv(100).decode().strip())"
peer_server $P-client 10.10.1.2 8088; sleep 0.5
run ip netns exec $P-server /usr/bin/python3 -c "import socket; print('10.10.2.1:8088 (DNAT to 10.10.1.2) says:', socket.create_connection(('10.10.2.1', 8088), timeout=3).recv(100).decode().strip())"
run ip netns exec $P-client traceroute -n -q 1 -w 1 -m 3 10.10.2.2
run ferryctl nat
run ferryctl conntrack
wait "${PEERS[@]}" 2>/dev/null || true

echo; echo "== A virtual service: a VIP over two HTTP backends, with health checks (issue 6)"
cp "$WORK/demo-nat.yaml" "$WORK/demo-lb.yaml"
cat >> "$WORK/demo-lb.yaml" <<'YAML'
services:
  - name: web
    vip: 10.10.1.100
    port: 80
    protocol: tcp
    scheduler: rr
    backends: [{address: 10.10.2.2, port: 8090}, {address: 10.10.2.3, port: 8090}]
    health: {type: http, path: /healthz, interval_ms: 500, timeout_ms: 300, rise: 2, fall: 2}
YAML
# Each backend answers with its name, the client it sees and the address it was reached at.
ip netns exec $P-server /usr/bin/python3 hack/lbsrv.py server 8090 > /dev/null 2>&1 &
LB1=$!
ip netns exec $P-server2 /usr/bin/python3 hack/lbsrv.py server2 8090 > /dev/null 2>&1 &
LB2=$!
sleep 0.5
run ferryctl apply -f "$WORK/demo-lb.yaml" --wait
run ip netns exec $P-client /usr/bin/python3 hack/lbcli.py 10.10.1.100 80 10
run ferryctl services
echo "(server2's backend stops: its health checks fail twice, and new connections avoid it)"
kill $LB2; wait $LB2 2>/dev/null || true
sleep 2
run ip netns exec $P-client /usr/bin/python3 hack/lbcli.py 10.10.1.100 80 10
run ferryctl services --stats
kill $LB1; wait $LB1 2>/dev/null || true

sleep 1.2
echo; echo "== ferryd counters (stats file)"
/usr/bin/python3 - "$WORK/stats.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t = s["total"]
print(f"generation {s['generation']}, neighbours {s['neighbors']}")
for k in ["rx", "tx", "to_kernel", "from_kernel", "arp_replies", "nd_adverts", "echo_replies", "icmp_errors", "solicits", "nat_created", "nat_flows"]:
    print(f"  {k:14} {t[k]}")
print(f"  cycles/packet  {t['cycles_per_packet']:.0f}")
for k, v in t.items():
    if k.startswith("drop_") and v:
        print(f"  {k:14} {v}")
PY
echo; echo "== stopping ferryd (SIGINT)"
kill -INT "$FERRY_PID"; wait "$FERRY_PID"; FERRY_PID=
cat "$WORK/ferryd.out"
