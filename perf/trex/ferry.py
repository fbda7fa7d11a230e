"""TRex stateless (STL) profile: the traffic of Ferry's own generator, for labs with real NICs.

It sends what perf/src/bin/ferry-pktgen.rs sends, byte for byte up to the stamp:

  tunable (-t)            ferry-pktgen             default
  --size 64..1518|imix    --size                   64    frame bytes WITH the 4-byte FCS
  --proto udp|tcp         --proto                  udp
  --family 4|6            (family of --dst-ip)     4, or that of --dst-ip
  --flows 1..10000000     --flows                  1024
  --dst-ip A              --dst-ip                 10.253.0.1 / 2001:db8::1
  --src-ip A              --src-ip                 198.18.0.1 / 2001:2::1
  --dst-mac M             --dst-mac                the port's dest_mac / resolved gateway
  --src-mac M             --src-mac                the port's MAC
  --latency PPS           (its TSC stamp)          0: no latency stream
  --pg-id N               -                        7 (+ port id)

Frames: Ethernet / IPv4 (TTL 64, ID 0, no DF) or IPv6 (hop limit 64) / UDP to port 9, or TCP
to port 9 with flags PA, seq 1, ack 1, window 65535. The payload is ferry-pktgen's 8-byte stamp
(magic 0xfe779e4e, then a 32-bit TSC that ferry-pktgen fills per packet; 0 here), then zero
bytes. TRex does not fill the TSC: it measures latency with its own streams instead (--latency,
STLFlowLatencyStats, which overwrite the last 16 payload bytes of their own packets).
TRex packet sizes exclude the FCS, so each packet is built with size - 4 bytes. Sizes too small
for the headers and the stamp are refused, and IMIX sizes raised to that minimum, as
ferry-pktgen does (IPv4/TCP 66, IPv6/UDP 74, IPv6/TCP 86).

Flows: flow i has source port 1024 + i % 60000 and source address src + i // 60000 (for IPv6,
the low 32 bits of the address count). The field engine has no division, so --flows N is cut
into whole addresses (60000 ports each; the port variable wraps into the address variable with
next_var) and one partial address (N % 60000 ports), each its own stream with a rate in
proportion to its flows: every flow is sent equally often, as in ferry-pktgen; only the order
differs. STLVmFixChecksumHw keeps the IPv4 and L4 checksums valid (the NIC must offer tx
checksum offload; ixgbe, i40e, ice and mlx5 do).

IMIX is 64/594/1518 in a 7:4:1 packet ratio: three streams at 28:16:4 pps, like TRex's own
stl/imix.py. ferry-pktgen interleaves the sizes in one stream and one flow counter; TRex runs one
stream (and one flow counter) per size. Rates are relative: scale with -m (e.g. -m 100%).

Load it on the port that faces ferryd's first port only (-p 0): it ignores `direction`.
Written against the TRex v3.0x STL API; not run here (no TRex, no NIC). perf/trex/check.py (in CI)
builds its streams with scapy behind a stand-in for the STL classes and compares them with
ferry-pktgen's frames byte for byte, and its field engine and rates with ferry-pktgen's flows.
"""

import argparse
import ipaddress

from trex_stl_lib.api import *  # STL classes; scapy's Ether, IP, IPv6, UDP, TCP, Raw come with it

FIRST_PORT = 1024
PORTS_PER_ADDR = 60000
DST_PORT = 9
MAGIC = b"\xfe\x77\x9e\x4e"
STAMP_LEN = 8
# Frame bytes (with FCS), pps weight (7:4:1 packets), inter-stream gap in us (as stl/imix.py).
IMIX = ((64, 28, 0.0), (594, 16, 0.1), (1518, 4, 0.2))
# TRex latency streams need 16 payload bytes of their own.
LATENCY_PAYLOAD = 16


def parse(tunables):
    p = argparse.ArgumentParser(prog="ferry.py", description="ferry-pktgen's traffic")
    p.add_argument("--size", default="64", help="64..1518 (frame bytes with FCS) or imix")
    p.add_argument("--proto", choices=("udp", "tcp"), default="udp")
    p.add_argument("--family", type=int, choices=(4, 6), default=None)
    p.add_argument("--flows", type=int, default=1024, help="1..10000000")
    p.add_argument("--dst-ip", "--dst_ip", dest="dst_ip")
    p.add_argument("--src-ip", "--src_ip", dest="src_ip")
    p.add_argument("--dst-mac", "--dst_mac", dest="dst_mac")
    p.add_argument("--src-mac", "--src_mac", dest="src_mac")
    p.add_argument("--latency", type=int, default=0, help="pps of a latency stream (0: none)")
    p.add_argument("--pg-id", "--pg_id", dest="pg_id", type=int, default=7)
    a = p.parse_args(tunables)

    def version(ip):
        try:
            return ipaddress.ip_address(ip).version
        except ValueError:
            p.error("%r is not an IP address" % ip)

    if a.family is None:
        a.family = version(a.dst_ip) if a.dst_ip else 4
    a.dst_ip = a.dst_ip or ("10.253.0.1" if a.family == 4 else "2001:db8::1")
    a.src_ip = a.src_ip or ("198.18.0.1" if a.family == 4 else "2001:2::1")
    for ip in (a.dst_ip, a.src_ip):
        if version(ip) != a.family:
            p.error("%s is not an IPv%d address" % (ip, a.family))
    if not 1 <= a.flows <= 10000000:
        p.error("--flows: 1..10000000")
    if a.latency < 0:
        p.error("--latency: packets/s, 0 for none")
    a.min_frame = max(64, header_len(a) + STAMP_LEN + 4)
    if a.size == "imix":
        a.sizes = [(max(s, a.min_frame), w, isg) for s, w, isg in IMIX]
    else:
        size = int(a.size) if a.size.isdigit() else 0
        if not a.min_frame <= size <= 1518:
            p.error("--size: %d..1518 for IPv%d/%s, or imix" % (a.min_frame, a.family, a.proto))
        a.sizes = [(size, 1, 0.0)]
    return a


