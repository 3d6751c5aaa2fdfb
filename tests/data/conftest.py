"""A local HTTP file server on 127.0.0.1 with Range support and fault injection."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest


class FileServer:
    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_after: dict[str, int] = {}  # path -> bytes sent before dropping once
        self.cut_every: dict[str, int] = {}  # path -> bytes sent before dropping, on every request
        self.no_length: set[str] = set()  # paths answered without Content-Length
        self.truncate: dict[str, int] = {}  # path -> length of the body sent (then a clean close)
        self.fail_status: dict[str, list[int]] = {}  # path -> statuses to answer first
        handler = self._handler()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                statuses = server.fail_status.get(name)
                if statuses:
                    self.send_error(statuses.pop(0))
                    return
                path = server.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                if name in server.truncate:
                    body = body[: server.truncate[name]]
                if name not in server.no_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut_after.pop(name, None)
                if cut is None:
                    cut = server.cut_every.get(name)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    server = FileServer(root)
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
