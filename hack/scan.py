"""Sends a bounded scan of unused addresses: N small UDP datagrams at RATE per second,
round-robin over COUNT addresses of a prefix. Used by ci/netns-tests.sh.

usage: scan.py 4|6 PACKETS RATE COUNT [FIRST]
  4: 10.50.0.0/16 (10.50.1.1, 10.50.1.2, ...), 6: fd50::/64 (fd50::1:0, fd50::1:1, ...)
  FIRST: index of the first address (default 0)
Prints the number of datagrams the kernel took and how long the scan lasted."""
import socket
import sys
import time


def addresses(fam, count, first):
    if fam == "4":
        return ["10.50.%d.%d" % (1 + i // 250, 1 + i % 250) for i in range(first, first + count)]
    return ["fd50::1:%x" % i for i in range(first, first + count)]


def main():
    fam, n, rate, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    first = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    addrs = addresses(fam, count, first)
    s = socket.socket(socket.AF_INET if fam == "4" else socket.AF_INET6, socket.SOCK_DGRAM)
    payload = b"scan" * 4
    batch = max(1, rate // 200)  # 5 ms worth at a time
    sent = 0
    t0 = time.monotonic()
    i = 0
    while i < n:
        for _ in range(min(batch, n - i)):
            try:
                s.sendto(payload, (addrs[i % count], 7777))
                sent += 1
            except OSError:
                pass  # ENOBUFS / EAGAIN, or an ICMP error reported on the socket
            i += 1
        ahead = t0 + i / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    print(sent, "%.2f" % (time.monotonic() - t0))


main()
