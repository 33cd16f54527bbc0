"""A throwaway npm registry on 127.0.0.1 serving the tarballs of a directory,
so the tests can run `npm i -g corral` as a user does (npm resolving the
optional platform packages and choosing by os/cpu) with no network. Anything
else is a 404.

    python3 local_registry.py TARBALL_DIR PORT_FILE

Writes the port it listens on to PORT_FILE, then serves until killed.
"""

import base64
import hashlib
import http.server
import json
import sys
import tarfile
import urllib.parse
from pathlib import Path


def packuments(tarball_dir: Path, base_url: str) -> tuple[dict, dict]:
    """name -> packument, and tarball file name -> bytes."""
    documents: dict = {}
    tarballs: dict = {}
    for path in sorted(tarball_dir.glob("*.tgz")):
        data = path.read_bytes()
        with tarfile.open(path) as tar:
            manifest = json.load(tar.extractfile("package/package.json"))
        manifest["dist"] = {
            "tarball": f"{base_url}/-/{path.name}",
            "shasum": hashlib.sha1(data).hexdigest(),
            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
        }
        name, version = manifest["name"], manifest["version"]
        document = documents.setdefault(name, {"name": name, "versions": {}, "dist-tags": {}})
        document["versions"][version] = manifest
        document["dist-tags"]["latest"] = version
        tarballs[path.name] = data
    return documents, tarballs


def main() -> None:
    tarball_dir, port_file = Path(sys.argv[1]), Path(sys.argv[2])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    documents, tarballs = packuments(tarball_dir, f"http://127.0.0.1:{server.server_port}")

    class Registry(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            if path.startswith("-/") and path[2:] in tarballs:
                self.reply(200, "application/octet-stream", tarballs[path[2:]])
            elif path in documents:
                self.reply(200, "application/json", json.dumps(documents[path]).encode())
            else:
                self.reply(404, "application/json", b'{"error":"not found"}')

        def reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server.RequestHandlerClass = Registry
    port_file.write_text(str(server.server_port))
    server.serve_forever()


if __name__ == "__main__":
    main()
