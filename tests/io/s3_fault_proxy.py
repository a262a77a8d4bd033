"""An HTTP proxy between the job and the S3 server that breaks requests on purpose.

Every `every`-th request gets the next fault of `kinds`, in turn (`every=0`: none), and
`arm(kind)` makes the next request fail with that fault:
- `503` / `500`: an S3 error answer (`SlowDown` / `InternalError`), the server never sees it;
- `reset`: the connection is reset before the request reaches the server;
- `reset_after`: the server handles the request, then the connection is reset, so the
  client never hears that its write landed (the case that breaks conditional writes);
- `truncate`: the answer's headers and half its body, then a reset (a read cut mid-body);
- `slow`: the answer trickles out in small pieces with pauses.
Requests between faults pass unchanged, so a client that retries always gets through.
"""
from __future__ import annotations

import http.client
import itertools
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULT_KINDS = ("503", "reset", "500", "slow", "reset_after", "truncate")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}
_ERRORS = {"503": (503, "SlowDown", "Please reduce your request rate."),
           "500": (500, "InternalError", "We encountered an internal error. Please try again.")}


class FaultProxy:
    def __init__(self, upstream: str, every: int = 3, kinds: tuple[str, ...] = FAULT_KINDS):
        up = urlsplit(upstream)
        self.upstream = (up.hostname, up.port)
        self.every, self._kinds = every, itertools.cycle(kinds)
        self.injected: Counter = Counter()
        self.requests = 0
        self.armed: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def arm(self, kind: str) -> None:
        with self._lock:
            self.armed.append(kind)

    def next_fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self.armed:
                kind = self.armed.pop(0)
            elif self.every and self.requests % self.every == 0:
                kind = next(self._kinds)
            else:
                return None
            self.injected[kind] += 1
            return kind


def _handler(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reset(self) -> None:
            """Close with RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _forward(self, body: bytes):
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            drop = _HOP_BY_HOP if self.command == "HEAD" else _HOP_BY_HOP | {"content-length"}
            return resp.status, resp.reason, [(k, v) for k, v in resp.getheaders() if k.lower() not in drop], data

        def _send(self, status: int, reason: str, headers: list, data: bytes) -> None:
            self.send_response(status, reason)
            for k, v in headers:
                self.send_header(k, v)
            if self.command != "HEAD":  # a HEAD answer keeps the object's own length
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()

        def _handle(self) -> None:
            body = self._body()
            fault = proxy.next_fault()
            if fault in _ERRORS:
                status, code, message = _ERRORS[fault]
                data = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>{message}</Message></Error>").encode()
                self._send(status, code, [("Content-Type", "application/xml")], data)
                if self.command != "HEAD":
                    self.wfile.write(data)
                return
            if fault == "reset":
                return self._reset()
            status, reason, headers, data = self._forward(body)
            if fault == "reset_after" or (fault in ("truncate", "slow") and len(data) < 2):
                return self._reset()
            self._send(status, reason, headers, data)
            if fault == "truncate":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                return self._reset()
            if fault == "slow":
                step = max(1, len(data) // 8)
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                    time.sleep(0.05)
                return
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
