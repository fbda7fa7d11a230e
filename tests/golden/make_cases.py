#!/usr/bin/python3
"""Generate Ferry's golden pcap fixtures (tests/golden.rs reads them).

The expected packets are built here from the RFCs, with scapy, independently of Ferry's
code: that is the point of a golden test. Never copy ferryd's output into an expected file;
if ferryd disagrees with what is built here, either this script has the RFC wrong or Ferry
has a bug, and a person decides which.

Regenerate (needs `apt-get install -y python3-scapy`):

    /usr/bin/python3 tests/golden/make_cases.py

Writes, next to this script, for each case: `<case>.in.pcap` (frames sent into the port
"inside"), `<case>.expected.pcap` (frames expected out of the one port the case names, in
order; empty when nothing may come out), and `cases.txt`, one line per case:

    name <TAB> in-port <TAB> out-port|none <TAB> counters <TAB> intent

`counters` are the increments the case adds to ferryd's `total` counters besides `rx`
(one per input frame) and `tx` (one per expected frame), e.g. `icmp_errors=1`, or `-`.
Every `drop_*` counter not named by some case must stay 0.

The topology matches the config tests/golden.rs writes:

    host 10.10.1.2 / fd10:1::2 (02:00:00:00:01:02)
      |  inside: net_pcap0, 10.10.1.1/24, fd10:1::1/64, MTU 1500, MAC 02:70:63:61:70:00
    ferryd
      |  outside: net_pcap1, 10.10.2.1/24, fd10:2::1/64, MTU 1280, MAC 02:70:63:61:70:01
    next hop 10.10.2.2 / fd10:2::2 (02:00:00:00:02:02, static neighbours)

    routes: 10.20.0.0/16 via 10.10.2.2, fd20::/48 via fd10:2::2; no default route.

DPDK's net_pcap gives its ports the MACs 02:70:63:61:70:<n> in probe order; the test checks
ferryd's "port up" log lines against the MACs used here.
"""

import os
import struct
import sys

from scapy.layers.inet import ICMP, IP, UDP, IPOption_NOP, fragment
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Padding, Raw
from scapy.utils import checksum

HERE = os.path.dirname(os.path.abspath(__file__))

IN_MAC = "02:70:63:61:70:00"  # ferryd port "inside" (net_pcap0)
OUT_MAC = "02:70:63:61:70:01"  # ferryd port "outside" (net_pcap1)
HOST_MAC = "02:00:00:00:01:02"  # the host on inside
NH_MAC = "02:00:00:00:02:02"  # the next hop on outside
OTHER_MAC = "02:00:00:00:09:09"  # nobody ferryd knows

IN4, HOST4 = "10.10.1.1", "10.10.1.2"
IN6, HOST6 = "fd10:1::1", "fd10:1::2"
FAR4, FAR6 = "10.20.1.1", "fd20::1"  # behind the next hop
NOROUTE4, NOROUTE6 = "192.0.2.1", "2001:db8::1"
OUT_MTU = 1280

# RFC 1812 4.3.2.3: an ICMPv4 error quotes as much of the original datagram as fits in
# 576 bytes (IP header 20 + ICMP header 8 + quote). RFC 4443 2.4(c): an ICMPv6 error
# must not exceed the IPv6 minimum MTU, 1280 bytes (IPv6 header 40 + ICMPv6 header 8 + quote).
V4_ERROR_MAX = 576
V6_ERROR_MAX = 1280
ERROR_TTL = 64


def payload(n, seed=0):
    """n deterministic, recognisable payload bytes."""
    return bytes((seed + i) & 0xFF for i in range(n))


def ip_bytes(frame):
    """The L3 datagram of a frame as it is on the wire, without link padding."""
    frame = Ether(bytes(frame))  # dissect the built bytes: length fields filled in
    layer = frame.getlayer(IP) or frame.getlayer(IPv6)
    raw = bytes(layer)
    if frame.haslayer(IP):
        return raw[: frame[IP].len]
    return raw[: 40 + frame[IPv6].plen]


