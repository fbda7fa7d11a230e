#!/usr/bin/python3
"""A tunnel endpoint in user space, for kernels built without ipip, ip6_tunnel and fou
(this test machine's): decap.py ipip|ip6ip6|gue [PORT]

Receives the encapsulated packets Ferry sends to this host (IPIP: IPv4 protocol 4; ip6ip6:
IPv6 next header 41; GUE: UDP to PORT, variant 0 with a 4-byte header), strips the outer
headers and writes the inner packet into a TUN device (dcap-MODE), so that this host's
kernel receives it as if its own tunnel device had decapsulated it: the VIP on its
loopback answers, straight back to the client."""
import fcntl
import os
import socket
import struct
import subprocess
import sys

mode = sys.argv[1]
port = int(sys.argv[2]) if len(sys.argv) > 2 else 6080
name = "dcap-" + mode
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
tun = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
subprocess.run(["ip", "link", "set", name, "up"], check=True)
for k in ("all", "default", name):
    subprocess.run(["sysctl", "-qw", f"net.ipv4.conf.{k}.rp_filter=0"], check=False)

if mode == "ipip":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
elif mode == "ip6ip6":
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 41)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
print("ready", flush=True)
while True:
    d = s.recv(65535)
    if mode == "ipip":
        d = d[(d[0] & 0x0F) * 4:]  # IPv4 raw sockets include the outer header
    elif mode == "gue":
        if len(d) < 4 or d[0] >> 6 != 0 or d[1] not in (4, 41):
            continue
        d = d[4 + (d[0] & 0x1F) * 4:]
    os.write(tun, d)
