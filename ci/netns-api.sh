# The gRPC API, ferryctl and metrics against the running ferryd: sourced by
# ci/netns-tests.sh (its helpers: C, N, S, ok, fail, stat, $WORK, $LOG, $CFG, $FERRY_PID).
# ferryd runs with --grpc-socket $SOCK, --grpc-listen 127.0.0.1:$GRPC_PORT with mTLS (the
# certificates below) and --metrics-listen 127.0.0.1:$METRICS_PORT, in the node namespace.

SOCK=$WORK/ferry.sock
GRPC_PORT=50051
METRICS_PORT=9477
PKI=$WORK/pki
FERRYCTL=$(dirname "$FERRYD")/ferryctl
CTL() { N "$FERRYCTL" --socket "$SOCK" "$@"; }

# A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and a
# client certificate from another CA (refused).
make_pki() {
  mkdir -p "$PKI"
  (
    cd "$PKI" || exit 1
    for ca in ca other-ca; do
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=ferry test $ca" -keyout "$ca.key" -out "$ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
    done
    sign() { # name ca ext
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" \
        -keyout "$1.key" -out "$1.csr" 2>/dev/null
      printf '%s\n' "$3" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 2 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    }
    sign server ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
    sign client ca "extendedKeyUsage=clientAuth"
    sign intruder other-ca "extendedKeyUsage=clientAuth"
  )
  [ -s "$PKI/server.pem" ] && [ -s "$PKI/client.pem" ] && [ -s "$PKI/intruder.pem" ]
}

# ferryd's API flags (start_ferry passes them).
api_flags() {
  echo "--grpc-socket $SOCK --grpc-listen 127.0.0.1:$GRPC_PORT --tls-cert $PKI/server.pem \
--tls-key $PKI/server.key --tls-client-ca $PKI/ca.pem --metrics-listen 127.0.0.1:$METRICS_PORT"
}

json_get() { # json-text python-expression-on-d
  $PY -c "import json,sys; d=json.loads(sys.argv[1]); print($2)" "$1" 2>/dev/null
}

t_api_status() {
  local o perm
  perm=$(command stat -c %a "$SOCK" 2>/dev/null)
  if [ "$perm" = 600 ]; then ok "API: the unix socket is mode 0600"
  else fail "API socket mode" "$perm"; fi
  o=$(CTL status -o json)
  if [ "$(json_get "$o" "sorted(d['generation'])")" = "['accepted', 'active', 'published', 'reclaimed']" ] &&
     [ "$(json_get "$o" "len(d['workers']) == $WORKERS and all({'id','lcore','generation'} <= set(w) for w in d['workers'])")" = True ] &&
     [ "$(json_get "$o" "[p['name'] for p in d['ports']]")" = "['inside', 'outside']" ] &&
     [ "$(json_get "$o" "d['ports'][0]['link_up']")" = True ]; then
    ok "ferryctl status -o json: generations, $WORKERS worker(s) with lcore and generation, ports with link"
  else fail "ferryctl status json" "$o"; fi
  o=$(CTL status)
  if grep -q "^generation: accepted" <<<"$o" && grep -q "^inside .*net_af_packet.* up " <<<"$o"; then
    ok "ferryctl status: a table for people"
  else fail "ferryctl status table" "$o"; fi
}

# The running config printed by the API re-applies unchanged, and prints the same again.
t_api_get_config() {
  local v0 v1 rc=0
  CTL get config > "$WORK/got.yaml" || rc=$?
  v0=$(json_get "$(CTL status -o json)" "d['config_version']")
  CTL apply -f "$WORK/got.yaml" > "$WORK/apply.out" 2>&1 || rc=$?
  CTL get config > "$WORK/got2.yaml" || rc=$?
  v1=$(json_get "$(CTL status -o json)" "d['config_version']")
  if [ "$rc" = 0 ] && grep -q "prefix: 10.20.0.0/16" "$WORK/got.yaml" &&
     cmp -s "$WORK/got.yaml" "$WORK/got2.yaml" && [ "$v1" = $((v0 + 1)) ]; then
    ok "ferryctl get config -o yaml re-applies unchanged (config version $v0 -> $v1)"
  else fail "get config round trip" "rc=$rc v $v0 -> $v1 $(cat "$WORK/apply.out"; diff "$WORK/got.yaml" "$WORK/got2.yaml")"; fi
}

