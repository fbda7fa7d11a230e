# shellcheck shell=bash
# NAT (SNAT and DNAT with connection tracking) against the real ferryd: sourced by
# ci/netns-tests.sh (its helpers: C, N, S, S2, ok, fail, stat, write_config, start_ferry,
# stop_ferry, warm_up, $CFG, $STATS, $WORK, $LOG, $OUT, $PY, $P, $WORKERS, $ROOT).
#
# run_nat_tests runs after the main suite has stopped its ferryd, and starts ferryd three
# times: with the rules below and the default timeouts and table size, with 2 s timeouts,
# and with the smallest flow table (max_flows 1024).
#
# The servers route 10.10.1.0/24 back through Ferry anyway, so what proves SNAT is the
# peer the server sees: the pool's 10.10.2.100 / fd10:2::100, never 10.10.1.2 / fd10:1::2.
# Ports used here (the main suite's servers may still run on 8080 and 8081): httpd on
# 8090, the peer server (natpeer.py) on 9200 (TCP and UDP) and 80 (TCP, the DNAT target).

NAT_POOL4=10.10.2.100
NAT_POOL6=fd10:2::100
NAT_PEER=$WORK/natpeer.py
NAT_CLI=$WORK/natcli.py
NAT_WWW=$WORK/natwww
NAT_BG=()

