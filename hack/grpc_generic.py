#!/usr/bin/env python3
"""A generic gRPC client (Google's grpcio, no Ferry stubs) against ferryd's unix socket,
for ci/netns-api.sh: the standard health service answers SERVING, for the whole server
and for ferry.v1.Ferry, and server reflection lists ferry.v1.Ferry and serves its file
descriptor. Usage: grpc_generic.py SOCKET. Exits 0 if all hold, printing what it saw.
"""
import sys

import grpc


def field(num, payload):
    """A length-delimited protobuf field (wire type 2), payload < 128 bytes."""
    return bytes([(num << 3) | 2, len(payload)]) + payload


def main():
    ch = grpc.insecure_channel("unix:" + sys.argv[1])
    check = ch.unary_unary("/grpc.health.v1.Health/Check")
    # HealthCheckResponse { status = 1 (SERVING) } is b"\x08\x01".
    whole = check(b"", timeout=5)
    ferry = check(field(1, b"ferry.v1.Ferry"), timeout=5)
    reflect = ch.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    # list_services (field 7), then file_containing_symbol (field 4) for ferry.v1.Ferry.
    answers = list(reflect(iter([field(7, b""), field(4, b"ferry.v1.Ferry")]), timeout=5))
    listed = b"ferry.v1.Ferry" in answers[0] and b"grpc.health.v1.Health" in answers[0]
    described = b"ferry/v1/ferry.proto" in answers[1] and b"ApplyRequest" in answers[1]
    print(f"health: {whole.hex()} / ferry.v1.Ferry: {ferry.hex()}; reflection lists services: "
          f"{listed}, serves ferry/v1/ferry.proto: {described}")
    return 0 if whole == b"\x08\x01" and ferry == b"\x08\x01" and listed and described else 1


if __name__ == "__main__":
    sys.exit(main())