# A route added by ferryctl while a ping flow runs: the new prefix answers, no loss.
t_api_route_add() {
  local o rc=0
  CTL route del 10.40.0.0/16 --wait > /dev/null 2>&1
  o=$(C ping -c 1 -W 1 10.40.0.1 2>&1)
  if grep -q "Unreachable" <<<"$o"; then ok "ferryctl route del: 10.40.0.1 is net-unreachable"
  else fail "route del" "$o"; fi
  background_ping
  sleep 0.5
  o=$(CTL route add 10.40.0.0/16 via 10.10.2.2 10.10.2.3 --wait 2>&1) || rc=$?
  if [ "$rc" = 0 ] && grep -q "is active on every worker" <<<"$o"; then
    ok "ferryctl route add ... --wait: applied and active on every worker"
  else fail "route add" "rc=$rc $o"; fi
  o=$(C ping -c 3 -i 0.1 -W 1 10.40.0.1 2>&1)
  if grep -q " 0% packet loss" <<<"$o"; then ok "ferryctl route add: 10.40.0.1 answers at once"
  else fail "route add effect" "$o"; fi
  o=$(CTL routes)
  if grep -q "^10.40.0.0/16" <<<"$o" && grep -q "nexthop via 10.10.2.3" <<<"$o" &&
     grep -q "^10.10.1.0/24 dev inside" <<<"$o"; then
    ok "ferryctl routes: like ip route (ECMP next hops, connected subnets)"
  else fail "ferryctl routes" "$o"; fi
  o=$(CTL neighbors)
  if grep -qE "^10.10.2.2 dev outside lladdr [0-9a-f:]{17} (REACHABLE|STALE)" <<<"$o"; then
    ok "ferryctl neighbors: like ip neigh"
  else fail "ferryctl neighbors" "$o"; fi
  wait "$BG_PING"
  if grep -q " 0% packet loss" "$WORK/bgping"; then ok "ferryctl route changes: no loss on the running flow (200 pings)"
  else fail "route add loss" "$(tail -2 "$WORK/bgping")"; fi
}

# Bad applies are refused naming the resource and field; nothing changes; no loss.
t_api_bad() {
  local v0 v1 o rc f
  v0=$(json_get "$(CTL status -o json)" "d['config_version']")
  background_ping
  sleep 0.3
  bad_apply() { # description expected-field ferryctl-args...
    local what=$1 field=$2
    shift 2
    rc=0
    o=$(CTL "$@" 2>&1) || rc=$?
    if [ "$rc" = 1 ] && grep -qF "$field" <<<"$o" && grep -q "nothing applied" <<<"$o"; then
      ok "bad apply refused (exit 1): $what names $field"
    else fail "bad apply: $what" "rc=$rc $o"; fi
  }
  CTL get config > "$WORK/base.yaml"
  # An unknown port, a bad MAC, a duplicate prefix: whole-state applies of edited files.
  f=$WORK/bad-port.yaml
  $PY - "$WORK/base.yaml" "$f" <<'PYEOF'
import sys
t = open(sys.argv[1]).read()
t = t.replace("tuning:", 'neighbors:\n- address: 10.10.2.9\n  mac: "02:00:00:00:00:09"\n  port: nowhere\ntuning:', 1)
open(sys.argv[2], "w").write(t)
PYEOF
  bad_apply "unknown port" "neighbors[0].port" apply -f "$f"
  sed 's/port: nowhere/port: outside/; s/mac: "02:00:00:00:00:09"/mac: "02:00:00:00:09"/' "$f" > "$WORK/bad-mac.yaml"
  bad_apply "bad MAC" "neighbors[0].mac" apply -f "$WORK/bad-mac.yaml"
  $PY - "$WORK/base.yaml" "$WORK/dup.yaml" <<'PYEOF'
import sys
t = open(sys.argv[1]).read()
t = t.replace("routes:\n", "routes:\n- prefix: 10.20.0.0/16\n  via: [10.10.2.2]\n", 1)
open(sys.argv[2], "w").write(t)
PYEOF
  bad_apply "duplicate prefix" "routes[1].prefix" apply -f "$WORK/dup.yaml"
  bad_apply "host bits set" "changes[0].upsert_route.prefix" route add 10.46.0.1/16 via 10.10.2.2
  # Over a documented limit: 65 next hops (at most 64 in an ECMP group).
  local hops=""
  for i in $(seq 10 74); do hops="$hops 10.10.2.$i"; done
  # shellcheck disable=SC2086
  bad_apply "65 next hops" "changes[0].upsert_route.via" route add 10.47.0.0/16 via $hops
  v1=$(json_get "$(CTL status -o json)" "d['config_version']")
  wait "$BG_PING"
  if [ "$v0" = "$v1" ] && grep -q " 0% packet loss" "$WORK/bgping"; then
    ok "bad applies: config version stays $v0, no loss on the running flow (200 pings)"
  else fail "bad applies changed something" "version $v0 -> $v1 $(tail -2 "$WORK/bgping")"; fi
}