def icmp4_error(orig, icmp_type, code, rest=0):
    """RFC 792 / RFC 1812 4.3.2: an ICMPv4 error from ferryd's inside address to the
    sender, back to its MAC: IP id 0, DF clear, TOS 0, TTL 64, quote up to 576 bytes."""
    quote = ip_bytes(orig)[: V4_ERROR_MAX - 20 - 8]
    msg = struct.pack("!BBHI", icmp_type, code, 0, rest) + quote
    msg = msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]
    return (
        Ether(dst=orig[Ether].src, src=IN_MAC)
        / IP(src=IN4, dst=orig[IP].src, ttl=ERROR_TTL, id=0, flags=0, tos=0, proto=1)
        / Raw(msg)
    )


def icmp6_error(orig, layer):
    """RFC 4443: an ICMPv6 error from ferryd's inside address to the sender: traffic
    class and flow label 0, hop limit 64, quote up to 1280 bytes in all."""
    quote = ip_bytes(orig)[: V6_ERROR_MAX - 40 - 8]
    return (
        Ether(dst=orig[Ether].src, src=IN_MAC)
        / IPv6(src=IN6, dst=orig[IPv6].src, hlim=ERROR_TTL, tc=0, fl=0)
        / layer
        / Raw(quote)
    )


def padded(frame):
    """Pad a frame to the 60-byte Ethernet minimum (without FCS), as a wire would."""
    n = len(frame)
    return frame / Padding(b"\x00" * (60 - n)) if n < 60 else frame


CASES = []


def case(name, intent, inputs, out_port="none", expected=(), counters=None):
    assert out_port in ("inside", "outside", "none")
    assert (out_port == "none") == (len(expected) == 0), name
    CASES.append((name, intent, list(inputs), out_port, list(expected), counters or {}))


def host_v4(dst, ttl=64, **kw):
    return Ether(dst=IN_MAC, src=HOST_MAC) / IP(src=HOST4, dst=dst, ttl=ttl, **kw)


def host_v6(dst, hlim=64, **kw):
    return Ether(dst=IN_MAC, src=HOST_MAC) / IPv6(src=HOST6, dst=dst, hlim=hlim, **kw)


