#!/usr/bin/env bash
# The demo: installs what is needed, builds ferryd, and routes real traffic between a client
# and a server namespace through it: ping, a traceroute hop, an HTTP download, IPv6, a TCP
# connection to the node's own kernel over the exception path; then ferryctl (status, a route
# added while traffic runs), a Prometheus server scraping ferryd's metrics, Ferry's counters
# and a clean stop. Run as root on Debian 12.
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

sleep 1.2
echo; echo "== ferryd counters (stats file)"
/usr/bin/python3 - "$WORK/stats.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t = s["total"]
print(f"generation {s['generation']}, neighbours {s['neighbors']}")
for k in ["rx", "tx", "to_kernel", "from_kernel", "arp_replies", "nd_adverts", "echo_replies", "icmp_errors", "solicits"]:
    print(f"  {k:14} {t[k]}")
print(f"  cycles/packet  {t['cycles_per_packet']:.0f}")
for k, v in t.items():
    if k.startswith("drop_") and v:
        print(f"  {k:14} {v}")
PY
echo; echo "== stopping ferryd (SIGINT)"
kill -INT "$FERRY_PID"; wait "$FERRY_PID"; FERRY_PID=
cat "$WORK/ferryd.out"
