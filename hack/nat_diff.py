#!/usr/bin/python3
"""Differential test of Ferry's NAT against Linux nftables NAT (driven by ci/nat-diff.sh).

The same crafted packet sequences go through two routers with the same addressing:

    kernel rig:  CLIENT_NS ── Linux router (nftables snat/dnat) ── SERVER_NS
    ferry rig:   CLIENT_NS ── ferryd (the same rules in its nat: section) ── SERVER_NS

This script is one process: it enters each namespace in turn (setns) to open a raw
AF_PACKET socket on the client's c0 and the server's s0, then plays both ends. The
client's and server's kernels drop all IP input (nft, set up by the driver), so the
only answers are the ones played here. For every packet it records what arrived on the
far side, field by field, and compares the two rigs with each other and with the
expected packet. The NAT's own choices (the outside port, the echo identifier) are
compared as symbols: the first value seen binds the symbol (P_udp, I_echo, ...) and every
later packet must carry the same value (mapping consistency); the numbers themselves may
differ between the rigs. Everything else must match exactly: addresses, the inside-side
tuples, TTL, IP ID, lengths, payloads, checksums (validity; on the inside side, where
every byte is determined, the values too), and an ICMP error's quoted packet byte for byte.

Usage (as root): nat_diff.py --kernel KC,KS --ferry FC,FS [--pcap-dir DIR] [--counts FILE]
                [--table FILE] [--verbose]
Prints the fields compared, an "ok   ..." / "FAIL ...: detail" line per step (with its
table, expected / kernel / ferry, when it fails or the rigs differ; every table with
--verbose), and findings: legitimate differences, e.g. RFC 4787 endpoint-independent
mapping against Linux's port choice.
"""

import argparse
import ctypes
import os
import select
import socket
import struct
import sys
import time
import zlib

from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, Raw, conf, wrpcap

conf.verb = 0

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

CLI, CLI_B, GW_IN = "10.10.1.2", "10.10.1.3", "10.10.1.1"
SRV, SRV2, GW_OUT = "10.10.2.2", "10.10.2.3", "10.10.2.1"
POOL = "10.10.2.100"  # the SNAT address
RTR = "10.10.2.77"  # a made-up router beyond the NAT that sends ICMP errors
RTR_IN = "10.10.1.77"  # and one on the inside
TIMEOUT = 2.0  # seconds to wait for one packet (the first ones wait for ARP)

TCP_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (111, 0)), ("NOP", None), ("WScale", 7)]


def enter_netns(name):
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns({name}): {os.strerror(e)}")
    finally:
        os.close(fd)


def is_ipv4(d):
    return len(d) >= 34 and d[12:14] == b"\x08\x00"


def is_arp(d):
    return d[12:14] == b"\x08\x06"


def ip_id(d):
    return struct.unpack("!H", d[18:20])[0] if is_ipv4(d) else None


def ip_bytes(d):
    """The IPv4 packet in frame d, without Ethernet padding."""
    b = d[14:]
    return b[: struct.unpack("!H", b[2:4])[0]]


class Port:
    """A raw AF_PACKET socket on one veth, opened inside its namespace."""

    def __init__(self, ns, ifname):
        enter_netns(ns)
        self.name = f"{ns}/{ifname}"
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self.sock.bind((ifname, ETH_P_ALL))
        self.mac = ":".join(f"{b:02x}" for b in self.sock.getsockname()[4])
        self.gw = None  # the router's MAC on this side (ARP)
        self.frames = []  # everything sent and received, for the pcap
        self.strays = []  # received IP frames no step asked for
        self.read(0)

    def send(self, frame):
        f = Ether(bytes(frame))
        f.time = time.time()
        self.frames.append(f)
        self.sock.send(bytes(frame))

    def recv(self, timeout):
        """The next frame received (not one this host sent) within timeout, or None."""
        deadline = time.monotonic() + timeout
        while True:
            r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                return None
            d, addr = self.sock.recvfrom(65535)
            if addr[2] == PACKET_OUTGOING:
                continue
            f = Ether(d)
            f.time = time.time()
            self.frames.append(f)
            return d

    def read(self, timeout):
        """Received frames until timeout passes without one (0: what is queued)."""
        out = []
        while (d := self.recv(timeout)) is not None:
            out.append(d)
        return out

    def wait(self, pred, timeout=TIMEOUT):
        """The first frame received that pred accepts; other non-ARP frames are strays."""
        deadline = time.monotonic() + timeout
        while (d := self.recv(deadline - time.monotonic())) is not None:
            if pred(d):
                return d
            if not is_arp(d):
                self.strays.append(d)
        return None

    def arp(self, my_ip, ip):
        req = Ether(src=self.mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=self.mac, psrc=my_ip, pdst=ip
        )
        for _ in range(3):
            self.send(req)
            d = self.wait(lambda d: is_arp(d) and Ether(d)[ARP].op == 2
                          and Ether(d)[ARP].psrc == ip, 1.0)
            if d:
                return Ether(d)[ARP].hwsrc
        return None


# ---- checksums and field extraction ----