def build():
    # ---- forwarding ----
    body = UDP(sport=40000, dport=40100) / Raw(payload(100, 1))
    inp = host_v4(FAR4, ttl=64, id=0x1111, flags="DF", tos=0x10) / body
    exp = Ether(dst=NH_MAC, src=OUT_MAC) / IP(
        src=HOST4, dst=FAR4, ttl=63, id=0x1111, flags="DF", tos=0x10
    ) / body
    case(
        "ipv4_udp_forward",
        "IPv4 UDP to 10.20.1.1 leaves on outside to the next hop's MAC from outside's MAC, "
        "TTL 64->63, IP checksum updated, everything else unchanged",
        [inp],
        "outside",
        [exp],
    )

    body = UDP(sport=40000, dport=40101) / Raw(payload(6, 2))
    inp = padded(host_v4(FAR4, ttl=9, id=0x2222) / body)
    exp = Ether(dst=NH_MAC, src=OUT_MAC) / IP(src=HOST4, dst=FAR4, ttl=8, id=0x2222) / body
    case(
        "ipv4_udp_forward_padded",
        "a small IPv4 UDP frame with Ethernet padding is forwarded (TTL 9->8) without the "
        "padding: the datagram is its IP total length",
        [inp],
        "outside",
        [exp],
    )

    body = UDP(sport=40001, dport=40100) / Raw(payload(100, 3))
    inp = host_v6(FAR6, hlim=64, tc=0x20, fl=0x12345) / body
    exp = Ether(dst=NH_MAC, src=OUT_MAC) / IPv6(
        src=HOST6, dst=FAR6, hlim=63, tc=0x20, fl=0x12345
    ) / body
    case(
        "ipv6_udp_forward",
        "IPv6 UDP to fd20::1 leaves on outside to the next hop's MAC, hop limit 64->63, "
        "traffic class and flow label kept",
        [inp],
        "outside",
        [exp],
    )

    # ---- ICMP errors ----
    inp = padded(host_v4(FAR4, ttl=1, id=0x3333) / UDP(sport=40002, dport=33434) / Raw(b"ttl1"))
    case(
        "ipv4_ttl_exceeded",
        "IPv4 UDP with TTL 1 to a routed destination: ICMP time exceeded (11/0) back to the "
        "sender on inside from 10.10.1.1, quoting the whole datagram (not the padding)",
        [inp],
        "inside",
        [icmp4_error(inp, 11, 0)],
        {"icmp_errors": 1, "drop_ttl_exceeded": 1},
    )

    inp = host_v6(FAR6, hlim=1) / UDP(sport=40003, dport=33434) / Raw(payload(40, 4))
    case(
        "ipv6_hop_limit_exceeded",
        "IPv6 UDP with hop limit 1 to a routed destination: ICMPv6 time exceeded (3/0) "
        "back to the sender from fd10:1::1, quoting the whole packet",
        [inp],
        "inside",
        [icmp6_error(inp, ICMPv6TimeExceeded(code=0))],
        {"icmp_errors": 1, "drop_ttl_exceeded": 1},
    )

    inp = host_v4(NOROUTE4, id=0x4444) / UDP(sport=40004, dport=40103) / Raw(payload(64, 5))
    case(
        "ipv4_no_route",
        "IPv4 to 192.0.2.1 with no route (and no default): ICMP destination unreachable, "
        "net unreachable (3/0, RFC 1812 5.2.7.1) back to the sender",
        [inp],
        "inside",
        [icmp4_error(inp, 3, 0)],
        {"icmp_errors": 1, "drop_no_route": 1},
    )

    inp = host_v6(NOROUTE6) / UDP(sport=40005, dport=40103) / Raw(payload(64, 6))
    case(
        "ipv6_no_route",
        "IPv6 to 2001:db8::1 with no route: ICMPv6 destination unreachable, no route "
        "(1/0) back to the sender",
        [inp],
        "inside",
        [icmp6_error(inp, ICMPv6DestUnreach(code=0))],
        {"icmp_errors": 1, "drop_no_route": 1},
    )

    big = UDP(sport=40006, dport=40102) / Raw(payload(1400 - 28, 7))
    inp = host_v4(FAR4, id=0x5555, flags="DF") / big
    assert len(inp) == 14 + 1400
    case(
        "ipv4_frag_needed",
        "1400-byte IPv4 with DF to outside (MTU 1280): ICMP fragmentation needed (3/4) "
        "with next-hop MTU 1280 (RFC 1191), quoting the first 548 bytes (576 in all)",
        [inp],
        "inside",
        [icmp4_error(inp, 3, 4, OUT_MTU)],
        {"icmp_errors": 1, "drop_too_big": 1},
    )

    big = UDP(sport=40009, dport=40104) / Raw(payload(1400 - 28, 10))
    inp = host_v4(FAR4, id=0x7777) / big
    assert len(inp) == 14 + 1400
    fwd = IP(src=HOST4, dst=FAR4, ttl=63, id=0x7777) / big
    frags = fragment(fwd, fragsize=(OUT_MTU - 20) // 8 * 8)
    assert len(frags) == 2
    case(
        "ipv4_fragmented",
        "1400-byte IPv4 without DF to outside (MTU 1280): forwarded as 2 fragments (RFC 791 "
        "3.2, RFC 1812 5.2.6), payloads of 1256 and 124 bytes at offsets 0 and 1256, MF on "
        "the first, same id, TTL 63",
        [inp],
        "outside",
        [Ether(dst=NH_MAC, src=OUT_MAC) / f for f in frags],
        {"fragmented": 1},
    )

    big = UDP(sport=40007, dport=40102) / Raw(payload(1400 - 48, 8))
    inp = host_v6(FAR6) / big
    assert len(inp) == 14 + 1400
    case(
        "ipv6_packet_too_big",
        "1400-byte IPv6 to outside (MTU 1280): ICMPv6 packet too big (2/0) with MTU 1280, "
        "quoting the first 1232 bytes (1280 in all)",
        [inp],
        "inside",
        [icmp6_error(inp, ICMPv6PacketTooBig(mtu=OUT_MTU))],
        {"icmp_errors": 1, "drop_too_big": 1},
    )

    err = IP(src="10.20.9.9", dst=FAR4, ttl=1, id=7) / UDP(sport=1, dport=2)
    inp = host_v4(FAR4, ttl=1, id=0x6666) / ICMP(type=3, code=3) / Raw(bytes(err))
    case(
        "ipv4_no_error_about_error",
        "an ICMP error (3/3) with TTL 1 is dropped without an ICMP error about it "
        "(RFC 1122 3.2.2, RFC 1812 4.3.2.7)",
        [inp],
        "none",
        [],
        {"drop_ttl_exceeded": 1},
    )

    # ---- for ferryd itself ----
    data = payload(56, 9)
    inp = host_v4(IN4, ttl=60, id=0x7777, flags="DF") / ICMP(type=8, id=0x77, seq=1) / Raw(data)
    exp = (
        Ether(dst=HOST_MAC, src=IN_MAC)
        / IP(src=IN4, dst=HOST4, ttl=64, id=0x7777, flags="DF")
        / ICMP(type=0, id=0x77, seq=1)
        / Raw(data)
    )
    case(
        "ipv4_echo_reply",
        "ICMP echo request to 10.10.1.1: echo reply (RFC 792: addresses swapped, type 0, "
        "checksums recomputed; TTL 64, id and DF kept) back to the sender's MAC",
        [inp],
        "inside",
        [exp],
        {"echo_replies": 1},
    )

    data = payload(56, 10)
    inp = host_v6(IN6, hlim=60) / ICMPv6EchoRequest(id=0x66, seq=2, data=data)
    exp = (
        Ether(dst=HOST_MAC, src=IN_MAC)
        / IPv6(src=IN6, dst=HOST6, hlim=64)
        / ICMPv6EchoReply(id=0x66, seq=2, data=data)
    )
    case(
        "ipv6_echo_reply",
        "ICMPv6 echo request to fd10:1::1: echo reply (129, RFC 4443 4.2), addresses "
        "swapped, hop limit 64, back to the sender's MAC",
        [inp],
        "inside",
        [exp],
        {"echo_replies": 1},
    )

    inp = padded(
        Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST_MAC)
        / ARP(op=1, hwsrc=HOST_MAC, psrc=HOST4, hwdst="00:00:00:00:00:00", pdst=IN4)
    )
    exp = padded(
        Ether(dst=HOST_MAC, src=IN_MAC)
        / ARP(op=2, hwsrc=IN_MAC, psrc=IN4, hwdst=HOST_MAC, pdst=HOST4)
    )
    case(
        "arp_reply",
        "broadcast ARP request for 10.10.1.1: ARP reply (RFC 826) with inside's MAC, "
        "unicast to the asker; the 60-byte frame keeps its (zero) padding",
        [inp],
        "inside",
        [exp],
        {"arp_replies": 1},
    )

    snm = "ff02::1:ff00:1"  # solicited-node multicast of fd10:1::1
    inp = (
        Ether(dst="33:33:ff:00:00:01", src=HOST_MAC)
        / IPv6(src=HOST6, dst=snm, hlim=255)
        / ICMPv6ND_NS(tgt=IN6)
        / ICMPv6NDOptSrcLLAddr(lladdr=HOST_MAC)
    )
    exp = (
        Ether(dst=HOST_MAC, src=IN_MAC)
        / IPv6(src=IN6, dst=HOST6, hlim=255)
        / ICMPv6ND_NA(R=1, S=1, O=1, tgt=IN6)
        / ICMPv6NDOptDstLLAddr(lladdr=IN_MAC)
    )
    case(
        "nd_solicit_advert",
        "neighbour solicitation for fd10:1::1 to its solicited-node group: neighbour "
        "advertisement (RFC 4861 7.2.4: Router, Solicited, Override; target link-layer "
        "address inside's MAC; hop limit 255) unicast to the solicitor",
        [inp],
        "inside",
        [exp],
        {"nd_adverts": 1},
    )

    inp = (
        Ether(dst="33:33:ff:00:00:01", src=HOST_MAC)
        / IPv6(src="::", dst=snm, hlim=255)
        / ICMPv6ND_NS(tgt=IN6)
    )
    exp = (
        Ether(dst="33:33:00:00:00:01", src=IN_MAC)
        / IPv6(src=IN6, dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(R=1, S=0, O=1, tgt=IN6)
        / ICMPv6NDOptDstLLAddr(lladdr=IN_MAC)
    )
    case(
        "nd_dad_defended",
        "duplicate address detection probe (source ::) for fd10:1::1: neighbour "
        "advertisement to all-nodes ff02::1 with Solicited clear (RFC 4861 7.2.4)",
        [inp],
        "inside",
        [exp],
        {"nd_adverts": 1},
    )

    data = payload(32, 16)
    inp = host_v4(IN4, ttl=1, id=0x7878) / ICMP(type=8, id=0x78, seq=3) / Raw(data)
    exp = (
        Ether(dst=HOST_MAC, src=IN_MAC)
        / IP(src=IN4, dst=HOST4, ttl=64, id=0x7878)
        / ICMP(type=0, id=0x78, seq=3)
        / Raw(data)
    )
    case(
        "ipv4_echo_ttl1",
        "echo request to 10.10.1.1 with TTL 1 is answered: TTL only matters when "
        "forwarding, a datagram for the node itself is not time-exceeded",
        [inp],
        "inside",
        [exp],
        {"echo_replies": 1},
    )

    data = payload(32, 17)
    inp = host_v4("10.10.2.1", ttl=64, id=0x7979) / ICMP(type=8, id=0x79, seq=4) / Raw(data)
    exp = (
        Ether(dst=HOST_MAC, src=IN_MAC)
        / IP(src="10.10.2.1", dst=HOST4, ttl=64, id=0x7979)
        / ICMP(type=0, id=0x79, seq=4)
        / Raw(data)
    )
    case(
        "ipv4_echo_other_port_address",
        "echo request on inside to outside's address 10.10.2.1: the reply comes from "
        "10.10.2.1 (the address pinged) back out of inside",
        [inp],
        "inside",
        [exp],
        {"echo_replies": 1},
    )

    inp = host_v4(IN4, id=0x7a7a) / ICMP(type=8, id=0x7a, seq=5, chksum=0x1234) / Raw(payload(32))
    case(
        "ipv4_echo_bad_checksum",
        "an echo request with a wrong ICMP checksum gets no reply (drop_icmp_bad_checksum)",
        [inp],
        "none",
        [],
        {"drop_icmp_bad_checksum": 1},
    )

    opts = [IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP()]
    body = UDP(sport=40012, dport=40104) / Raw(payload(80, 18))
    inp = host_v4(FAR4, ttl=30, id=0x7b7b, options=opts) / body
    exp = Ether(dst=NH_MAC, src=OUT_MAC) / IP(
        src=HOST4, dst=FAR4, ttl=29, id=0x7b7b, options=opts
    ) / body
    case(
        "ipv4_options_forward",
        "IPv4 with a 24-byte header (four NOP options) is forwarded with its options, "
        "TTL 30->29, header checksum over the whole header",
        [inp],
        "outside",
        [exp],
    )

    inp = host_v4(FAR4, ttl=1, id=0x7c7c, options=opts) / UDP(sport=40013, dport=33434) / Raw(
        payload(20, 19)
    )
    case(
        "ipv4_ttl_exceeded_with_options",
        "TTL 1 on an IPv4 datagram with options: the time-exceeded quote starts with the "
        "whole 24-byte original header, options included",
        [inp],
        "inside",
        [icmp4_error(inp, 11, 0)],
        {"icmp_errors": 1, "drop_ttl_exceeded": 1},
    )

    inp = host_v4(FAR4, ttl=1, id=0x7d7d, frag=100, proto=17) / Raw(payload(64, 20))
    case(
        "ipv4_fragment_no_error",
        "a non-first fragment with TTL 1 is dropped without an ICMP error "
        "(RFC 1122 3.2.2, RFC 1812 4.3.2.7)",
        [inp],
        "none",
        [],
        {"drop_ttl_exceeded": 1},
    )

    quoted = IPv6(src=HOST6, dst="fd20::9", hlim=3) / UDP(sport=1, dport=2)
    inp = host_v6(FAR6, hlim=1) / ICMPv6DestUnreach(code=4) / Raw(bytes(quoted))
    case(
        "ipv6_no_error_about_error",
        "an ICMPv6 error (1/4) with hop limit 1 is dropped without an ICMPv6 error about "
        "it (RFC 4443 2.4(e.1))",
        [inp],
        "none",
        [],
        {"drop_ttl_exceeded": 1},
    )

    inp = (
        Ether(dst=IN_MAC, src=HOST_MAC)
        / IPv6(src=HOST6, dst=IN6, hlim=255)
        / ICMPv6ND_NS(tgt=IN6)
    )
    exp = (
        Ether(dst=HOST_MAC, src=IN_MAC)
        / IPv6(src=IN6, dst=HOST6, hlim=255)
        / ICMPv6ND_NA(R=1, S=1, O=1, tgt=IN6)
        / ICMPv6NDOptDstLLAddr(lladdr=IN_MAC)
    )
    case(
        "nd_unicast_solicit",
        "unicast neighbour solicitation for fd10:1::1 (reachability probe, no source "
        "link-layer option): solicited advertisement back to the prober",
        [inp],
        "inside",
        [exp],
        {"nd_adverts": 1},
    )

    inp = (
        Ether(dst="33:33:ff:00:00:01", src=HOST_MAC)
        / IPv6(src=HOST6, dst=snm, hlim=64)
        / ICMPv6ND_NS(tgt=IN6)
        / ICMPv6NDOptSrcLLAddr(lladdr=HOST_MAC)
    )
    case(
        "nd_solicit_bad_hop_limit",
        "a neighbour solicitation with hop limit 64 (not 255) is silently discarded "
        "(RFC 4861 7.1.1; drop_icmp_malformed)",
        [inp],
        "none",
        [],
        {"drop_icmp_malformed": 1},
    )

    inp = padded(
        Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST_MAC)
        / ARP(op=1, hwsrc=HOST_MAC, psrc=HOST4, hwdst="00:00:00:00:00:00", pdst="10.10.1.77")
    )
    case(
        "arp_request_not_ours",
        "an ARP request for 10.10.1.77 (not ferryd's) is not answered (counted as consumed)",
        [inp],
        "none",
        [],
        {"consumed": 1},
    )

    # ---- malformed and unwanted input: nothing comes out ----
    good = host_v4(FAR4, id=0x8888) / UDP(sport=40008, dport=40103) / Raw(payload(64, 11))
    case(
        "ipv4_truncated_header",
        "an IPv4 frame cut 10 bytes into the IP header is dropped (drop_ipv4_truncated)",
        [Ether(bytes(good)[: 14 + 10])],
        "none",
        [],
        {"drop_ipv4_truncated": 1},
    )

    case(
        "ipv4_length_beyond_frame",
        "an IPv4 datagram whose total length (92) runs past the end of the frame (60 bytes) "
        "is dropped (drop_ipv4_bad_length)",
        [Ether(bytes(good)[:60])],
        "none",
        [],
        {"drop_ipv4_bad_length": 1},
    )

    bad = host_v4(FAR4, id=0x9999) / UDP(sport=40009, dport=40103) / Raw(payload(64, 12))
    raw = bytearray(bytes(bad))
    raw[14 + 10] ^= 0xFF  # corrupt the IP header checksum
    case(
        "ipv4_bad_checksum",
        "an IPv4 datagram with a wrong header checksum is dropped (drop_ipv4_bad_checksum)",
        [Ether(bytes(raw))],
        "none",
        [],
        {"drop_ipv4_bad_checksum": 1},
    )

    case(
        "unknown_ethertype",
        "a frame with ethertype 0x88b5 (local experimental) is dropped "
        "(drop_unknown_ethertype)",
        [Ether(dst=IN_MAC, src=HOST_MAC, type=0x88B5) / Raw(payload(50, 13))],
        "none",
        [],
        {"drop_unknown_ethertype": 1},
    )

    case(
        "vlan_on_untagged_port",
        "an 802.1Q-tagged (VLAN 100) IPv4 frame on the untagged port inside is dropped "
        "(drop_vlan_mismatch)",
        [
            Ether(dst=IN_MAC, src=HOST_MAC)
            / Dot1Q(vlan=100)
            / IP(src=HOST4, dst=FAR4)
            / UDP(sport=40010, dport=40103)
            / Raw(payload(64, 14))
        ],
        "none",
        [],
        {"drop_vlan_mismatch": 1},
    )

    case(
        "ipv4_martian_source",
        "IPv4 from 127.0.0.1 (a loopback source may not appear on the wire, RFC 1812 "
        "5.3.7) is dropped (drop_martian)",
        [
            Ether(dst=IN_MAC, src=HOST_MAC)
            / IP(src="127.0.0.1", dst=FAR4)
            / UDP(sport=40014, dport=40103)
            / Raw(payload(64, 21))
        ],
        "none",
        [],
        {"drop_martian": 1},
    )

    case(
        "unicast_not_for_us",
        "IPv4 unicast to another host's MAC is dropped (drop_not_for_us)",
        [
            Ether(dst=OTHER_MAC, src=HOST_MAC)
            / IP(src=HOST4, dst=FAR4)
            / UDP(sport=40011, dport=40103)
            / Raw(payload(64, 15))
        ],
        "none",
        [],
        {"drop_not_for_us": 1},
    )


