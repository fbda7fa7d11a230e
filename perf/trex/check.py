"""Checks perf/trex/ferry.py against ferry-pktgen without TRex (no NIC here).

TRex itself cannot run on this machine. What can be checked is what the profile builds. This
script puts a recording stand-in for `trex_stl_lib.api` in front of the profile; the stand-in
holds only the STL classes' constructor arguments, and the packets are real scapy packets.
It then compares the profile with ferry-pktgen's `--pcap` output:

- the base packet of every stream (the first flow of its block) is byte for byte the frame
  ferry-pktgen writes for that flow and size, checksums included (the TSC stamp is 0 in
  both);
- the field engine counts the source port (and address) over the same flows;
- the stream rates are in proportion to their flows, and IMIX weights are 7:4:1.

Usage: python3 perf/trex/check.py PATH/TO/ferry-pktgen      (exits non-zero on a mismatch)
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
import types

from scapy.all import IP, TCP, UDP, Ether, IPv6, Raw, RawPcapReader


class Rec(object):
    """An STL object: its constructor arguments, nothing else."""

    def __init__(self, *args, **kwargs):
        self.args, self.kw = args, kwargs


class STLError(Exception):
    pass


class CTRexVmInsFixHwCs(object):
    L4_TYPE_UDP, L4_TYPE_TCP = 11, 13


def stand_in():
    api = types.ModuleType("trex_stl_lib.api")
    for name in ("STLPktBuilder", "STLStream", "STLTXCont", "STLVmFlowVar", "STLVmWrFlowVar",
                 "STLVmFixChecksumHw", "STLScVmRaw", "STLFlowLatencyStats"):
        setattr(api, name, type(name, (Rec,), {}))
    api.STLError, api.CTRexVmInsFixHwCs = STLError, CTRexVmInsFixHwCs
    for cls in (Ether, IP, IPv6, UDP, TCP, Raw):
        setattr(api, cls.__name__, cls)
    api.__all__ = [n for n in dir(api) if not n.startswith("_")]
    pkg = types.ModuleType("trex_stl_lib")
    pkg.api = api
    sys.modules["trex_stl_lib"], sys.modules["trex_stl_lib.api"] = pkg, api


def load_profile():
    stand_in()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ferry.py")
    spec = importlib.util.spec_from_file_location("ferry_trex_profile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pcap_frames(path):
    return [data for data, _ in RawPcapReader(path)]


DST_MAC, SRC_MAC = "02:70:63:61:70:00", "02:fe:00:00:00:01"


def key(frame, v6):
    """(length, source address, source port) of a frame."""
    if v6:
        return len(frame), frame[22:38], frame[54:56]
    return len(frame), frame[26:30], frame[34:36]


def check(pktgen, prof, case, failures):
    size, proto, dst, flows = case
    v6 = ":" in dst
    # ferry-pktgen's pcap holds every flow once (up to 65536 frames), IMIX sizes taking turns
    # flow by flow; TRex sends every flow at every size. So the frames to compare with come
    # from one pcap per size: (size, source, port) -> frame.
    index = {}
    with tempfile.TemporaryDirectory() as d:
        for z in (["64", "594", "1518"] if size == "imix" else [size]):
            pcap = os.path.join(d, "g.pcap")
            subprocess.run([pktgen, "--pcap", pcap, "--size", z, "--proto", proto, "--dst-ip",
                            dst, "--flows", str(flows), "--dst-mac", DST_MAC],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for f in pcap_frames(pcap):
                index[key(f, v6)] = f
    streams = prof.FerryProfile().get_streams(tunables=[
        "--size", size, "--proto", proto, "--dst-ip", dst, "--flows", str(flows),
        "--dst-mac", DST_MAC, "--src-mac", SRC_MAC])
    name = "size %s %s to %s, %d flows" % (size, proto, dst, flows)

    def fail(msg):
        failures.append("%s: %s" % (name, msg))

    total_pps = sum(s.kw["mode"].kw["pps"] for s in streams)
    if abs(total_pps - (1.0 if size != "imix" else 48.0)) > 1e-9:
        fail("stream rates add up to %r" % total_pps)
    covered = {}
    for s in streams:
        builder = s.kw["packet"]
        pkt = bytes(builder.kw["pkt"])
        want = index.get(key(pkt, v6))
        if want is None:
            fail("no ferry-pktgen frame of %d bytes from that source and port" % len(pkt))
        elif pkt != want:
            at = next((i for i in range(min(len(pkt), len(want))) if pkt[i] != want[i]),
                      min(len(pkt), len(want)))
            fail("%d bytes: differs from ferry-pktgen at byte %d (%s vs %s)" % (
                len(pkt), at, pkt[at:at + 8].hex(), want[at:at + 8].hex()))
        # The field engine: the source port from 1024 over the block's ports, then the address.
        vm = builder.kw.get("vm")
        fv = {c.kw["name"]: c.kw for c in (vm.args[0] if vm else [])
              if type(c).__name__ == "STLVmFlowVar"}
        if "sport" in fv and fv["sport"]["min_value"] != 1024:
            fail("the source port starts at %d" % fv["sport"]["min_value"])
        ports = fv["sport"]["max_value"] - 1023 if "sport" in fv else 1
        addrs = fv["src"]["max_value"] - fv["src"]["min_value"] + 1 if "src" in fv else 1
        if ports > 60000:
            fail("%d ports per address (ferry-pktgen uses 60000)" % ports)
        covered[len(pkt)] = covered.get(len(pkt), 0) + addrs * ports
        weight = s.kw["mode"].kw["pps"] * flows / (addrs * ports)
        if round(weight, 6) != (1 if size != "imix" else {60: 28, 590: 16, 1514: 4}.get(len(pkt))):
            fail("%d-byte stream weighs %r per flow" % (len(pkt), weight))
    for n, count in covered.items():
        if count != flows:
            fail("%d-byte streams cover %d flows, not %d" % (n, count, flows))
    return name


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    prof = load_profile()
    failures = []
    cases = [("64", "udp", "10.253.0.1", 1024), ("66", "tcp", "10.253.0.1", 1),
             ("78", "udp", "2001:db8::1", 1024), ("1518", "tcp", "2001:db8::1", 7),
             ("imix", "udp", "10.253.0.1", 100), ("64", "udp", "10.253.0.1", 61000)]
    for case in cases:
        print("trex profile vs ferry-pktgen:", check(sys.argv[1], prof, case, failures))
    for f in failures:
        print("MISMATCH", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