t_api_base_and_dry_run() {
  local o rc=0 acc v0 v1
  acc=$(json_get "$(CTL status -o json)" "d['generation']['accepted']")
  v0=$(json_get "$(CTL status -o json)" "d['config_version']")
  o=$(CTL route add 10.48.0.0/16 via 10.10.2.2 --dry-run 2>&1) || rc=$?
  v1=$(json_get "$(CTL status -o json)" "d['config_version']")
  if [ "$rc" = 0 ] && grep -q "dry run: would apply" <<<"$o" && [ "$v0" = "$v1" ] &&
     ! grep -q "^10.48.0.0/16" <<<"$(CTL routes)"; then
    ok "dry run: answered as an apply, nothing changed"
  else fail "dry run" "rc=$rc v $v0 -> $v1 $o"; fi
  rc=0
  o=$(CTL route add 10.48.0.0/16 via 10.10.2.2 --base-generation $((acc - 1)) 2>&1) || rc=$?
  if [ "$rc" = 3 ] && grep -q "stale base: --base-generation $((acc - 1)) given, the running config is at generation $acc" <<<"$o" &&
     ! grep -q "^10.48.0.0/16" <<<"$(CTL routes)"; then
    ok "stale base refused (exit 3) with both generations; nothing applied"
  else fail "stale base" "rc=$rc $o"; fi
  rc=0
  o=$(CTL -o json route add 10.48.0.0/16 via 10.10.2.2 --base-generation "$acc" 2>&1) || rc=$?
  if [ "$rc" = 0 ] && [ "$(json_get "$o" "d['result']")" = ACK ] &&
     [ "$(json_get "$o" "d['generation'] > $acc")" = True ]; then
    ok "apply against the current base: ACK with a new generation"
  else fail "current base" "rc=$rc $o"; fi
  CTL route del 10.48.0.0/16 >/dev/null
}

