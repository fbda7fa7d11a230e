#!/usr/bin/python3
"""A service backend for tests and the demo: lbsrv.py NAME PORT...

Answers every GET on [::]:PORT (IPv4 too) with its own name, the peer it sees and the
address it was reached at ("b1 peer=10.10.1.2 local=10.10.1.100"), over HTTP/1.1 with
keep-alive; /healthz answers 200 "ok"; /stream?s=N sends its name, then a line every
10 ms for N seconds (a long flow). Binding to the wildcard lets DR and tunnel backends
answer on a VIP held on their loopback or tunnel device."""
import socket
import socketserver
import sys
import threading
import time

name, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def plain(a):
    return a[7:] if a.startswith("::ffff:") else a


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        peer = plain(self.client_address[0])
        local = plain(self.connection.getsockname()[0])
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            parts = line.split()
            while True:  # headers
                h = self.rfile.readline(4096)
                if not h or h in (b"\r\n", b"\n"):
                    break
            path = parts[1].decode() if len(parts) > 1 else "/"
            if path.startswith("/stream"):
                secs = float(path.split("s=")[1]) if "s=" in path else 10
                self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                self.wfile.write(f"{name} peer={peer} local={local}\n".encode())
                end = time.time() + secs
                n = 0
                while time.time() < end:
                    self.wfile.write(f"{name} {n:08d}\n".encode() * 8)
                    self.wfile.flush()
                    n += 1
                    time.sleep(0.01)
                self.wfile.write(b"END\n")
                return
            body = b"ok\n" if path == "/healthz" else f"{name} peer={peer} local={local}\n".encode()
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s"
                % (len(body), body)
            )
            self.wfile.flush()


servers = [Server(("::", p), Handler) for p in ports]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