def header_len(a):
    return 14 + (20 if a.family == 4 else 40) + (8 if a.proto == "udp" else 20)


def frame(a, size, src):
    """One frame of `size` bytes with FCS (so size - 4 here), from port 1024 of `src`."""
    eth = Ether()  # left at the defaults, TRex fills in the port's MACs
    if a.dst_mac:
        eth.dst = a.dst_mac
    if a.src_mac:
        eth.src = a.src_mac
    if a.family == 4:
        l3 = IP(src=src, dst=a.dst_ip, ttl=64, id=0)
    else:
        l3 = IPv6(src=src, dst=a.dst_ip, hlim=64)
    if a.proto == "udp":
        l4 = UDP(sport=FIRST_PORT, dport=DST_PORT)
    else:
        l4 = TCP(sport=FIRST_PORT, dport=DST_PORT, flags="PA", seq=1, ack=1, window=65535)
    # ferry-pktgen's stamp with a zero TSC, then zeros.
    body = MAGIC + bytes(size - 4 - header_len(a) - len(MAGIC))
    return eth / l3 / l4 / Raw(load=body)


def flow_blocks(a):
    """(first source address, addresses, ports) covering flows 0..N-1 in ferry-pktgen's order."""
    base = int(ipaddress.ip_address(a.src_ip))
    if (base & 0xFFFFFFFF) + (a.flows - 1) // PORTS_PER_ADDR > 0xFFFFFFFF:
        raise STLError("--src-ip: the source addresses would wrap their low 32 bits")
    whole, part = divmod(a.flows, PORTS_PER_ADDR)
    blocks = []
    if whole:
        blocks.append((base, whole, PORTS_PER_ADDR))
    if part:
        blocks.append((base + whole, 1, part))
    return blocks


def flow_vm(a, first, addrs, ports):
    """Field engine: the source port counts up from 1024; after a full round of ports the
    source address (its low 32 bits) goes up by one. Checksums are fixed by the NIC."""
    l3, l4 = ("IP" if a.family == 4 else "IPv6"), a.proto.upper()
    cmds = []
    if addrs > 1:
        low = first & 0xFFFFFFFF
        cmds += [STLVmFlowVar(name="src", min_value=low, max_value=low + addrs - 1,
                              size=4, op="inc"),
                 STLVmWrFlowVar(fv_name="src", pkt_offset=l3 + ".src",
                                offset_fixup=0 if a.family == 4 else 12)]
    if ports > 1:
        cmds += [STLVmFlowVar(name="sport", min_value=FIRST_PORT,
                              max_value=FIRST_PORT + ports - 1, size=2, op="inc",
                              next_var="src" if addrs > 1 else None),
                 STLVmWrFlowVar(fv_name="sport", pkt_offset=l4 + ".sport")]
    if not cmds:
        return None  # one flow: scapy's checksums stand
    l4_type = CTRexVmInsFixHwCs.L4_TYPE_UDP if a.proto == "udp" else CTRexVmInsFixHwCs.L4_TYPE_TCP
    cmds.append(STLVmFixChecksumHw(l3_offset=l3, l4_offset=l4, l4_type=l4_type))
    return STLScVmRaw(cmds)


class FerryProfile(object):
    def get_streams(self, direction=0, **kwargs):
        tunables = kwargs.get("tunables")
        if tunables is None:
            # TRex before the argparse tunables: -t size=64,flows=1024 arrives as keywords.
            tunables = []
            for k, v in kwargs.items():
                if k != "port_id":
                    tunables += ["--" + k, str(v)]
        a = parse(tunables)
        blocks = flow_blocks(a)
        streams = []
        for size, weight, isg in a.sizes:
            for first, addrs, ports in blocks:
                src = str(ipaddress.ip_address(first))
                pkt = STLPktBuilder(pkt=frame(a, size, src), vm=flow_vm(a, first, addrs, ports))
                pps = float(weight) * addrs * ports / a.flows
                streams.append(STLStream(packet=pkt, mode=STLTXCont(pps=pps), isg=isg))
        if a.latency:
            # The first flow at a fixed rate (-m does not scale latency streams); TRex writes
            # its sequence number and timestamp over the last 16 bytes of the payload.
            size = max(a.sizes[0][0], header_len(a) + LATENCY_PAYLOAD + 4)
            pg_id = a.pg_id + kwargs.get("port_id", 0)
            streams.append(STLStream(packet=STLPktBuilder(pkt=frame(a, size, a.src_ip)),
                                     mode=STLTXCont(pps=a.latency),
                                     flow_stats=STLFlowLatencyStats(pg_id=pg_id)))
        return streams


def register():
    return FerryProfile()
