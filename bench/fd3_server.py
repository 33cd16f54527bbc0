"""A plain Python server on the listening socket corral passes as fd 3.

    corral run -w 2 --policy round-robin -l 127.0.0.1:PORT -- python3 bench/fd3_server.py

It knows nothing of corral but the socket: `socket.socket(fileno=3)`, one
connection at a time, one request per connection. The answer names the
worker ("Hello from worker N (pid P)", N from CORRAL_WORKER_ID), which
bench/run.py's share rows and bench/wrk/shares.lua tally.
"""

import os
import socket

BODY = f"Hello from worker {os.environ.get('CORRAL_WORKER_ID', '?')} (pid {os.getpid()})\n".encode()
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY)

listener = socket.socket(fileno=3)
while True:
    conn, _ = listener.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                break
            request += chunk
        if request:
            conn.sendall(RESPONSE)
