"""An HTTP proxy on 127.0.0.1 that injects the faults S3 clients meet: the
first request for each (method, path, range) gets a 503 SlowDown (throttling)
or a 500, and the first successful GET of each object, and of each range of it,
has its body cut off half-way
(a connection reset mid-body). Everything else is forwarded to the real
S3-compatible server behind it."""

from __future__ import annotations

import http.client
import http.server
import threading
from collections import Counter
from urllib.parse import urlsplit

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
            b"<Message>We encountered an internal error.</Message></Error>")


class FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream).netloc
        self.seen: Counter = Counter()
        self.faults: Counter = Counter()  # kind -> how many were injected
        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _fault(self, method: str, path: str, byte_range: str | None) -> str | None:
        with self.lock:
            self.seen[method, path, byte_range] += 1
            n = self.seen[method, path, byte_range]
        if n == 1:
            return "slow-down" if method in ("GET", "HEAD") else "internal"
        if n == 2 and method == "GET" and "?" not in path:  # an object's body, not a listing
            return "cut-body"
        return None

    def _handler(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._fault(self.command, self.path, self.headers.get("Range"))
                if fault in ("slow-down", "internal"):
                    proxy.faults[fault] += 1
                    payload = SLOW_DOWN if fault == "slow-down" else INTERNAL
                    self.send_response(503 if fault == "slow-down" else 500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload) if self.command != "HEAD" else 0))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                cut = fault == "cut-body" and response.status in (200, 206) and len(data) > 1
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.end_headers()
                if self.command == "HEAD":
                    return
                if cut:
                    proxy.faults["cut-body"] += 1
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        return Handler
