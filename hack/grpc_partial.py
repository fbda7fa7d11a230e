#!/usr/bin/env python3
"""A gRPC client that goes away in the middle of a request (for ci/netns-api.sh).

Over ferryd's unix socket: HTTP/2 preface and SETTINGS, the HEADERS of a
/ferry.v1.Ferry/Apply call, a gRPC message that announces 1,000,000 bytes but sends
16,000 of them, then it closes the socket. ferryd must apply nothing and serve on.
Usage: grpc_partial.py SOCKET. Exits 0 once it has sent and closed.
"""
import socket
import struct
import sys


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value % 128) + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name, value):
    # Literal header field without indexing, new name, no Huffman coding (RFC 7541 6.2.2).
    n, v = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v


def main():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sys.argv[1])
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0, b""))
    headers = b"".join(literal(k, v) for k, v in [
        (":method", "POST"), (":scheme", "http"), (":path", "/ferry.v1.Ferry/Apply"),
        (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"),
    ])
    s.sendall(frame(0x1, 0x4, 1, headers))  # HEADERS, END_HEADERS, stream 1
    body = b"\x00" + struct.pack(">I", 1_000_000) + b"\x0a" * 16_000
    s.sendall(frame(0x0, 0, 1, body))  # DATA without END_STREAM: more announced
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