# Two clients at once, both against the same base: each gets a definite answer, exactly
# one is accepted. Two without a base: both accepted, in some order.
t_api_concurrent() {
  local acc r1 r2 o1 o2
  acc=$(json_get "$(CTL status -o json)" "d['generation']['accepted']")
  CTL route add 10.51.0.0/16 via 10.10.2.2 --base-generation "$acc" > "$WORK/c1" 2>&1 & local p1=$!
  CTL route add 10.52.0.0/16 via 10.10.2.2 --base-generation "$acc" > "$WORK/c2" 2>&1 & local p2=$!
  r1=0; wait $p1 || r1=$?
  r2=0; wait $p2 || r2=$?
  if { [ "$r1" = 0 ] && [ "$r2" = 3 ]; } || { [ "$r1" = 3 ] && [ "$r2" = 0 ]; }; then
    ok "two clients on the same base at once: one ACK, one stale base"
  else fail "concurrent same base" "rc $r1 $r2: $(cat "$WORK/c1" "$WORK/c2")"; fi
  CTL -o json route add 10.53.0.0/16 via 10.10.2.2 > "$WORK/c1" 2>&1 & p1=$!
  CTL -o json route add 10.54.0.0/16 via 10.10.2.2 > "$WORK/c2" 2>&1 & p2=$!
  r1=0; wait $p1 || r1=$?
  r2=0; wait $p2 || r2=$?
  o1=$(json_get "$(cat "$WORK/c1")" "d['generation']")
  o2=$(json_get "$(cat "$WORK/c2")" "d['generation']")
  if [ "$r1" = 0 ] && [ "$r2" = 0 ] && [ -n "$o1" ] && [ -n "$o2" ] && [ "$o1" != "$o2" ] &&
     grep -q "^10.53.0.0/16" <<<"$(CTL routes)" && grep -q "^10.54.0.0/16" <<<"$(CTL routes)"; then
    ok "two clients at once: both accepted, as generations $o1 and $o2"
  else fail "concurrent" "rc $r1 $r2 gen $o1 $o2"; fi
  for p in 10.51 10.52 10.53 10.54; do CTL route del $p.0.0/16 >/dev/null 2>&1; done
}

# Generic gRPC tooling works: Google's grpcio, without Ferry's stubs, gets SERVING from the
# standard health service and lists and describes ferry.v1.Ferry through reflection.
t_api_generic() {
  local o rc=0
  o=$(N $PY "$ROOT/hack/grpc_generic.py" "$SOCK" 2>&1) || rc=$?
  if [ "$rc" = 0 ]; then ok "generic gRPC client (grpcio): grpc.health.v1 SERVING, reflection lists and describes ferry.v1.Ferry"
  else fail "generic gRPC client" "rc=$rc $o"; fi
}

# A client that goes away in the middle of a large request changes nothing.
t_api_disconnect() {
  local v0 v1
  v0=$(json_get "$(CTL status -o json)" "d['config_version']")
  if N $PY "$ROOT/hack/grpc_partial.py" "$SOCK"; then
    sleep 0.5
    v1=$(json_get "$(CTL status -o json)" "d['config_version']")
    if [ "$v0" = "$v1" ] && kill -0 "$FERRY_PID" && CTL status >/dev/null; then
      ok "a client that disconnects mid-request changes nothing (config version $v0); ferryd serves on"
    else fail "disconnect mid-request" "version $v0 -> $v1"; fi
  else fail "disconnect mid-request" "hack/grpc_partial.py failed"; fi
}

# SIGHUP (the file) and API applies interleaved: generations only increase.
t_api_sighup_interleave() {
  local gens="" g i
  cp "$CFG" "$WORK/keep.yaml"
  for i in 1 2 3; do
    g=$(json_get "$(CTL -o json route add 10.5$i.0.0/16 via 10.10.2.2)" "d['generation']")
    gens="$gens $g"
    kill -HUP "$FERRY_PID"
    sleep 0.4
    g=$(grep "config reloaded" "$LOG" | tail -1 | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'generation=[0-9]*' | grep -o '[0-9]*$')
    gens="$gens $g"
  done
  if $PY -c "import sys; g=[int(x) for x in sys.argv[1:]]; sys.exit(0 if len(g)==6 and all(a<b for a,b in zip(g,g[1:])) else 1)" $gens &&
     ! grep -q "^10.53.0.0/16" <<<"$(CTL routes)"; then
    ok "SIGHUP and API applies interleaved: generations$gens increase; the file replaces API changes"
  else fail "interleave" "generations:$gens"; fi
}

