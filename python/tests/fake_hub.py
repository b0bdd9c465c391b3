"""A local stand-in for the Hugging Face hub: one model folder served the way the hub's endpoints serve a repo.

Point HF_ENDPOINT at `FakeHub.endpoint` and `from_pretrained("<repo>")` fetches the folder's files from here:
HEAD/GET `/<repo>/resolve/<revision>/<file>` (ETag, X-Repo-Commit, Content-Length; a missing file is 404 with
X-Error-Code EntryNotFound) and the `/api/models/<repo>/...` listings transformers asks for. Each file is sent in
`chunks` pieces `pause_s` apart, so a download takes long enough to be seen in progress.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, folder: Path, repo: str, chunks: int = 8, pause_s: float = 0.0) -> None:
        files = {path.name: path for path in folder.iterdir() if path.is_file()}
        etags = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
        self.requests: list[tuple[str, str]] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _send(self, status: int, headers: dict[str, str], data: bytes, body: bool) -> None:
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                if not body:
                    return
                size = max(1, -(-len(data) // chunks)) if len(data) > 1 << 20 else len(data) or 1
                for start in range(0, len(data), size):
                    self.wfile.write(data[start : start + size])
                    self.wfile.flush()
                    if size < len(data):
                        time.sleep(pause_s)

            def _answer(self, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                requests.append((self.command, path))
                listing = f"/api/models/{repo}/tree/"
                if path.startswith(listing):
                    inside = path[len(listing) :].partition("/")[2]
                    entries = [
                        {"type": "file", "path": name, "size": file.stat().st_size, "oid": etags[name]}
                        for name, file in files.items()
                    ]
                    self._send(
                        200, {"Content-Type": "application/json"}, json.dumps([] if inside else entries).encode(), body
                    )
                    return
                if path.startswith(f"/api/models/{repo}"):
                    info = {"id": repo, "sha": COMMIT, "siblings": [{"rfilename": name} for name in files]}
                    self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body)
                    return
                prefix = f"/{repo}/resolve/"
                name = path[len(prefix) :].partition("/")[2] if path.startswith(prefix) else None
                if name is None:
                    self._send(404, {"X-Error-Code": "RepoNotFound"}, b"", body)
                elif name not in files:
                    self._send(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, b"", body)
                else:
                    headers = {"ETag": f'"{etags[name]}"', "X-Repo-Commit": COMMIT}
                    self._send(200, headers, files[name].read_bytes(), body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