def fold(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ck(valid, value, exact):
    if exact:
        return f"0x{value:04x} {'valid' if valid else 'BAD'}"
    return "valid" if valid else f"BAD (0x{value:04x})"


def payload(b):
    if len(b) <= 24:
        return repr(bytes(b))
    return f"{len(b)}B crc32 {zlib.crc32(b):08x}"


def ip_rows(b, pre, rows):
    ihl = (b[0] & 15) * 4
    tos, tot, ident, ff, ttl, proto, c = struct.unpack("!xBHHHBBH", b[:12])
    fl = "".join(n for bit, n in ((4, "R"), (2, "DF"), (1, "MF")) if (ff >> 13) & bit) or "-"
    rows += [
        (pre + "ip.ihl", ihl),
        (pre + "ip.tos", tos),
        (pre + "ip.len", tot),
        (pre + "ip.id", f"0x{ident:04x}"),
        (pre + "ip.flags", fl),
        (pre + "ip.frag", ff & 0x1FFF),
        (pre + "ip.ttl", ttl),
        (pre + "ip.proto", proto),
        (pre + "ip.src", socket.inet_ntoa(b[12:16])),
        (pre + "ip.dst", socket.inet_ntoa(b[16:20])),
        (pre + "ip.chksum", ck(fold(b[:ihl]) == 0xFFFF, c, True)),
    ]
    return ihl, tot, proto


def l4_valid(b, ihl, seg):
    pseudo = b[12:20] + bytes([0, b[9]]) + struct.pack("!H", len(seg))
    return fold(pseudo + seg) == 0xFFFF


def describe(b, exact):
    """Rows (field, value) of an IPv4 packet; exact: show L4 checksum values too."""
    rows = []
    ihl, tot, proto = ip_rows(b, "", rows)
    seg = b[ihl:tot]
    if proto == 17:
        sp, dp, ln, c = struct.unpack("!HHHH", seg[:8])
        csum = "none (0)" if c == 0 else ck(l4_valid(b, ihl, seg), c, exact)
        rows += [("udp.sport", sp), ("udp.dport", dp), ("udp.len", ln), ("udp.chksum", csum),
                 ("udp.payload", payload(seg[8:]))]
    elif proto == 6:
        sp, dp, seq, ack, off, fl, win, c, urg = struct.unpack("!HHIIBBHHH", seg[:20])
        hl = (off >> 4) * 4
        flags = "".join(n for bit, n in zip((1, 2, 4, 8, 16, 32, 64, 128), "FSRPAUEC") if fl & bit)
        rows += [("tcp.sport", sp), ("tcp.dport", dp), ("tcp.seq", seq), ("tcp.ack", ack),
                 ("tcp.dataofs", hl), ("tcp.flags", flags), ("tcp.window", win),
                 ("tcp.urgptr", urg), ("tcp.options", seg[20:hl].hex() or "-"),
                 ("tcp.chksum", ck(l4_valid(b, ihl, seg), c, exact)),
                 ("tcp.payload", payload(seg[hl:]))]
    elif proto == 1:
        t, code, c = struct.unpack("!BBH", seg[:4])
        rows += [("icmp.type", t), ("icmp.code", code),
                 ("icmp.chksum", ck(fold(seg) == 0xFFFF, c, exact))]
        if t in (0, 8):
            i, sq = struct.unpack("!HH", seg[4:8])
            rows += [("icmp.id", i), ("icmp.seq", sq), ("icmp.payload", payload(seg[8:]))]
        else:
            rows += [("icmp.rest", seg[4:8].hex())]
            quoted(seg[8:], rows, exact)
    else:
        rows += [("payload", payload(seg))]
    return rows


def quoted(q, rows, exact):
    """Rows of the packet an ICMP error quotes (maybe cut short); exact: with the quoted
    transport checksum's value (else its validity only: it covers a NAT-chosen port)."""
    rows.append(("q.bytes", len(q)))
    if len(q) < 20:
        return
    ihl, tot, proto = ip_rows(q, "q.", rows)
    seg = q[ihl:]
    full = len(q) >= tot
    if len(seg) < 8:
        return
    if proto == 17:
        sp, dp, ln, c = struct.unpack("!HHHH", seg[:8])
        v = ("valid" if l4_valid(q, ihl, seg[: tot - ihl]) else "BAD") if full else "partial quote"
        v = "none" if c == 0 else v
        rows += [("q.udp.sport", sp), ("q.udp.dport", dp), ("q.udp.len", ln),
                 ("q.udp.chksum", f"0x{c:04x} {v}" if exact else v)]
    elif proto == 6:
        sp, dp, seq = struct.unpack("!HHI", seg[:8])
        rows += [("q.tcp.sport", sp), ("q.tcp.dport", dp), ("q.tcp.seq", seq)]
        if len(seg) >= 20:
            c = struct.unpack("!H", seg[16:18])[0]
            v = ("valid" if l4_valid(q, ihl, seg[: tot - ihl]) else "BAD") if full else "partial quote"
            rows += [("q.tcp.chksum", f"0x{c:04x} {v}" if exact else v)]
    elif proto == 1:
        t, code, c, i, sq = struct.unpack("!BBHHH", seg[:8])
        v = ("valid" if fold(seg[: tot - ihl]) == 0xFFFF else "BAD") if full else "partial quote"
        rows += [("q.icmp.type", t), ("q.icmp.code", code), ("q.icmp.id", i),
                 ("q.icmp.seq", sq), ("q.icmp.chksum", f"0x{c:04x} {v}" if exact else v)]
    rows.append(("q.payload", payload(seg[8 : tot - ihl] if full else seg[8:])))


# ---- expected packets ----


def expect(pkt, **ch):
    """pkt (an IP packet) as a router that translates the fields in ch forwards it."""
    e = IP(bytes(pkt))
    e.ttl -= 1
    for k, v in ch.items():
        setattr(e if k in ("src", "dst") else e.payload, k, v)
    del e.chksum
    if not (isinstance(e.payload, UDP) and e.payload.chksum == 0):
        del e.payload.chksum
    return bytes(e)


def quote_of(pkt_bytes, ttl, n=None):
    """An ICMP error's quote of pkt_bytes as a router that saw it with this TTL: the IP
    header checksum fits the TTL, everything else as it was; cut to n bytes."""
    if pkt_bytes is None:
        raise Skip("the packet to quote was lost")
    q = IP(pkt_bytes)
    q.ttl = ttl
    del q.chksum
    b = bytes(q)
    return b if n is None else b[:n]


def icmp_error(src, dst, ident, ttl, typ, code, quote, mtu=None):
    icmp = ICMP(type=typ, code=code)
    if mtu is not None:
        icmp.nexthopmtu = mtu
    return IP(src=src, dst=dst, id=ident, ttl=ttl) / icmp / Raw(quote)


# ---- the rigs and the record of what each produced ----


class Skip(Exception):
    pass


class Rig:
    def __init__(self, label, client_ns, server_ns):
        self.label = label
        self.c = Port(client_ns, "c0")
        self.s = Port(server_ns, "s0")
        self.syms = {}  # (kind, symbol) -> value: the NAT's choices
        self.next_id = 0x1000

    def nid(self):
        self.next_id += 1
        return self.next_id


class Record:
    def __init__(self):
        self.steps = {}  # sid -> dict
        self.order = []

    def step(self, sid, title):
        if sid not in self.steps:
            self.steps[sid] = {"title": title, "expected": None, "obs": {}, "may": {}}
            self.order.append(sid)
        return self.steps[sid]


REC = Record()


def render(rig, kind, sym, value):
    """A NAT-chosen value as a symbol: binds sym on first sight, else names what it is."""
    key = (kind, sym)
    bound = {v: s for (k, s), v in rig.syms.items() if k == kind}
    if key not in rig.syms and value not in bound:
        rig.syms[key] = value
        return sym, f"{sym} ({value})"
    if rig.syms.get(key) == value:
        return sym, f"{sym} ({value})"
    if value in bound:
        return bound[value], f"{bound[value]} ({value})"
    return "other", f"other ({value})"


def xfer(rig, sid, title, src, dst, pkt, expected, nat=None, may=None):
    """Send IP packet pkt from port src to the router; wait on port dst for it (same IP ID).
    Records what arrived; nat: {field: symbol} for the NAT's choices (compared as symbols,
    L4 checksums then compared for validity only); may: {field: note}, fields where Linux
    legitimately differs from Ferry's design. Returns the IP bytes that arrived, or None
    (the steps that need them then raise Skip through port_at or quote_of)."""
    st = REC.step(sid, title)
    nat = nat or {}
    exact = not nat
    erows = describe(expected, exact)
    erows = [(f, nat[f] if f in nat else v) for f, v in erows]
    erows = [("eth.src", "router"), ("eth.dst", "this host")] + erows
    equote = error_quote(expected)
    if equote is not None:
        erows.append(("q.as_sent", "byte for byte"))
    if st["expected"] is None:
        st["expected"] = erows
    st["may"].update(may or {})
    ident = pkt[IP].id
    frame = Ether(src=src.mac, dst=src.gw) / pkt
    src.send(frame)
    d = dst.wait(lambda d: ip_id(d) == ident)
    if d is None:
        st["obs"][rig.label] = None
        return None
    obs = {}
    e = Ether(d)
    obs["eth.src"] = ("router", "router") if e.src == dst.gw else (e.src, e.src)
    obs["eth.dst"] = ("this host", "this host") if e.dst == dst.mac else (e.dst, e.dst)
    b = ip_bytes(d)
    for f, v in describe(b, exact):
        if f in nat:
            kind = f.split(".")[-2]
            obs[f] = render(rig, kind, nat[f], v)
        else:
            obs[f] = (str(v), str(v))
    if equote is not None:
        q = error_quote(b)
        if q == equote:
            obs["q.as_sent"] = ("byte for byte", "byte for byte")
        else:
            at = [i for i in range(max(len(q or b""), len(equote)))
                  if q is None or i >= len(q) or i >= len(equote) or q[i] != equote[i]]
            diff = f"differs at byte {', '.join(map(str, at[:6]))}{'...' if len(at) > 6 else ''}"
            obs["q.as_sent"] = (diff, diff)
    st["obs"][rig.label] = obs
    return b


def error_quote(b):
    """The quoted packet of an ICMP error (IP bytes b), else None."""
    ihl = (b[0] & 15) * 4
    if b[9] != 1 or len(b) < ihl + 8 or b[ihl] in (0, 8):
        return None
    return b[ihl + 8 :]


def port_at(b, which):  # which: 0 source port / echo id, 1 destination port
    if b is None:
        raise Skip("an earlier packet was lost")
    ihl = (b[0] & 15) * 4
    return struct.unpack("!HH", b[ihl + (4 if b[9] == 1 else 0):][:4])[which]


# ---- the sequences ----


def seq_udp(rig):
    c, s = rig.c, rig.s
    u = IP(src=CLI, dst=SRV, id=rig.nid()) / UDP(sport=5000, dport=7000) / Raw(b"nat-diff udp 1")
    g = xfer(rig, "1a", "UDP 10.10.1.2:5000 -> 10.10.2.2:7000, seen outside (SNAT)", c, s, u,
             expect(u, src=POOL), nat={"udp.sport": "P_udp"})
    r = IP(src=SRV, dst=POOL, id=rig.nid()) / UDP(sport=7000, dport=port_at(g, 0)) / Raw(b"nat-diff reply 1")
    xfer(rig, "1b", "UDP reply 10.10.2.2:7000 -> 10.10.2.100:P_udp, seen by the client", s, c, r,
         expect(r, dst=CLI, dport=5000))
    u = IP(src=CLI, dst=SRV, id=rig.nid()) / UDP(sport=5000, dport=7000, chksum=0) / Raw(b"no checksum")
    g = xfer(rig, "1c", "UDP with checksum 0, same flow, seen outside", c, s, u,
             expect(u, src=POOL), nat={"udp.sport": "P_udp"})
    r = IP(src=SRV, dst=POOL, id=rig.nid()) / UDP(sport=7000, dport=port_at(g, 0), chksum=0) / Raw(b"no checksum back")
    xfer(rig, "1d", "UDP reply with checksum 0, seen by the client", s, c, r,
         expect(r, dst=CLI, dport=5000))


def seq_tcp(rig):
    c, s = rig.c, rig.s
    # Host B takes 10.10.2.100:40001 towards the server first, so that A's connection
    # below needs a translated port in both rigs (neither can keep 40001).
    syn = IP(src=CLI_B, dst=SRV, id=rig.nid(), flags="DF") / TCP(
        sport=40001, dport=7100, flags="S", seq=300, window=64240, options=TCP_OPTS)
    xfer(rig, "2a", "TCP SYN 10.10.1.3:40001 -> 10.10.2.2:7100 (host B takes the port), outside",
         c, s, syn, expect(syn, src=POOL), nat={"tcp.sport": "P_tcpB"})
    cs, ss = 1000, 5000
    syn = IP(src=CLI, dst=SRV, id=rig.nid(), flags="DF") / TCP(
        sport=40001, dport=7100, flags="S", seq=cs, window=64240, options=TCP_OPTS)
    g = xfer(rig, "2b", "TCP SYN 10.10.1.2:40001 -> 10.10.2.2:7100 (port taken: translated), outside",
             c, s, syn, expect(syn, src=POOL), nat={"tcp.sport": "P_tcp"})
    p = port_at(g, 0)
    sa = IP(src=SRV, dst=POOL, id=rig.nid(), flags="DF") / TCP(
        sport=7100, dport=p, flags="SA", seq=ss, ack=cs + 1, window=65160, options=TCP_OPTS)
    xfer(rig, "2c", "TCP SYN-ACK to 10.10.2.100:P_tcp, seen by the client", s, c, sa,
         expect(sa, dst=CLI, dport=40001))
    a = IP(src=CLI, dst=SRV, id=rig.nid(), flags="DF") / TCP(
        sport=40001, dport=7100, flags="A", seq=cs + 1, ack=ss + 1, window=502)
    xfer(rig, "2d", "TCP ACK, outside", c, s, a, expect(a, src=POOL), nat={"tcp.sport": "P_tcp"})
    data = b"GET /nat-diff HTTP/1.0\r\n\r\n"
    dp = IP(src=CLI, dst=SRV, id=rig.nid(), flags="DF") / TCP(
        sport=40001, dport=7100, flags="PA", seq=cs + 1, ack=ss + 1, window=502) / Raw(data)
    g = xfer(rig, "2e", "TCP data, outside", c, s, dp, expect(dp, src=POOL), nat={"tcp.sport": "P_tcp"})
    # A router beyond the NAT asks for a smaller MTU, quoting the whole segment (as Linux
    # does, RFC 1812), then only the header and 8 bytes (the RFC 792 minimum).
    e = icmp_error(RTR, POOL, rig.nid(), 64, 3, 4, quote_of(g, 63), mtu=1400)
    xfer(rig, "2f", "ICMP frag needed from 10.10.2.77 quoting the whole TCP data segment, at the client",
         s, c, e, bytes(icmp_error(RTR, CLI, e[IP].id, 63, 3, 4, quote_of(bytes(dp), 63), mtu=1400)))
    e = icmp_error(RTR, POOL, rig.nid(), 64, 3, 4, quote_of(g, 63, 28), mtu=1400)
    xfer(rig, "2g", "ICMP frag needed from 10.10.2.77 quoting 28 bytes (IP + 8) of it, at the client",
         s, c, e, bytes(icmp_error(RTR, CLI, e[IP].id, 63, 3, 4, quote_of(bytes(dp), 63, 28), mtu=1400)))
    reply = b"HTTP/1.0 200 OK\r\n\r\nhello"
    rp = IP(src=SRV, dst=POOL, id=rig.nid(), flags="DF") / TCP(
        sport=7100, dport=p, flags="PA", seq=ss + 1, ack=cs + 1 + len(data), window=509) / Raw(reply)
    xfer(rig, "2h", "TCP data and ACK back, seen by the client", s, c, rp, expect(rp, dst=CLI, dport=40001))
    cseq, sseq = cs + 1 + len(data), ss + 1 + len(reply)
    f = IP(src=CLI, dst=SRV, id=rig.nid(), flags="DF") / TCP(
        sport=40001, dport=7100, flags="FA", seq=cseq, ack=sseq, window=502)
    xfer(rig, "2i", "TCP FIN, outside", c, s, f, expect(f, src=POOL), nat={"tcp.sport": "P_tcp"})
    f = IP(src=SRV, dst=POOL, id=rig.nid(), flags="DF") / TCP(
        sport=7100, dport=p, flags="FA", seq=sseq, ack=cseq + 1, window=509)
    xfer(rig, "2j", "TCP FIN back, seen by the client", s, c, f, expect(f, dst=CLI, dport=40001))
    a = IP(src=CLI, dst=SRV, id=rig.nid(), flags="DF") / TCP(
        sport=40001, dport=7100, flags="A", seq=cseq + 1, ack=sseq + 1, window=502)
    xfer(rig, "2k", "TCP last ACK, outside", c, s, a, expect(a, src=POOL), nat={"tcp.sport": "P_tcp"})


def seq_echo(rig):
    c, s = rig.c, rig.s
    # Host B takes identifier 0x4242 towards the server first (A's gets translated).
    q = IP(src=CLI_B, dst=SRV, id=rig.nid()) / ICMP(type=8, id=0x4242, seq=1) / Raw(b"nat-diff ping B")
    xfer(rig, "3a", "ICMP echo request 10.10.1.3 id 0x4242 (host B takes the id), outside", c, s, q,
         expect(q, src=POOL), nat={"icmp.id": "I_B"})
    for n, sid, rid in ((1, "3b", "3c"), (2, "3d", "3e")):
        q = IP(src=CLI, dst=SRV, id=rig.nid()) / ICMP(type=8, id=0x4242, seq=n) / Raw(b"nat-diff ping %d" % n)
        g = xfer(rig, sid, f"ICMP echo request 10.10.1.2 id 0x4242 seq {n} (id translated), outside",
                 c, s, q, expect(q, src=POOL), nat={"icmp.id": "I_echo"})
        r = IP(src=SRV, dst=POOL, id=rig.nid()) / ICMP(type=0, id=port_at(g, 0), seq=n) / Raw(b"nat-diff ping %d" % n)
        xfer(rig, rid, f"ICMP echo reply seq {n} to id I_echo, seen by the client with id 0x4242",
             s, c, r, expect(r, dst=CLI, id=0x4242))
    # Time exceeded about the last request, from a router beyond the NAT (quotes TTL 1).
    e = icmp_error(RTR, POOL, rig.nid(), 64, 11, 0, quote_of(g, 1))
    xfer(rig, "3f", "ICMP time exceeded from 10.10.2.77 about the echo request, at the client",
         s, c, e, bytes(icmp_error(RTR, CLI, e[IP].id, 63, 11, 0, quote_of(bytes(q), 1))))


def seq_errors(rig):
    c, s = rig.c, rig.s
    u = IP(src=CLI_B, dst=SRV, id=rig.nid()) / UDP(sport=5003, dport=7000) / Raw(b"B takes 5003")
    xfer(rig, "4a", "UDP 10.10.1.3:5003 -> 10.10.2.2:7000 (host B takes the port), outside", c, s, u,
         expect(u, src=POOL), nat={"udp.sport": "P_5003B"})
    u = IP(src=CLI, dst=SRV, id=rig.nid()) / UDP(sport=5003, dport=7000) / Raw(b"nat-diff udp for errors")
    g = xfer(rig, "4b", "UDP 10.10.1.2:5003 -> 10.10.2.2:7000 (port translated), outside", c, s, u,
             expect(u, src=POOL), nat={"udp.sport": "P_5003"})
    e = icmp_error(SRV, POOL, rig.nid(), 64, 3, 3, quote_of(g, 63))
    xfer(rig, "4c", "ICMP port unreachable from 10.10.2.2 quoting it whole, at the client", s, c, e,
         bytes(icmp_error(SRV, CLI, e[IP].id, 63, 3, 3, quote_of(bytes(u), 63))))
    e = icmp_error(RTR, POOL, rig.nid(), 64, 11, 0, quote_of(g, 1))
    xfer(rig, "4d", "ICMP time exceeded from 10.10.2.77 (TTL 1 in the quote), at the client", s, c, e,
         bytes(icmp_error(RTR, CLI, e[IP].id, 63, 11, 0, quote_of(bytes(u), 1))))
    e = icmp_error(RTR, POOL, rig.nid(), 64, 3, 4, quote_of(g, 63, 28), mtu=1280)
    xfer(rig, "4e", "ICMP frag needed from 10.10.2.77 quoting 28 bytes (IP + 8), at the client", s, c, e,
         bytes(icmp_error(RTR, CLI, e[IP].id, 63, 3, 4, quote_of(bytes(u), 63, 28), mtu=1280)))
    # Errors going out about the server's reply: from the inside host itself, and from a
    # made-up inside router (both leave from the NAT's public address, RFC 5508 REQ-4 c).
    r = IP(src=SRV, dst=POOL, id=rig.nid()) / UDP(sport=7000, dport=port_at(g, 0)) / Raw(b"reply to be quoted")
    h = xfer(rig, "4f", "UDP reply 10.10.2.2:7000 -> 10.10.2.100:P_5003, seen by the client", s, c, r,
             expect(r, dst=CLI, dport=5003))
    e = icmp_error(CLI, SRV, rig.nid(), 64, 3, 3, quote_of(h, 63))
    xfer(rig, "4g", "ICMP port unreachable from 10.10.1.2 about the reply, outside", c, s, e,
         bytes(icmp_error(POOL, SRV, e[IP].id, 63, 3, 3, quote_of(bytes(r), 63))),
         nat={"q.udp.dport": "P_5003"})
    e = icmp_error(RTR_IN, SRV, rig.nid(), 64, 3, 1, quote_of(h, 1))
    xfer(rig, "4h", "ICMP host unreachable from 10.10.1.77 about the reply, outside", c, s, e,
         bytes(icmp_error(POOL, SRV, e[IP].id, 63, 3, 1, quote_of(bytes(r), 1))),
         nat={"q.udp.dport": "P_5003"})


def seq_dnat(rig):
    c, s = rig.c, rig.s
    syn = IP(src=SRV, dst=GW_OUT, id=rig.nid(), flags="DF") / TCP(
        sport=41000, dport=8080, flags="S", seq=7000, window=64240, options=TCP_OPTS)
    g = xfer(rig, "5a", "DNAT: TCP SYN 10.10.2.2:41000 -> 10.10.2.1:8080, at the client", s, c, syn,
             expect(syn, dst=CLI, dport=80))
    sa = IP(src=CLI, dst=SRV, id=rig.nid(), flags="DF") / TCP(
        sport=80, dport=41000, flags="SA", seq=9000, ack=7001, window=65160, options=TCP_OPTS)
    xfer(rig, "5b", "DNAT: SYN-ACK from 10.10.1.2:80, outside as 10.10.2.1:8080", c, s, sa,
         expect(sa, src=GW_OUT, sport=8080))
    a = IP(src=SRV, dst=GW_OUT, id=rig.nid(), flags="DF") / TCP(
        sport=41000, dport=8080, flags="A", seq=7001, ack=9001, window=502)
    xfer(rig, "5c", "DNAT: ACK, at the client", s, c, a, expect(a, dst=CLI, dport=80))
    d = IP(src=SRV, dst=GW_OUT, id=rig.nid(), flags="DF") / TCP(
        sport=41000, dport=8080, flags="PA", seq=7001, ack=9001, window=502) / Raw(b"GET / HTTP/1.0\r\n\r\n")
    xfer(rig, "5d", "DNAT: data, at the client", s, c, d, expect(d, dst=CLI, dport=80))
    d = IP(src=CLI, dst=SRV, id=rig.nid(), flags="DF") / TCP(
        sport=80, dport=41000, flags="PA", seq=9001, ack=7019, window=509) / Raw(b"HTTP/1.0 200 OK\r\n\r\n")
    xfer(rig, "5e", "DNAT: data back from 10.10.1.2:80, outside as 10.10.2.1:8080", c, s, d,
         expect(d, src=GW_OUT, sport=8080))
    # ICMP errors about the DNAT'd SYN, sent inside: by the DNAT target itself, and by a
    # made-up router on the inside, whose private address the NAT replaces with its own
    # public one (RFC 5508 REQ-4 c), as Linux does).
    e = icmp_error(CLI, SRV, rig.nid(), 64, 3, 3, quote_of(g, 63))
    xfer(rig, "5f", "DNAT: ICMP port unreachable from 10.10.1.2 about the SYN, outside", c, s, e,
         bytes(icmp_error(GW_OUT, SRV, e[IP].id, 63, 3, 3, quote_of(bytes(syn), 63))))
    e = icmp_error(RTR_IN, SRV, rig.nid(), 64, 3, 1, quote_of(g, 1))
    xfer(rig, "5g", "DNAT: ICMP host unreachable from 10.10.1.77 about the SYN, outside", c, s, e,
         bytes(icmp_error(GW_OUT, SRV, e[IP].id, 63, 3, 1, quote_of(bytes(syn), 1))))


EIM_NOTE = ("Linux reuses an inside endpoint's mapping only while the outside 5-tuple stays "
            "unique (here host B holds 10.10.2.100:5000 -> 10.10.2.3:7001): not endpoint-"
            "independent (RFC 4787 REQ-1); Ferry's mappings are")


def seq_eim(rig):
    c, s = rig.c, rig.s
    # A (10.10.1.2:5000) holds P_udp towards 10.10.2.2:7000 since 1a. Host B's
    # 10.10.1.3:5000 to a second server first: Linux gives it A's outside port too (the
    # 5-tuple differs), Ferry gives B its own mapping.
    u = IP(src=CLI_B, dst=SRV2, id=rig.nid()) / UDP(sport=5000, dport=7001) / Raw(b"eim B->D2")
    g = xfer(rig, "6a", "UDP 10.10.1.3:5000 -> 10.10.2.3:7001 (another host, same port), outside",
             c, s, u, expect(u, src=POOL), nat={"udp.sport": "P_B"},
             may={"udp.sport": "Linux gives B the outside port A holds (the 5-tuple differs); "
                  "Ferry maps each inside endpoint to its own outside port"})
    r = IP(src=SRV2, dst=POOL, id=rig.nid()) / UDP(sport=7001, dport=port_at(g, 0)) / Raw(b"eim D2->B")
    xfer(rig, "6b", "UDP reply to host B's mapping, seen by the client as 10.10.1.3:5000", s, c, r,
         expect(r, dst=CLI_B, dport=5000))
    u = IP(src=CLI, dst=SRV2, id=rig.nid()) / UDP(sport=5000, dport=7001) / Raw(b"eim A->D2")
    g = xfer(rig, "6c", "UDP 10.10.1.2:5000 -> 10.10.2.3:7001 (A to a new destination), outside",
             c, s, u, expect(u, src=POOL), nat={"udp.sport": "P_udp"},
             may={"udp.sport": EIM_NOTE})
    r = IP(src=SRV2, dst=POOL, id=rig.nid()) / UDP(sport=7001, dport=port_at(g, 0)) / Raw(b"eim D2->A")
    xfer(rig, "6d", "UDP reply from 10.10.2.3:7001 to A's mapping, seen by the client", s, c, r,
         expect(r, dst=CLI, dport=5000))
    u = IP(src=CLI, dst=SRV, id=rig.nid()) / UDP(sport=5000, dport=7001) / Raw(b"eim A->D3")
    xfer(rig, "6e", "UDP 10.10.1.2:5000 -> 10.10.2.2:7001 (same host, new port), outside",
         c, s, u, expect(u, src=POOL), nat={"udp.sport": "P_udp"},
         may={"udp.sport": "Linux reuses the inside endpoint's newest mapping when it is "
              "unique (find_appropriate_src), here the one made in 6c"})
    u = IP(src=CLI, dst=SRV, id=rig.nid()) / UDP(sport=123, dport=123) / Raw(b"low port")
    xfer(rig, "6f", "UDP 10.10.1.2:123 -> 10.10.2.2:123 (a port below 1024), outside",
         c, s, u, expect(u, src=POOL), nat={"udp.sport": "P_123"})


SEQUENCES = [seq_udp, seq_tcp, seq_echo, seq_errors, seq_dnat, seq_eim]


def run(rig):
    rig.c.gw = rig.c.arp(CLI, GW_IN)
    rig.s.gw = rig.s.arp(SRV, GW_OUT)
    if not rig.c.gw or not rig.s.gw:
        return f"no ARP answer from the router (inside {rig.c.gw}, outside {rig.s.gw})"
    for i, seq in enumerate(SEQUENCES):
        rig.next_id = 0x1000 * (i + 1)  # IP IDs: the same in both rigs whatever was lost
        try:
            seq(rig)
        except Skip as e:
            print(f"  ({rig.label}: {seq.__name__} stopped: {e})")
    return None


# ---- comparison and report ----

LEGEND = """\
nat-diff: fields compared for every packet, kernel (nftables) against ferry and both
against the expected packet (a step's table is printed when it fails or differs; all of
them with ND_VERBOSE=1):
  eth      src (the router's MAC), dst (this host's)
  ip       ihl tos len id flags frag ttl proto src dst, chksum (value and validity)
  udp      sport dport len chksum (valid, or 0 kept as 0) payload
  tcp      sport dport seq ack dataofs flags window urgptr options chksum payload
  icmp     type code chksum; echo: id seq payload; errors: the 4 bytes after the checksum
           and the quoted packet: q.ip.* as above, q.udp/q.tcp/q.icmp ports, seq or id
           and checksum (value and validity when the quote is whole), q.payload, and
           q.as_sent: the quote equals, byte for byte, the packet as its sender sent it
           (with the TTL of where the error was made)
  Outside-side ports and echo identifiers the NAT chooses are symbols (P_udp, I_echo, ...):
  every packet of a mapping must carry the same value; transport checksums that cover
  them are compared for validity. On the inside side every byte is determined: values."""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", required=True, help="CLIENT_NS,SERVER_NS of the Linux router")
    ap.add_argument("--ferry", required=True, help="CLIENT_NS,SERVER_NS of ferryd")
    ap.add_argument("--pcap-dir")
    ap.add_argument("--counts", help="write 'PASSED FAILED' here")
    ap.add_argument("--table", help="write every step's table here")
    ap.add_argument("--verbose", action="store_true",
                    help="print every step's table (else only those that fail or differ)")
    a = ap.parse_args()
    rigs = [Rig("kernel", *a.kernel.split(",")), Rig("ferry", *a.ferry.split(","))]
    t0 = time.monotonic()
    setup_err = {}
    for rig in rigs:
        setup_err[rig.label] = run(rig)
    for rig in rigs:  # late or duplicate packets
        for p in (rig.c, rig.s):
            p.strays += [d for d in p.read(0.3) if not is_arp(d)]
    took = time.monotonic() - t0

    passed = failed = 0
    findings = []

    def ok(msg):
        nonlocal passed
        print(f"ok   {msg}")
        passed += 1

    def fail(msg, detail):
        nonlocal failed
        print(f"FAIL {msg}: {detail}")
        failed += 1

    for label, err in setup_err.items():
        if err:
            fail(f"{label} rig", err)

    print(LEGEND)
    w = (18, 26, 26, 26)
    tables = []
    for sid in REC.order:
        st = REC.steps[sid]
        t = [f"-- {sid}  {st['title']}",
             f"   {'field':<{w[0]}} {'expected':<{w[1]}} {'kernel (nftables)':<{w[2]}} {'ferry':<{w[3]}}"]
        kobs, fobs = st["obs"].get("kernel"), st["obs"].get("ferry")
        bad, notes = [], []
        fields = [f for f, _ in st["expected"]]
        for o in (kobs, fobs):
            for f in o or {}:
                if f not in fields:
                    fields.append(f)
        exp = dict(st["expected"])
        for f in fields:
            want = str(exp.get(f, "(absent)"))
            kc, kd = (kobs or {}).get(f, ("(absent)", "(absent)")) if kobs else ("(lost)", "(lost)")
            fc, fd = (fobs or {}).get(f, ("(absent)", "(absent)")) if fobs else ("(lost)", "(lost)")
            verdict = ""
            if kobs is None or fobs is None:
                pass  # the step fails as a whole: nothing arrived
            elif fc != want:
                verdict = "FAIL"
                bad.append(f"{f}: ferry {fd}, kernel {kd}, expected {want}")
            elif kc != want:
                if f in st["may"]:
                    verdict = "note"
                    notes.append(f"{sid} {f}: kernel {kd}, ferry {fd}: {st['may'][f]}")
                else:
                    verdict = "FAIL"
                    bad.append(f"{f}: kernel {kd}, ferry {fd}, expected {want}")
            t.append(f"   {f:<{w[0]}} {want:<{w[1]}} {kd:<{w[2]}} {fd:<{w[3]}} {verdict}".rstrip())
        findings += notes
        tables += t
        if a.verbose or bad or notes or kobs is None or fobs is None:
            print("\n".join(t))
        if kobs is None or fobs is None:
            lost = [r for r, o in (("kernel", kobs), ("ferry", fobs)) if o is None]
            fail(f"{sid} {st['title']}", f"nothing arrived ({' and '.join(lost)})")
        elif bad:
            fail(f"{sid} {st['title']}", "; ".join(bad))
        else:
            ok(f"{sid} {st['title']} ({len(fields)} fields{', kernel differs: see findings' if notes else ''})")

    for rig in rigs:
        strays = rig.c.strays + rig.s.strays
        if strays:
            fail(f"no stray packets ({rig.label})", "; ".join(Ether(d).summary() for d in strays[:8])
                 + (f" (+{len(strays) - 8} more)" if len(strays) > 8 else ""))
        else:
            ok(f"no stray or duplicate packets ({rig.label})")

    print("-- the NAT's choices (symbols above; numbers may differ between the rigs)")
    kinds = sorted({k for r in rigs for k in r.syms})
    for k in kinds:
        vals = {r.label: r.syms.get(k) for r in rigs}
        kv, fv = (vals[r] if vals[r] is not None else "-" for r in ("kernel", "ferry"))
        print(f"   {k[1]:<8} {'(' + k[0] + ')':<7} kernel {kv:<6} ferry {fv}")
    # Port choice: which inside ports/identifiers each kept, and what each picked when
    # the inside one was taken (the legitimate differences; mapping consistency and
    # translation back are checked above).
    inside = {("udp", "P_udp"): 5000, ("tcp", "P_tcpB"): 40001, ("icmp", "I_B"): 0x4242,
              ("udp", "P_5003B"): 5003, ("udp", "P_123"): 123}
    taken = {("tcp", "P_tcp"): 40001, ("icmp", "I_echo"): 0x4242, ("udp", "P_5003"): 5003}
    ks, fs = rigs[0].syms, rigs[1].syms

    def kept(syms):
        return [k[1] for k, v in inside.items() if syms.get(k) == v]

    if kept(ks) != kept(fs):
        findings.append(
            f"port preservation: Linux kept the inside port or identifier for "
            f"{', '.join(kept(ks)) or 'none'}; Ferry for {', '.join(kept(fs)) or 'none'}"
            + (f". Below 1024 Linux keeps 123 (it maps 1-1023 within 1-1023, as RFC 4787 "
               f"REQ-3 a) recommends); Ferry maps it into its pool's port range (1024-65535 "
               f"by default): {fs.get(('udp', 'P_123'))}"
               if ks.get(("udp", "P_123")) == 123 and fs.get(("udp", "P_123")) != 123 else ""))
    picks = [f"{k[1]} (inside {v}): Linux {ks[k]}, Ferry {fs[k]}"
             for k, v in taken.items() if k in ks and k in fs]
    if picks:
        findings.append("when the inside port or identifier is taken: " + "; ".join(picks)
                        + " (Linux picks at random in the range, Ferry here the next one up)")
    for n in findings:
        print(f"note {n}")
    print(f"   ({took:.1f} s of traffic)")
    if a.table:
        with open(a.table, "w") as f:
            f.write("\n".join(tables) + "\n")
    if a.pcap_dir:
        for rig in rigs:
            for side, p in (("client", rig.c), ("server", rig.s)):
                if p.frames:
                    wrpcap(os.path.join(a.pcap_dir, f"{rig.label}-{side}.pcap"), p.frames)
    if a.counts:
        with open(a.counts, "w") as f:
            f.write(f"{passed} {failed}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