# mTLS on TCP: a client with a certificate from the CA is served; without one, or with one
# from another CA, it is refused. Plaintext TCP off loopback is refused at start.
t_api_mtls() {
  local o rc=0 url=https://127.0.0.1:$GRPC_PORT
  o=$(N "$FERRYCTL" --server "$url" --tls-ca "$PKI/ca.pem" --tls-cert "$PKI/client.pem" \
      --tls-key "$PKI/client.key" status -o json 2>&1) || rc=$?
  if [ "$rc" = 0 ] && [ -n "$(json_get "$o" "d['generation']['active']")" ]; then
    ok "mTLS: a client with a certificate from the client CA is served"
  else fail "mTLS good client" "rc=$rc $o"; fi
  rc=0
  o=$(N "$FERRYCTL" --server "$url" --tls-ca "$PKI/ca.pem" status 2>&1) || rc=$?
  if [ "$rc" != 0 ]; then ok "mTLS: a client without a certificate is refused (exit $rc)"
  else fail "mTLS no client cert" "$o"; fi
  rc=0
  o=$(N "$FERRYCTL" --server "$url" --tls-ca "$PKI/ca.pem" --tls-cert "$PKI/intruder.pem" \
      --tls-key "$PKI/intruder.key" status 2>&1) || rc=$?
  if [ "$rc" != 0 ]; then ok "mTLS: a certificate from another CA is refused (exit $rc)"
  else fail "mTLS other CA" "$o"; fi
  rc=0
  o=$(N "$FERRYCTL" --server "http://127.0.0.1:$GRPC_PORT" status 2>&1) || rc=$?
  if [ "$rc" != 0 ]; then ok "mTLS: plaintext to the TLS port is refused (exit $rc)"
  else fail "mTLS plaintext" "$o"; fi
}

t_api_bad_listen() {
  local rc=0 o
  o=$(N "$FERRYD" --config "$CFG" --no-grpc-socket --grpc-listen 10.10.1.1:50052 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] && grep -q "plaintext TCP only on loopback" <<<"$o"; then
    ok "plaintext gRPC on a non-loopback address refused at start (exit $rc)"
  else fail "plaintext non-loopback" "rc=$rc $(tail -2 <<<"$o")"; fi
}

# A real Prometheus server scrapes /metrics; a series is read back through its query API.
t_prometheus() {
  local dir=$WORK/prom o n
  mkdir -p "$dir"
  cat > "$dir/prometheus.yml" <<EOF
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: ferry
    static_configs: [{ targets: ["127.0.0.1:$METRICS_PORT"] }]
EOF
  N prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address=127.0.0.1:9090 > "$dir/log" 2>&1 &
  local prom=$!
  n=""
  for _ in $(seq 1 40); do
    sleep 0.5
    o=$(N curl -sS -m 2 "http://127.0.0.1:9090/api/v1/query?query=ferry_rx_packets_total" 2>/dev/null)
    n=$(json_get "$o" "sum(float(r['value'][1]) for r in d['data']['result'] if 'worker' in r['metric'])")
    [ -n "$n" ] && [ "${n%.*}" -gt 0 ] 2>/dev/null && break
  done
  if [ -n "$n" ] && [ "${n%.*}" -gt 0 ] 2>/dev/null; then
    ok "Prometheus scraped /metrics: ferry_rx_packets_total{worker=...} reads back $n"
  else fail "prometheus" "$o $(tail -3 "$dir/log")"; fi
  o=$(N curl -sS -m 2 "http://127.0.0.1:9090/api/v1/query?query=ferry_generation%7Bkind%3D%22active%22%7D")
  if [ "$(json_get "$o" "int(d['data']['result'][0]['value'][1]) >= 1")" = True ]; then
    ok "Prometheus: generations as gauges (ferry_generation{kind=\"active\"})"
  else fail "prometheus generation" "$o"; fi
  o=$(N curl -sS -m 2 "http://127.0.0.1:$METRICS_PORT/metrics")
  if grep -q '^ferry_dropped_packets_total{worker="0",reason="no_route"}' <<<"$o" &&
     grep -q '^ferry_apply_duration_seconds_bucket' <<<"$o" &&
     grep -q '^ferry_port_rx_packets_total{port="inside"}' <<<"$o"; then
    ok "/metrics: drops by reason, per-port counters, the apply latency histogram"
  else fail "metrics text" "$(head -5 <<<"$o")"; fi
  kill "$prom" 2>/dev/null; wait "$prom" 2>/dev/null
}
