-- ferry.lua: pktgen-dpdk script that sends ferry-pktgen's traffic (perf/src/bin/ferry-pktgen.rs)
-- from port FERRY_TX (0) in range mode at 100% of line rate for FERRY_SECS seconds, receives on
-- FERRY_RX (1), then prints tx/rx Mpps, loss and error counters, and one JSON line.
--
-- pktgen passes no arguments to scripts, so the parameters come from the environment:
--   variable       ferry-pktgen    default
--   FERRY_DST_MAC  --dst-mac       (required: ferryd's MAC on the port facing FERRY_TX)
--   FERRY_SIZE     --size          64     frame bytes WITH the FCS, 64..1518, or imix
--   FERRY_PROTO    --proto         udp    udp|tcp
--   FERRY_FAMILY   (of --dst-ip)   4      4|6, or the family of FERRY_DST_IP
--   FERRY_FLOWS    --flows         1024   1..10000000
--   FERRY_DST_IP   --dst-ip        10.253.0.1 / 2001:db8::1
--   FERRY_SRC_IP   --src-ip        198.18.0.1 / 2001:2::1
--   FERRY_SECS     --duration      10     seconds measured, after 1 s of warm-up
--   FERRY_TX, FERRY_RX                    0, 1
--   FERRY_QUIT                            1: quit pktgen when done
--
-- Frames: IPv4 (TTL 64) or IPv6 (hop limit 64), UDP or TCP to port 9 from port 1024 upward;
-- flow i is source port 1024 + i % 60000 on source address src + i // 60000, as in
-- ferry-pktgen. Differences, all pktgen's own:
--  * Range mode builds each tx mbuf once when traffic starts, so the flows sent are the first
--    ones built, at most one per mbuf of the tx pool (16 x (rx + tx descriptors) = 32768 per
--    tx queue with pktgen 24.x-26.x defaults). Up to that, all N flows go out equally often.
--  * Range mode steps every field on every packet, it cannot carry into the address when the
--    ports wrap: above 60000 flows the script uses k addresses and P ports with P*k >= N and
--    gcd(P, k) = 1, so that every (address, port) pair comes up.
--  * IMIX: pktgen has no IMIX (its size range is arithmetic). This script approximates it with
--    the three sizes in sequence: 64, 594 and 1518 each for a time slice sized so that, at
--    line rate, packets come out 7:4:1 (slices of 128/536/336 ms; stop and restart between
--    sizes, since the mbufs are built at start). Sizes come in runs, not interleaved, and
--    the pps printed averages over the gaps.
--  * TCP: flags PA, seq 1, ack 1 are set with pktgen's CLI (range tcp ...; pktgen 24.10 and
--    later) through a small command file; the window is pktgen's fixed 8192, not 65535.
--  * The payload is zeros: no 8-byte stamp (magic 0xfe779e4e + TSC), no latency. IPv4 ident
--    varies (pktgen's), ferry-pktgen's is 0. IPv6 frames are at least 78 bytes in pktgen.
--
-- Written against the Lua API of pktgen-dpdk 23.10-26.02 (app/lpktgenlib.c); not run here
-- (no NIC): checked with luac5.3 -p only.

local function env(name, default)
    local v = os.getenv(name)
    if v == nil or v == "" then return default end
    return v
end

local function fail(msg)
    error("ferry.lua: " .. msg, 0)
end

local size_arg = env("FERRY_SIZE", "64")
local proto = env("FERRY_PROTO", "udp")
local dst_ip = env("FERRY_DST_IP", nil)
local family = tonumber(env("FERRY_FAMILY", (dst_ip and dst_ip:find(":")) and "6" or "4"))
local flows = tonumber(env("FERRY_FLOWS", "1024"))
local secs = tonumber(env("FERRY_SECS", "10"))
local tx = tonumber(env("FERRY_TX", "0"))
local rx = tonumber(env("FERRY_RX", "1"))
local dst_mac = env("FERRY_DST_MAC", nil)
local v6 = family == 6
dst_ip = dst_ip or (v6 and "2001:db8::1" or "10.253.0.1")
local src_ip = env("FERRY_SRC_IP", v6 and "2001:2::1" or "198.18.0.1")

if not dst_mac then fail("set FERRY_DST_MAC to ferryd's MAC on port " .. tx) end
if proto ~= "udp" and proto ~= "tcp" then fail("FERRY_PROTO: udp or tcp") end
if family ~= 4 and family ~= 6 then fail("FERRY_FAMILY: 4 or 6") end
if not flows or flows < 1 or flows > 10000000 then fail("FERRY_FLOWS: 1..10000000") end
if not secs or secs <= 0 then fail("FERRY_SECS: seconds, above 0") end
for _, ip in ipairs({dst_ip, src_ip}) do
    if (ip:find(":") ~= nil) ~= v6 then fail(ip .. " is not an IPv" .. family .. " address") end
end

-- ferry-pktgen's smallest frame: headers, its 8-byte stamp and the FCS; pktgen's for IPv6.
local min_frame = math.max(64, 14 + (v6 and 40 or 20) + (proto == "udp" and 8 or 20) + 8 + 4)
local pktgen_min = v6 and 78 or 64
local sizes -- {frame bytes, slice ms}
if size_arg == "imix" then
    sizes = {}
    -- 7:4:1 packets at line rate: slice time in proportion to packets x (frame + 20 bytes of
    -- preamble and gap); one round of the three takes about a second.
    local imix, units = {{64, 7}, {594, 4}, {1518, 1}}, 0
    for _, s in ipairs(imix) do units = units + s[2] * (s[1] + 20) end
    for _, s in ipairs(imix) do
        local bytes = math.max(s[1], min_frame, pktgen_min)
        sizes[#sizes + 1] = {bytes, math.floor(s[2] * (s[1] + 20) * 1000 / units + 0.5)}
    end
else
    local n = tonumber(size_arg)
    if not n or n < min_frame or n > 1518 then
        fail(string.format("FERRY_SIZE: %d..1518 for IPv%d/%s, or imix", min_frame, family, proto))
    end
    if n < pktgen_min then
        print(string.format("ferry.lua: pktgen sends IPv6 frames of at least %d bytes", pktgen_min))
    end
    sizes = {{math.max(n, pktgen_min), 0}}
end

-- Flows: k source addresses x P source ports.
local function gcd(a, b)
    while b ~= 0 do a, b = b, a % b end
    return a
end
local k, P = 1, flows
if flows > 60000 then
    k = (flows + 59999) // 60000
    P = (flows + k - 1) // k
    while gcd(P, k) ~= 1 do P = P + 1 end
    print(string.format("ferry.lua: %d flows as %d addresses x %d ports (%d pairs)",
                        flows, k, P, k * P))
end

-- Address arithmetic: add n to the address (for IPv6, to its low 32 bits, as ferry-pktgen).
local function v4_add(s, n)
    local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then fail("bad IPv4 address " .. s) end
    local x = ((tonumber(a) * 256 + tonumber(b)) * 256 + tonumber(c)) * 256 + tonumber(d) + n
    if x > 0xffffffff then fail("source addresses past 255.255.255.255") end
    return string.format("%d.%d.%d.%d", x >> 24, (x >> 16) & 255, (x >> 8) & 255, x & 255)
end
local function v6_add(s, n)
    local function groups(part)
        local t = {}
        for g in part:gmatch("[^:]+") do t[#t + 1] = tonumber(g, 16) end
        return t
    end
    local head, tail = s:match("^(.-)::(.*)$")
    local g = groups(head or s)
    if head then
        local t = groups(tail)
        for _ = 1, 8 - #g - #t do g[#g + 1] = 0 end
        for _, v in ipairs(t) do g[#g + 1] = v end
    end
    if #g ~= 8 then fail("bad IPv6 address " .. s) end
    local low = g[7] * 65536 + g[8] + n
    if low > 0xffffffff then fail("source addresses would wrap their low 32 bits") end
    g[7], g[8] = low >> 16, low & 0xffff
    return string.format("%x:%x:%x:%x:%x:%x:%x:%x", table.unpack(g))
end
local add = v6 and v6_add or v4_add
local zero_inc, one_inc = v6 and "::" or "0.0.0.0", v6 and "::1" or "0.0.0.1"

local function range4(fn, port, start, min, max, inc)
    fn(port, "start", start)
    fn(port, "min", min)
    fn(port, "max", max)
    fn(port, "inc", inc)
end

local p = tostring(tx)
local r = pktgen.range
pktgen.stop(p)
pktgen.set_range(p, "off")

-- The single packet (not sent, shown on pktgen's main page): flow 0.
pktgen.set_type(p, v6 and "ipv6" or "ipv4")
pktgen.set_proto(p, proto)
pktgen.set_ipaddr(p, "dst", dst_ip)
pktgen.set_ipaddr(p, "src", src_ip .. (v6 and "/128" or "/32"))
pktgen.set_mac(p, "dst", dst_mac)

-- The range packets: the type first, the address setters depend on it.
r.set_type(p, v6 and "ipv6" or "ipv4")
r.ip_proto(p, proto)
r.dst_mac(p, "start", dst_mac)
range4(r.dst_ip, p, dst_ip, dst_ip, dst_ip, zero_inc)
range4(r.src_ip, p, src_ip, src_ip, add(src_ip, k - 1), k > 1 and one_inc or zero_inc)
range4(r.dst_port, p, 9, 9, 9, 0)
range4(r.src_port, p, 1024, 1024, 1024 + P - 1, P > 1 and 1 or 0)
range4(r.ttl, p, 64, 64, 64, 0)
range4(r.hop_limits, p, 64, 64, 64, 0)
local function set_size(bytes)
    range4(r.pkt_size, p, bytes, bytes, bytes, 0)
end
set_size(sizes[1][1])
if proto == "tcp" then
    -- Not in pktgen's Lua API: the CLI's range tcp commands, fed from a command file.
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(string.format("range %s tcp flags ack,psh\nrange %s tcp seq start 1\n" ..
                          "range %s tcp ack start 1\n", p, p, p))
    f:close()
    local ok, err = pcall(pktgen.load, path)
    os.remove(path)
    if not ok then print("ferry.lua: range tcp commands failed (" .. tostring(err) .. ")") end
end
pktgen.pattern(p, "zero")
pktgen.set(p, "rate", 100)
pktgen.set(p, "count", 0)
pktgen.set_range(p, "on")

-- Counters since the last clear: pktgen 26.x nests them under .curr and takes one argument,
-- earlier versions want ("port") and return them flat.
local function counters(port)
    local ok, t = pcall(pktgen.portStats, tostring(port), "port")
    if not ok then t = pktgen.portStats(tostring(port)) end
    local s = t[port]
    return s.curr or s
end

-- Send for about `ms` and return the ms it took: one size, or whole rounds of the IMIX slices
-- (stop, let the tx ring drain before its mbufs are rebuilt, resize, restart).
local function send(ms)
    if #sizes == 1 then
        pktgen.delay(ms)
        return ms
    end
    local round = 0
    for _, s in ipairs(sizes) do round = round + s[2] + 5 end
    for _ = 1, math.max(1, math.floor(ms / round + 0.5)) do
        for _, s in ipairs(sizes) do
            pktgen.stop(p)
            pktgen.delay(5)
            set_size(s[1])
            pktgen.start(p)
            pktgen.delay(s[2])
        end
    end
    return math.max(1, math.floor(ms / round + 0.5)) * round
end

local label = string.format("%s IPv%d/%s, %d flows",
                            size_arg == "imix" and "IMIX" or size_arg .. " B",
                            family, proto:upper(), flows)
print(string.format("ferry.lua: %s, port %d -> ferryd -> port %d, %g s at 100%%",
                    label, tx, rx, secs))
pktgen.clear("all")
pktgen.start(p)
send(1000) -- warm-up: neighbours resolved, caches warm
-- pktgen refreshes its counters about once a second: measure over whole seconds.
local t0, r0 = counters(tx), counters(rx)
local secs_run = send(math.floor(secs * 1000)) / 1000
local t1, r1 = counters(tx), counters(rx)
pktgen.stop(p)
pktgen.delay(1500) -- the last packets in flight, and one more refresh of the counters
local tn, rn = counters(tx), counters(rx)

local tx_mpps = (t1.opackets - t0.opackets) / secs_run / 1e6
local rx_mpps = (r1.ipackets - r0.ipackets) / secs_run / 1e6
local loss = tn.opackets > 0 and math.max(0, 1 - rn.ipackets / tn.opackets) or 1
print(string.format("ferry.lua: %s: tx %.3f Mpps, rx %.3f Mpps, loss %.4f%% (%d sent, %d received)",
                    label, tx_mpps, rx_mpps, loss * 100, tn.opackets, rn.ipackets))
print(string.format("ferry.lua: errors: tx oerrors %d, rx ierrors %d, rx imissed %d, rx_nombuf %d",
                    tn.oerrors, rn.ierrors, rn.imissed, rn.rx_nombuf))
if type(pktgen.pktStats) == "function" then -- up to pktgen 25.x: packets the tx ring refused
    local ok, ps = pcall(pktgen.pktStats, p)
    if ok and ps and ps[tx] then
        print(string.format("ferry.lua: pktgen tx_failed %d", ps[tx].tx_failed or 0))
    end
end
print(string.format('{"size":%s,"family":"ipv%d","proto":"%s","flows":%d,"secs":%g,' ..
                    '"tx_mpps":%.4f,"mpps":%.4f,"loss":%.6f,' ..
                    '"imissed":%d,"ierrors":%d,"oerrors":%d}',
                    size_arg == "imix" and '"imix"' or size_arg, family, proto, flows,
                    secs_run, tx_mpps, rx_mpps, loss, rn.imissed, rn.ierrors, tn.oerrors))
if env("FERRY_QUIT", "0") == "1" then pktgen.quit() end
