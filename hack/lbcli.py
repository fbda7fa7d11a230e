#!/usr/bin/python3
"""A service client for tests and the demo: lbcli.py HOST PORT CONNECTIONS [options]

Opens CONNECTIONS TCP connections one after another, sends --keep GET requests on each
(HTTP/1.1 keep-alive) and prints JSON: answers by backend name, connections whose answers
came from more than one backend ("split"), failed connections and their errors, the
peers and local addresses the backends reported, and the order of backends seen.
--src binds the client's source address; --timeout is per connection."""
import argparse
import collections
import json
import socket

ap = argparse.ArgumentParser()
ap.add_argument("host")
ap.add_argument("port", type=int)
ap.add_argument("n", type=int)
ap.add_argument("--keep", type=int, default=1)
ap.add_argument("--src")
ap.add_argument("--timeout", type=float, default=2.0)
a = ap.parse_args()

fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
counts, errors = collections.Counter(), collections.Counter()
peers, locals_, order = collections.Counter(), collections.Counter(), []
split = 0


def read_answer(f):
    status = f.readline()
    if not status:
        raise ConnectionError("closed")
    length = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        if h.lower().startswith(b"content-length:"):
            length = int(h.split(b":")[1])
    return f.read(length).decode()


for i in range(a.n):
    seen = set()
    try:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        if a.src:
            s.bind((a.src, 0))
        s.connect((a.host, a.port))
        f = s.makefile("rb")
        for _ in range(a.keep):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            body = read_answer(f).split()
            seen.add(body[0])
            peers[body[1][5:]] += 1
            locals_[body[2][6:]] += 1
        s.close()
        for b in seen:
            counts[b] += 1
        order.append(sorted(seen)[0])
        split += len(seen) > 1
    except Exception as e:  # noqa: BLE001 (counted, not fatal)
        errors[type(e).__name__ + ":" + str(e)[:40]] += 1
        order.append("-")
print(json.dumps({"counts": counts, "split": split, "failed": sum(errors.values()),
                  "errors": errors, "peers": peers, "locals": locals_, "order": order}))