# The NAT config: write_config's ports and routes, plus the rules and EXTRA (more `nat:`
# keys, indented by two).
nat_config() { # extra
  write_config "nat:
  snat:
    - name: egress
      match: {from: [10.10.1.0/24, \"fd10:1::/64\"], out: outside}
      to: {addresses: [$NAT_POOL4, \"$NAT_POOL6\"], ports: \"1024-65535\"}
  dnat:
    - name: web
      match: {address: 10.10.2.1, protocol: tcp, port: 8080}
      to: {address: 10.10.1.2, port: 80}
$1"
}

# Run a command in a namespace in the background (ip netns exec execs it: $! is the
# command itself), to be stopped by nat_bg_stop.
nat_bg() { # ns command...
  ip netns exec "$@" &
  NAT_BG+=($!)
}
nat_bg_stop() {
  [ ${#NAT_BG[@]} = 0 ] && return
  kill "${NAT_BG[@]}" 2>/dev/null
  wait "${NAT_BG[@]}" 2>/dev/null
  NAT_BG=()
}

# Wait (up to 5 s) until something listens on TCP ADDR:PORT in namespace NS.
nat_wait_listen() { # ns addr port
  local want=$2:$3 _
  [[ "$2" == *:* ]] && want=[$2]:$3
  for _ in $(seq 1 50); do
    ip netns exec "$1" ss -Hltn | awk -v w="$want" '$4 == w { f = 1 } END { exit !f }' && return 0
    sleep 0.1
  done
  echo "nothing listens on $want in $1"
  return 1
}

# The peer server in NS on ADDR:PORT (TCP and UDP), ready when this returns.
nat_peer() { # ns addr port
  nat_bg "$1" "$PY" "$NAT_PEER" "$2" "$3"
  nat_wait_listen "$1" "$2" "$3"
}

# A counter of this suite's nft table in a server namespace.
nat_counter() { # ns name
  ip netns exec "$1" nft list counter inet ferrynat "$2" |
    awk '/packets/ { for (i=1;i<=NF;i++) if ($i=="packets") print $(i+1) }'
}

# Seconds since T0 (date +%s.%N), to a tenth.
nat_since() { # t0
  awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

# Per-worker values of a counter, "a/b".
nat_wstat() { # key
  $PY -c "import json; print('/'.join(str(w.get('$1', 0)) for w in json.load(open('$STATS'))['workers']))" 2>/dev/null || echo "?"
}

# What the server sees, counted by source: echo requests and TCP to 8090 from the pool
# address or from the inside address; and UDP to 9299 (counted and dropped: the table-full
# flood needs no answers).
nat_nft_setup() {
  ip netns exec "$P-server" nft -f - <<EOF
table inet ferrynat {}
delete table inet ferrynat
table inet ferrynat {
  counter ping4_pool {}
  counter ping4_inside {}
  counter ping6_pool {}
  counter ping6_inside {}
  counter tcp4_pool {}
  counter tcp4_inside {}
  counter tcp6_pool {}
  counter tcp6_inside {}
  counter flood {}
  chain input {
    type filter hook input priority 0;
    ip saddr $NAT_POOL4 icmp type echo-request counter name ping4_pool
    ip saddr 10.10.1.2 icmp type echo-request counter name ping4_inside
    ip6 saddr $NAT_POOL6 icmpv6 type echo-request counter name ping6_pool
    ip6 saddr fd10:1::2 icmpv6 type echo-request counter name ping6_inside
    ip saddr $NAT_POOL4 tcp dport 8090 counter name tcp4_pool
    ip saddr 10.10.1.2 tcp dport 8090 counter name tcp4_inside
    ip6 saddr $NAT_POOL6 tcp dport 8090 counter name tcp6_pool
    ip6 saddr fd10:1::2 tcp dport 8090 counter name tcp6_inside
    udp dport 9299 counter name flood drop
  }
}
EOF
}

# The peer server and the client, as files (they run in the namespaces, in the background).
nat_write_py() {
  cat > "$NAT_PEER" <<'EOF'
# natpeer.py ADDR PORT: TCP and UDP on ADDR:PORT. TCP: sends "PEER-IP PEER-PORT\n" on
# accept, then echoes. UDP: answers "PEER-IP PEER-PORT LENGTH\n", followed by the datagram
# itself if it starts with ECHO.
import resource, selectors, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
addr, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
sel = selectors.DefaultSelector()
u = socket.socket(fam, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
u.bind((addr, port))
u.setblocking(False)
t = socket.socket(fam, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((addr, port))
t.listen(4096)
t.setblocking(False)
sel.register(t, selectors.EVENT_READ, "accept")
sel.register(u, selectors.EVENT_READ, "udp")
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if key.data == "accept":
                c, a = s.accept()
                c.setblocking(False)
                c.send(("%s %d\n" % (a[0], a[1])).encode())
                sel.register(c, selectors.EVENT_READ, "conn")
            elif key.data == "udp":
                d, a = s.recvfrom(70000)
                r = ("%s %d %d\n" % (a[0], a[1], len(d))).encode()
                s.sendto(r + d if d.startswith(b"ECHO") else r, a)
            else:
                d = s.recv(65536)
                if d:
                    s.sendall(d)
                else:
                    sel.unregister(s)
                    s.close()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            if key.data == "conn":
                sel.unregister(s)
                s.close()
EOF
  cat > "$NAT_CLI" <<'EOF'
# natcli.py MODE ...: the client side of the NAT tests; prints one line of what it saw.
import json, os, resource, selectors, socket, struct, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
mode, args = sys.argv[1], sys.argv[2:]


def fam(a):
    return socket.AF_INET6 if ":" in a else socket.AF_INET


def pattern(n):
    return bytes((i * 7 + n) % 251 for i in range(n))


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s ^ 0xFFFF


def udp_ask(s, dst, data):
    """Send DATA to DST; the peer's answer: (header words, body, answer's source)."""
    s.sendto(data, dst)
    r, a = s.recvfrom(70000)
    h, _, body = r.partition(b"\n")
    return h.decode().split(), body, a


if mode == "udp":  # ADDR PORT: the mapping the peer saw
    addr, port = args[0], int(args[1])
    s = socket.socket(fam(addr), socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        h, _, a = udp_ask(s, (addr, port), b"hello")
        print("%s %s from=%s:%d" % (h[0], h[1], a[0], a[1]))
    except OSError as e:
        print("error", e)

elif mode == "frag":  # ADDR PORT SIZE: a datagram of SIZE echoed whole
    addr, port, n = args[0], int(args[1]), int(args[2])
    s = socket.socket(fam(addr), socket.SOCK_DGRAM)
    s.settimeout(3)
    data = b"ECHO" + pattern(n - 4)
    try:
        h, body, a = udp_ask(s, (addr, port), data)
        print("%s %s len=%s echo=%s from=%s" % (h[0], h[1], h[2], "ok" if body == data else "BAD(%d)" % len(body), a[0]))
    except OSError as e:
        print("error", e)

elif mode == "eim":  # SPORT PORT ADDR...: one socket to each ADDR; the mappings seen
    sport, port, addrs = int(args[0]), int(args[1]), args[2:]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.10.1.2", sport))
    s.settimeout(3)
    seen = []
    try:
        for a in addrs:
            h, _, src = udp_ask(s, (a, port), b"which")
            seen.append("%s:%s@%s" % (h[0], h[1], src[0]))
    except OSError as e:
        seen.append("error:%s" % e)
    print(" ".join(seen))

elif mode == "tcp":  # ADDR PORT [TIMEOUT]: the peer line, and our own end
    addr, port = args[0], int(args[1])
    s = socket.socket(fam(addr), socket.SOCK_STREAM)
    s.settimeout(float(args[2]) if len(args) > 2 else 5)
    try:
        s.connect((addr, port))
        line = s.makefile("rb").readline().decode().strip()
        print("%s local=%s:%d" % (line, *s.getsockname()[:2]))
    except socket.timeout:
        print("timeout")
    except OSError as e:
        print("error", e)

elif mode == "hold":  # ADDR PORT GOFILE: one connection, used before and after GOFILE appears
    addr, port, go = args[0], int(args[1]), args[2]
    s = socket.socket(fam(addr), socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((addr, port))
        f = s.makefile("rb")
        peer = f.readline().decode().strip()
        s.sendall(b"first\n")
        print("first", "ok" if f.readline() == b"first\n" else "BAD", peer, flush=True)
        for _ in range(300):
            if os.path.exists(go):
                break
            time.sleep(0.1)
        s.sendall(b"second " + b"x" * 3000 + b"\n")
        print("second", "ok" if f.readline() == b"second " + b"x" * 3000 + b"\n" else "BAD", flush=True)
    except OSError as e:
        print("error", e, flush=True)

elif mode == "flood":  # ADDR PORT N BASE: one datagram from each of N source ports
    addr, port, n, base = args[0], int(args[1]), int(args[2]), int(args[3])
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("10.10.1.2", base + i))
        s.sendto(b"f" * 16, (addr, port))
        s.close()
        if i % 50 == 49:
            time.sleep(0.01)
    print(n, "sent")

elif mode == "refused":  # ADDR PORT SPORT: UDP to a closed port; the ICMP error as it came
    addr, port, sport = args[0], int(args[1]), int(args[2])
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    raw.settimeout(2)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("10.10.1.2", sport))
    u.connect((addr, port))
    u.settimeout(3)
    probe = b"ferry-nat-probe"
    u.send(probe)
    try:
        u.recv(100)
        res = "answered"
    except ConnectionRefusedError:
        res = "ECONNREFUSED"
    except socket.timeout:
        res = "timeout"
    seen = "no-icmp-error"
    end = time.time() + 2
    while time.time() < end:
        try:
            pkt, _ = raw.recvfrom(4000)
        except socket.timeout:
            break
        icmp = pkt[(pkt[0] & 15) * 4:]
        q = icmp[8:]
        if icmp[0] != 3 or len(q) < 28 or q[9] != 17:
            continue
        qh = (q[0] & 15) * 4
        udp = q[qh:]
        sp, dp, ulen, _ = struct.unpack("!HHHH", udp[:8])
        if dp != port:
            continue
        pseudo = q[12:20] + b"\0\x11" + struct.pack("!H", ulen)
        udp_ok = len(udp) >= ulen and (udp[6:8] == b"\0\0" or csum(pseudo + udp[:ulen]) == 0)
        ok = lambda c: "ok" if c else "BAD"
        seen = "from=%s to=%s type=3 code=%d quoted=%s:%d->%s:%d icmp_csum=%s ip_csum=%s udp_csum=%s payload=%s" % (
            socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20]), icmp[1],
            socket.inet_ntoa(q[12:16]), sp, socket.inet_ntoa(q[16:20]), dp,
            ok(csum(icmp) == 0), ok(csum(q[:qh]) == 0), ok(udp_ok), ok(udp[8:ulen] == probe))
        break
    print(res, seen)

elif mode == "many":  # ADDR PORT N STATS: N connections open at once, each says hello
    addr, port, n, stats = args[0], int(args[1]), int(args[2]), args[3]
    sel = selectors.DefaultSelector()
    socks, bufs = [], {}
    for i in range(n):
        s = socket.socket(fam(addr), socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((addr, port))
        socks.append(s)
        bufs[s] = b""
        sel.register(s, selectors.EVENT_WRITE, i)
        if i % 50 == 49:
            time.sleep(0.005)
    good, errors, peers, ports = 0, [], set(), set()
    deadline = time.time() + 40
    while good + len(errors) < n and time.time() < deadline:
        for key, ev in sel.select(timeout=1):
            s, i = key.fileobj, key.data
            if ev & selectors.EVENT_WRITE:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    errors.append(os.strerror(err))
                    sel.unregister(s)
                else:
                    s.send(b"hello %d\n" % i)
                    sel.modify(s, selectors.EVENT_READ, i)
                continue
            try:
                d = s.recv(4096)
            except OSError as e:
                d, errors = b"", errors + [str(e)]
            if not d:
                errors.append("closed")
                sel.unregister(s)
                continue
            bufs[s] += d
            lines = bufs[s].split(b"\n")
            if len(lines) >= 3:
                peer = lines[0].decode().split()
                if lines[1] == b"hello %d" % i:
                    good += 1
                    peers.add(peer[0])
                    ports.add(peer[1])
                else:
                    errors.append("bad echo")
                sel.unregister(s)
    # All still open: the stats file (rewritten every second) counts them established.
    est = 0
    for _ in range(30):
        try:
            est = max(est, json.load(open(stats))["total"]["nat_flows_established"])
        except (OSError, ValueError, KeyError):
            pass
        if est >= n:
            break
        time.sleep(0.2)
    print("good=%d errors=%d peers=%s ports=%d established=%d %s" % (
        good, len(errors), ",".join(sorted(peers)), len(ports), est, " ".join(sorted(set(errors)))[:200]))
    for s in socks:
        s.close()
EOF
}

# ---- the tests ----

# 1. Echo requests leave from the pool address, and their replies come back.
t_nat_ping() {
  local fam addr pool o a0 a1 i0 i1
  for fam in 4 6; do
    if [ $fam = 4 ]; then addr=10.10.2.2; pool=$NAT_POOL4; else addr=fd10:2::2; pool=$NAT_POOL6; fi
    a0=$(nat_counter "$P-server" "ping${fam}_pool"); i0=$(nat_counter "$P-server" "ping${fam}_inside")
    o=$(C ping -"$fam" -c 5 -i 0.1 -W 2 "$addr" 2>&1)
    a1=$(nat_counter "$P-server" "ping${fam}_pool"); i1=$(nat_counter "$P-server" "ping${fam}_inside")
    if grep -q " 0% packet loss" <<<"$o" && [ $((a1 - a0)) = 5 ] && [ $((i1 - i0)) = 0 ]; then
      ok "NAT: IPv$fam ping through SNAT, no loss; the server saw the 5 echo requests from $pool"
    else fail "NAT: IPv$fam ping through SNAT" "from the pool $((a1 - a0)), from the inside address $((i1 - i0)) (want 5, 0); $(tail -2 <<<"$o" | tr '\n' ' ')"; fi
  done
}

# 2. 100 MB over IPv4 and 10 MB over IPv6 through SNAT, checked by SHA-256; the server's
# counters say from where.
t_nat_tcp() {
  mkdir -p "$NAT_WWW"
  head -c 100000000 /dev/urandom > "$NAT_WWW/blob"
  head -c 10000000 "$NAT_WWW/blob" > "$NAT_WWW/blob10"
  nat_bg "$P-server" "$PY" "$ROOT/hack/httpd.py" 10.10.2.2 8090 "$NAT_WWW"
  nat_bg "$P-server" "$PY" "$ROOT/hack/httpd.py" fd10:2::2 8090 "$NAT_WWW"
  nat_wait_listen "$P-server" 10.10.2.2 8090
  nat_wait_listen "$P-server" fd10:2::2 8090
  local fam url file want got a0 a1 i0 i1 t0 took what
  for fam in 4 6; do
    if [ $fam = 4 ]; then url=http://10.10.2.2:8090/blob; file=blob; what="100 MB"
    else url="http://[fd10:2::2]:8090/blob10"; file=blob10; what="10 MB"; fi
    want=$(sha256sum < "$NAT_WWW/$file" | cut -d' ' -f1)
    a0=$(nat_counter "$P-server" "tcp${fam}_pool"); i0=$(nat_counter "$P-server" "tcp${fam}_inside")
    t0=$(date +%s.%N)
    got=$(C curl -sS -m 60 "$url" 2>&1 | sha256sum | cut -d' ' -f1)
    took=$(nat_since "$t0")
    a1=$(nat_counter "$P-server" "tcp${fam}_pool"); i1=$(nat_counter "$P-server" "tcp${fam}_inside")
    if [ "$got" = "$want" ] && [ $((a1 - a0)) -gt 100 ] && [ $((i1 - i0)) = 0 ]; then
      ok "NAT: $what TCP through SNAT (IPv$fam), SHA-256 matches; the server saw $((a1 - a0)) packets from the pool address, none from the inside ($took s)"
    else fail "NAT: $what TCP through SNAT (IPv$fam)" "sha256 $got (want $want); server saw $((a1 - a0)) packets from the pool, $((i1 - i0)) from the inside address"; fi
  done
}

# 3. UDP through SNAT: the peer answers with the mapping it saw.
t_nat_udp() {
  local fam addr pool o
  for fam in 4 6; do
    if [ $fam = 4 ]; then addr=10.10.2.2; pool=$NAT_POOL4; else addr=fd10:2::2; pool=$NAT_POOL6; fi
    o=$(C "$PY" "$NAT_CLI" udp "$addr" 9200)
    if [[ "$o" =~ ^$pool\ ([0-9]+)\ from=$addr:9200$ ]] && [ "${BASH_REMATCH[1]}" -ge 1024 ]; then
      ok "NAT: IPv$fam UDP through SNAT: the server saw $pool:${BASH_REMATCH[1]}, its answer came back from $addr:9200"
    else fail "NAT: IPv$fam UDP through SNAT" "$o"; fi
  done
}

# 4. DNAT: the server namespace's connection to 10.10.2.1:8080 reaches the client namespace's
# port 80, which sees the real client address and port.
t_nat_dnat() {
  local o
  o=$(S "$PY" "$NAT_CLI" tcp 10.10.2.1 8080)
  if [[ "$o" =~ ^10\.10\.2\.2\ ([0-9]+)\ local=10\.10\.2\.2:([0-9]+)$ ]] &&
     [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ]; then
    ok "NAT: DNAT 10.10.2.1:8080 -> 10.10.1.2:80; the server there saw the real client 10.10.2.2:${BASH_REMATCH[1]}"
  else fail "NAT: DNAT" "want '10.10.2.2 P local=10.10.2.2:P', got '$o'"; fi
}

# 5. Hairpin: the client reaches its own port 80 through the DNAT address, and sees itself
# come from its external mapping (the pool address).
t_nat_hairpin() {
  local o
  o=$(C "$PY" "$NAT_CLI" tcp 10.10.2.1 8080)
  if [[ "$o" =~ ^$NAT_POOL4\ [0-9]+\ local=10\.10\.1\.2:[0-9]+$ ]]; then
    ok "NAT: hairpin: the client's 10.10.2.1:8080 reaches its own 10.10.1.2:80, which sees the pool address ($o)"
  else fail "NAT: hairpin" "want '$NAT_POOL4 P local=10.10.1.2:P', got '$o'"; fi
}

# 6. traceroute (UDP and ICMP probes) through SNAT: time exceeded from Ferry, then the
# server's answer (port unreachable, echo reply) translated back.
t_nat_traceroute() {
  local o how
  for how in UDP ICMP; do
    if [ $how = UDP ]; then o=$(C traceroute -n -w 1 -q 1 -m 4 10.10.2.2 2>&1)
    else o=$(C traceroute -I -n -w 1 -q 1 -m 4 10.10.2.2 2>&1); fi
    if grep -qE "^ 1  10\.10\.1\.1 " <<<"$o" && grep -qE "^ 2  10\.10\.2\.2 " <<<"$(tail -1 <<<"$o")"; then
      ok "NAT: traceroute ($how probes) through SNAT: hop 1 10.10.1.1, last hop 10.10.2.2"
    else fail "NAT: traceroute ($how) through SNAT" "$(tr '\n' '|' <<<"$o")"; fi
  done
}

# 7. UDP to a closed port: the server's port unreachable (sent to the pool address) reaches
# the client translated back, quoting the client's own packet with valid checksums.
t_nat_refused() {
  local o want
  o=$(C "$PY" "$NAT_CLI" refused 10.10.2.2 9399 40600)
  want="ECONNREFUSED from=10.10.2.2 to=10.10.1.2 type=3 code=3 quoted=10.10.1.2:40600->10.10.2.2:9399 icmp_csum=ok ip_csum=ok udp_csum=ok payload=ok"
  if [ "$o" = "$want" ]; then
    ok "NAT: UDP to a closed port through SNAT: ECONNREFUSED; the ICMP error quotes the client's own packet, every checksum valid"
  else fail "NAT: ICMP error through SNAT" "want '$want', got '$o'"; fi
}

# 8. Endpoint-independent mapping (RFC 4787 REQ-1): one socket, two servers, one mapping.
t_nat_eim() {
  local o a b
  o=$(C "$PY" "$NAT_CLI" eim 41000 9200 10.10.2.2 10.10.2.3)
  read -r a b <<<"$o"
  if [[ "$a" =~ ^$NAT_POOL4:[0-9]+@10\.10\.2\.2$ ]] && [ "${a%@*}" = "${b%@*}" ] && [ "${b#*@}" = 10.10.2.3 ]; then
    ok "NAT: endpoint-independent mapping: 10.10.1.2:41000 is ${a%@*} to both 10.10.2.2 and 10.10.2.3"
  else fail "NAT: endpoint-independent mapping" "seen by 10.10.2.2 and 10.10.2.3: '$o'"; fi
}

# 9. A 4,000-byte UDP datagram (3 fragments at MTU 1500) both ways through SNAT. IPv4 comes
# to ferryd reassembled (af_packet's fanout defrag); IPv6 fragments come as they are and
# take NAT's fragment path (nat_fragments).
t_nat_fragments() {
  local fam addr pool o f0 f1 u0 u1
  sleep 1.1
  f0=$(stat nat_fragments); u0=$(stat nat_fragments_unmatched)
  for fam in 4 6; do
    if [ $fam = 4 ]; then addr=10.10.2.2; pool=$NAT_POOL4; else addr=fd10:2::2; pool=$NAT_POOL6; fi
    o=$(C "$PY" "$NAT_CLI" frag "$addr" 9200 4000)
    if [[ "$o" =~ ^$pool\ [0-9]+\ len=4000\ echo=ok\ from=$addr$ ]]; then
      ok "NAT: IPv$fam 4,000-byte UDP datagram (fragmented) through SNAT: whole at the server from $pool, echoed back whole"
    else fail "NAT: IPv$fam fragmented UDP through SNAT" "want '$pool PORT len=4000 echo=ok from=$addr', got '$o'"; fi
  done
  sleep 1.2
  f1=$(stat nat_fragments); u1=$(stat nat_fragments_unmatched)
  if [ $((f1 - f0)) -gt 0 ]; then
    ok "NAT: fragments after the first followed their flow (nat_fragments +$((f1 - f0)), unmatched +$((u1 - u0)))"
  else fail "NAT: nat_fragments" "nat_fragments +$((f1 - f0)), nat_fragments_unmatched +$((u1 - u0)), drop_nat_fragment $(stat drop_nat_fragment)"; fi
}

# 12. 1,000 TCP connections open at once through SNAT, each echoing a line.
t_nat_many() {
  local o t0 took
  t0=$(date +%s.%N)
  o=$(C "$PY" "$NAT_CLI" many 10.10.2.2 9200 1000 "$STATS")
  took=$(nat_since "$t0")
  if [[ "$o" =~ ^good=1000\ errors=0\ peers=$NAT_POOL4\ ports=1000\ established=([0-9]+) ]] &&
     [ "${BASH_REMATCH[1]}" -ge 1000 ]; then
    ok "NAT: 1,000 concurrent TCP connections through SNAT, all echoed, 1,000 pool ports, ${BASH_REMATCH[1]} flows established ($took s)"
  else fail "NAT: 1,000 concurrent TCP connections" "$o"; fi
}

# 14. (Beyond the list asked for.) A connection from outside straight to the inside address
# (routed, no DNAT: the servers route 10.10.1.0/24 through Ferry) is not NAT's: its replies
# leave with the inside address, as with the kernel's conntrack NAT, where a reply is never
# a new connection to SNAT.
t_nat_inbound_routed() {
  local o p
  o=$(S "$PY" "$NAT_CLI" tcp 10.10.1.2 80 3)
  p=$(S ping -c 2 -i 0.2 -W 1 10.10.1.2 2>&1)
  if [[ "$o" =~ ^10\.10\.2\.2\ ([0-9]+)\ local=10\.10\.2\.2:([0-9]+)$ ]] &&
     [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] &&
     grep -q " 0% packet loss" <<<"$p" && ! grep -q "DIFFERENT ADDRESS" <<<"$p"; then
    ok "NAT: routed connections from outside to 10.10.1.2 keep their addresses (TCP to port 80, ping)"
  else fail "NAT: routed connection from outside to the inside address" "TCP 10.10.2.2 -> 10.10.1.2:80: '$o'; ping: $(grep -m1 -E "bytes from|Unreachable" <<<"$p") $(grep "packet loss" <<<"$p")"; fi
}

# 13. Replies that land on another worker are handed to the flow's owner.
t_nat_handoffs() {
  sleep 1.1
  local hin hout full
  hin=$(stat nat_handoffs_in); hout=$(stat nat_handoffs_out); full=$(stat drop_handoff_full)
  if [ "$WORKERS" = 1 ]; then
    if [ "$hin" = 0 ] && [ "$hout" = 0 ]; then ok "NAT: one worker owns every flow: no handoffs"
    else fail "NAT: handoffs with one worker" "nat_handoffs_in $hin, nat_handoffs_out $hout"; fi
    return
  fi
  if [ "$hin" -gt 0 ] && [ "$full" = 0 ]; then
    ok "NAT: packets handed to their flow's owner: nat_handoffs_in $hin (per worker $(nat_wstat nat_handoffs_in)), out $hout, no drop_handoff_full"
  else fail "NAT: handoffs" "nat_handoffs_in $hin (per worker $(nat_wstat nat_handoffs_in)), out $hout, drop_handoff_full $full"; fi
}

# After all of the above: no NAT drop of any kind.
t_nat_no_drops() {
  local k v bad=""
  for k in drop_nat_table_full drop_nat_ports_exhausted drop_nat_clash drop_nat_fragment \
           drop_handoff_full drop_nat_untranslatable nat_fragments_unmatched; do
    v=$(stat "$k")
    [ "$v" = 0 ] || bad="$bad $k=$v"
  done
  if [ -z "$bad" ]; then ok "NAT: no NAT drops under the tests above ($(stat nat_created) flows made)"
  else fail "NAT: drops" "$bad"; fi
}

# 10. With 2 s timeouts, idle flows of every kind expire (the warm-up's too), and new flows
# are made after.
t_nat_expiry() {
  local c0 c1 e1 r1 flows seen=0 o p t0 took _
  sleep 1.1
  c0=$(stat nat_created)
  t0=$(date +%s.%N)
  o=$(C ping -c 1 -W 2 10.10.2.2 2>&1; C ping -6 -c 1 -W 2 fd10:2::2 2>&1
      C "$PY" "$NAT_CLI" udp 10.10.2.2 9200; C "$PY" "$NAT_CLI" udp fd10:2::2 9200
      C "$PY" "$NAT_CLI" tcp 10.10.2.2 9200)
  # Wait for the flows to show, then to go (2 s idle; 8 s at most).
  for _ in $(seq 1 80); do
    flows=$(stat nat_flows)
    [ "$flows" -gt "$seen" ] && seen=$flows
    [ "$seen" -gt 0 ] && [ "$flows" = 0 ] && break
    sleep 0.1
  done
  took=$(nat_since "$t0")
  c1=$(stat nat_created); e1=$(stat nat_expired); r1=$(stat nat_removed)
  if [ "$seen" -gt 0 ] && [ "$flows" = 0 ] && [ $((c1 - c0)) -ge 5 ] && [ "$e1" = "$c1" ]; then
    ok "NAT: with 2 s timeouts every flow expires: $((c1 - c0)) new (ICMP, ICMPv6, UDP, UDP6, TCP), nat_flows $seen -> 0 within $took s, nat_expired $e1 of nat_created $c1"
  else fail "NAT: flow expiry" "nat_flows peaked at $seen, $flows after $took s; nat_created $c1 (+$((c1 - c0)), want >= 5), nat_expired $e1, nat_removed $r1; clients: $(tr '\n' ' ' <<<"$o")"; fi
  o=$(C "$PY" "$NAT_CLI" udp 10.10.2.2 9200)
  p=$(C ping -c 2 -i 0.2 -W 2 10.10.2.2 2>&1)
  if [[ "$o" =~ ^$NAT_POOL4\ [0-9]+\ from=10\.10\.2\.2:9200$ ]] && grep -q " 0% packet loss" <<<"$p"; then
    ok "NAT: after expiry new flows are made again (UDP: $o; ping: no loss)"
  else fail "NAT: new flows after expiry" "udp '$o'; $(tail -2 <<<"$p" | tr '\n' ' ')"; fi
}

# 11. A full table drops new flows only: with max_flows 1024 each worker holds 1,024 IPv4
# flows; 3,000 UDP flows from one inside address (one owner) fill its table, and a TCP
# connection made before carries on.
t_nat_table_full() {
  local go=$WORK/nat-go hold=$WORK/nat-hold o d0 d1 n0 n1 flows per max _
  rm -f "$go"
  C ping -c 1 -W 2 10.10.2.2 >/dev/null 2>&1
  C "$PY" "$NAT_CLI" hold 10.10.2.2 9200 "$go" > "$hold" 2>&1 &
  local hpid=$!
  for _ in $(seq 1 50); do grep -q "^first" "$hold" && break; sleep 0.1; done
  sleep 1.1
  d0=$(stat drop_nat_table_full); n0=$(nat_counter "$P-server" flood)
  o=$(C "$PY" "$NAT_CLI" flood 10.10.2.2 9299 3000 20000)
  sleep 1.2
  d1=$(stat drop_nat_table_full); n1=$(nat_counter "$P-server" flood)
  flows=$(stat nat_flows); per=$(nat_wstat nat_flows)
  max=$(tr '/' '\n' <<<"$per" | sort -n | tail -1)
  if [ $((d1 - d0)) -gt 0 ] && [ "$max" = 1024 ] && [ $((n1 - n0)) -le 1024 ] && [ $((n1 - n0)) -gt 0 ]; then
    ok "NAT: 3,000 new UDP flows into a table of 1,024: $((n1 - n0)) reached the server, drop_nat_table_full +$((d1 - d0)), nat_flows per worker $per"
  else fail "NAT: full table" "$o; reached the server $((n1 - n0)) (want 1..1024), drop_nat_table_full +$((d1 - d0)), nat_flows $flows (per worker $per, want one worker at 1024)"; fi
  o=$(C "$PY" "$NAT_CLI" tcp 10.10.2.2 9200 2)
  if [ "$o" = timeout ]; then ok "NAT: full table: a new TCP connection is dropped (connect timed out)"
  else fail "NAT: full table, new connection" "want timeout, got '$o'"; fi
  touch "$go"
  wait "$hpid"
  if grep -q "^first ok $NAT_POOL4 " "$hold" && grep -q "^second ok" "$hold"; then
    ok "NAT: full table: the TCP connection made before still carries data"
  else fail "NAT: full table, existing connection" "$(tr '\n' ' ' < "$hold")"; fi
}

# ---- run ----

# Start ferryd on the NAT config now in $CFG; false (and one failure) if it does not start.
nat_start() { # what
  if start_ferry; then return 0; fi
  fail "NAT: start ferryd ($1)" "see log above"
  return 1
}

# Stop ferryd and the servers; ferryd must stop cleanly. Its log is kept for the panic check.
nat_stop() { # what
  local rc=0
  nat_bg_stop
  stop_ferry || rc=$?
  if [ "$rc" = 0 ] && grep -q "final counters" "$OUT"; then ok "NAT ($1): SIGINT stops ferryd cleanly"
  else fail "NAT ($1): clean stop" "rc=$rc $(tail -3 "$LOG")"; fi
  cat "$LOG" "$OUT" >> "$WORK/nat-ferryd.log"
}

# Operators' views: ferryctl nat (hits), ferryctl conntrack (filtered, JSON), a bad
# filter refused naming its field, Prometheus' NAT metrics, and a flush.
t_nat_views() {
  local o c m e rc err
  CTL nat -o json > "$WORK/nat-rules.json" 2>&1
  CTL conntrack --address 10.10.1.2 --protocol tcp -o json > "$WORK/nat-flows.json" 2>&1
  m=$(N curl -s "http://127.0.0.1:$METRICS_PORT/metrics" 2>&1)
  if err=$($PY - "$WORK/nat-rules.json" "$WORK/nat-flows.json" 2>&1 <<'PYEOF'
import json, sys
rules = {r["name"]: r for r in json.load(open(sys.argv[1]))["rules"]}
assert rules["egress"]["kind"] == "snat" and rules["egress"]["hits"] > 0, rules
assert rules["web"]["kind"] == "dnat" and rules["web"]["hits"] > 0, rules
flows = json.load(open(sys.argv[2]))["flows"]
assert flows, "no TCP flows of 10.10.1.2"
# (Hairpin flows go to 10.10.2.1: the DNAT rule's.)
snat = [f for f in flows if f["original"]["src"] == "10.10.1.2" and f["reply"]["dst"] == "10.10.2.100"
        and f["original"]["dst"] != "10.10.2.1"]
assert snat and all(f["rule"] == "egress" and f["protocol"] == "tcp" for f in snat), flows[:3]
assert all(f["worker"] >= 0 and f["expires_s"] >= 0 and f["state"] for f in flows)
PYEOF
  ); then ok "NAT: ferryctl nat shows both rules with hits; ferryctl conntrack lists 10.10.1.2's TCP flows with their reply tuples (pool address), rule, state, worker"
  else fail "NAT: ferryctl views" "$(tail -1 <<<"$err")"; fi
  rc=0
  e=$(CTL conntrack --address 10.10.1 2>&1) || rc=$?
  if [ "$rc" != 0 ] && grep -q "filter.address" <<<"$e"; then ok "NAT: a bad conntrack filter is refused, naming filter.address"
  else fail "NAT: bad filter" "rc=$rc $e"; fi
  if grep -q '^ferry_nat_flows{.*state="established"' <<<"$m" &&
     grep -Eq '^ferry_nat_rule_flows_total\{kind="snat",rule="egress"\} [1-9]' <<<"$m" &&
     grep -q '^ferry_nat_flow_events_total{.*event="created"' <<<"$m"; then
    ok "NAT: Prometheus metrics: flows by state, flow events, flows by rule"
  else fail "NAT: metrics" "$(grep -m5 nat <<<"$m")"; fi
  o=$(CTL conntrack flush --protocol icmp 2>&1)
  sleep 0.3
  c=$(CTL conntrack --protocol icmp -o json 2>&1)
  if grep -q "flush sent" <<<"$o" &&
     $PY -c "import json,sys; sys.exit(len(json.loads(sys.argv[1])['flows']) != 0)" "$c"; then
    ok "NAT: ferryctl conntrack flush --protocol icmp ends the ICMP flows"
  else fail "NAT: flush" "$o / ${c:0:200}"; fi
}

# Rule changes under load: an established TCP connection keeps its mapping when the pool
# changes (a new connection gets the new pool), and ends when its rule is deleted.
t_nat_rule_change() {
  local o pool2=10.10.2.101 removed0 removed1
  sed "s/addresses: \[$NAT_POOL4,/addresses: [$pool2,/" "$CFG" > "$WORK/nat-pool2.yaml"
  awk '/^  snat:/ { skip = 1; next } /^  dnat:/ { skip = 0 } !skip' "$CFG" > "$WORK/nat-nosnat.yaml"
  cat > "$WORK/natchange.py" <<'PYEOF'
# One connection through SNAT to the peer server; between echoes, ferryctl applies configs.
import socket, subprocess, sys
ctl, sock, cfg2, cfg0 = sys.argv[1:5]
def apply(f):
    subprocess.run([ctl, "--socket", sock, "apply", "-f", f], check=True, capture_output=True)
def echo(s, f, what):
    s.sendall(what + b"\n")
    return f.readline().strip()
def connect():
    s = socket.create_connection(("10.10.2.2", 9200), timeout=2)
    f = s.makefile("rb")
    return s, f, f.readline().decode().split()
s, f, peer = connect()
ok1 = echo(s, f, b"before") == b"before"
apply(cfg2)
ok2 = echo(s, f, b"after-pool-change") == b"after-pool-change"
s2, f2, peer2 = connect()
apply(cfg0)
try:
    s.settimeout(1.5)
    ok3 = echo(s, f, b"after-delete") != b"after-delete"
except OSError:
    ok3 = True
print(peer[0], ok1, ok2, peer2[0], ok3)
PYEOF
  removed0=$(stat nat_removed)
  o=$(C "$PY" "$WORK/natchange.py" "$FERRYCTL" "$SOCK" "$WORK/nat-pool2.yaml" "$WORK/nat-nosnat.yaml" 2>&1)
  for _ in $(seq 1 25); do
    sleep 0.2
    removed1=$(stat nat_removed)
    [ "$removed1" -gt "$removed0" ] && break
  done
  CTL apply -f "$CFG" >/dev/null 2>&1
  if [ "$o" = "$NAT_POOL4 True True $pool2 True" ] && [ "$removed1" -gt "$removed0" ]; then
    ok "NAT: rule changes under load: a pool change keeps the established connection on $NAT_POOL4 (a new one gets $pool2); deleting the rule ends its flows (nat_removed +$((removed1 - removed0)))"
  else fail "NAT: rule changes" "got '$o' (want '$NAT_POOL4 True True $pool2 True'), nat_removed $removed0 -> $removed1"; fi
}

run_nat_tests() {
  local t0 o
  t0=$(date +%s)
  : > "$WORK/nat-ferryd.log"
  nat_write_py
  nat_nft_setup
  # The rules, default timeouts and table size.
  nat_config ""
  if nat_start "rules"; then
    warm_up
    nat_peer "$P-server" 10.10.2.2 9200
    nat_peer "$P-server" fd10:2::2 9200
    nat_peer "$P-server2" 10.10.2.3 9200
    nat_peer "$P-client" 10.10.1.2 80
    t_nat_ping
    t_nat_tcp
    t_nat_udp
    t_nat_dnat
    t_nat_hairpin
    t_nat_traceroute
    t_nat_refused
    t_nat_eim
    t_nat_fragments
    t_nat_many
    t_nat_inbound_routed
    t_nat_handoffs
    t_nat_no_drops
    t_nat_views
    t_nat_rule_change
    nat_stop "rules"
  fi
  rm -rf "$NAT_WWW"
  # Every timeout 2 s.
  nat_config "  timeouts: {udp: 2, icmp: 2, tcp_transitory: 2, tcp_established: 2}"
  if nat_start "2 s timeouts"; then
    warm_up
    nat_peer "$P-server" 10.10.2.2 9200
    nat_peer "$P-server" fd10:2::2 9200
    t_nat_expiry
    nat_stop "2 s timeouts"
  fi
  # The smallest table.
  nat_config "  max_flows: 1024"
  if nat_start "max_flows 1024"; then
    nat_peer "$P-server" 10.10.2.2 9200
    t_nat_table_full
    nat_stop "max_flows 1024"
  fi
  o=$(grep -i -m 3 "panic" "$WORK/nat-ferryd.log")
  if [ -z "$o" ]; then ok "NAT: ferryd logged no panic in its three runs ($(($(date +%s) - t0)) s of NAT tests)"
  else fail "NAT: panic" "$o"; fi
}
