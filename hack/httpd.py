#!/usr/bin/python3
"""A small static HTTP server for tests and the demo: httpd.py ADDRESS PORT DIR.

A plain socketserver (http.server's own main looks up the address's name, which stalls
for seconds in a namespace without DNS)."""
import http.server
import os
import socket
import socketserver
import sys

addr, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.chdir(root)


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True
    address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


Server((addr, port), Handler).serve_forever()