def write_pcap(path, frames):
    """Classic pcap, microsecond timestamps 1 s apart from 0: byte-for-byte reproducible."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            b = bytes(fr)
            f.write(struct.pack("<IIII", i, 0, len(b), len(b)))
            f.write(b)


def main():
    build()
    names = [c[0] for c in CASES]
    assert len(set(names)) == len(names), "duplicate case names"
    keep = {"cases.txt", "make_cases.py"}
    for name, _intent, inputs, _out, expected, _ctr in CASES:
        write_pcap(os.path.join(HERE, f"{name}.in.pcap"), inputs)
        write_pcap(os.path.join(HERE, f"{name}.expected.pcap"), expected)
        keep |= {f"{name}.in.pcap", f"{name}.expected.pcap"}
    for f in os.listdir(HERE):
        if f.endswith(".pcap") and f not in keep:
            os.remove(os.path.join(HERE, f))
    with open(os.path.join(HERE, "cases.txt"), "w") as f:
        f.write(
            "# Generated by make_cases.py; do not edit. Frames enter on port `in`;\n"
            "# <name>.expected.pcap is what leaves port `out`, in order (nothing leaves the\n"
            "# other port). counters: increments of ferryd's total counters besides rx/tx.\n"
            "# name\tin\tout\tcounters\tintent\n"
        )
        for name, intent, _inputs, out, _exp, ctr in CASES:
            c = ",".join(f"{k}={v}" for k, v in sorted(ctr.items())) or "-"
            f.write(f"{name}\tinside\t{out}\t{c}\t{intent}\n")
    print(f"{len(CASES)} cases written to {HERE}", file=sys.stderr)


if __name__ == "__main__":
    main()
