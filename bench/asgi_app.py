"""A tiny ASGI app for uvicorn on the socket corral passes as fd 3.

    corral run -w 2 --policy round-robin -l 127.0.0.1:PORT -- \
        python3 -m uvicorn --fd 3 --app-dir bench asgi_app:app

The answer names the worker ("Hello from worker N (pid P)", N from
CORRAL_WORKER_ID), which bench/run.py's share rows tally.
"""

import os

BODY = f"Hello from worker {os.environ.get('CORRAL_WORKER_ID', '?')} (pid {os.getpid()})\n".encode()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})
