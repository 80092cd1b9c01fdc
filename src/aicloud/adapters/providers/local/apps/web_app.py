"""The built-in ``web-app`` template: a small browser app on $PORT (stdlib only, a script).

Besides its page it has what a browser app behind the platform's proxy uses: a redirect
(``/redirect`` -> ``/landing``), a cookie (``/cookie``), a large streamed download
(``/download?mb=N``), the request's headers as JSON (``/headers``) and a WebSocket echo
(``/ws``, RFC 6455, implemented here since the sandbox has the standard library only).
"""

import base64
import hashlib
import html
import json
import os
import socket
import struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CHUNK = 64 * 1024
MAX_WS_MESSAGE = 1 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length

    def _send(self, status: int, body: bytes, ctype: str,
              headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif url.path == "/redirect":
            self._send(302, b"", "text/plain", (("Location", "/landing"),))
        elif url.path == "/landing":
            self._send(200, b"landed\n", "text/plain")
        elif url.path == "/headers":
            body = json.dumps({"path": self.path, "headers": [
                [k, v] for k, v in self.headers.items()]}).encode()
            self._send(200, body, "application/json")
        elif url.path == "/cookie":
            self._send(200, b"cookie set\n", "text/plain", (
                ("Set-Cookie", "app_pref=dark; Path=/"),
                ("Set-Cookie", "aicloud_session=from-the-app; Path=/")))
        elif url.path == "/download":
            self._download(int((query.get("mb") or ["1"])[0]))
        elif url.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self._websocket()
        else:
            self._page()

    def _page(self) -> None:
        rows = {
            "workload": os.environ.get("WORKLOAD_ID", "?"),
            "host": socket.gethostname(),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "path": self.path,
            "prefix": self.headers.get("X-Forwarded-Prefix", ""),
        }
        cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                        for k, v in rows.items())
        body = (f"<!doctype html><html><head><title>AI Cloud web app</title></head>"
                f"<body><h1>AI Cloud web app</h1><table>{cells}</table>"
                f'<p><a href="landing">landing</a></p></body></html>').encode()
        self._send(200, body, "text/html; charset=utf-8")

    def _download(self, mb: int) -> None:
        size = max(0, min(mb, 1024)) * 1024 * 1024
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        # Closing the connection after a large body: pasta (the sandbox's network) was seen
        # to hold the last segment of a long transfer on a kept-alive connection until the
        # next event; the FIN flushes it.
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        block = bytes(range(256)) * (CHUNK // 256)
        sent = 0
        while sent < size:
            n = min(CHUNK, size - sent)
            self.wfile.write(block[:n])
            sent += n

    # --- WebSocket echo ---------------------------------------------------------------------

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        message, opcode = b"", 0
        while True:
            frame = self._read_frame()
            if frame is None:
                return
            fin, op, payload = frame
            if op == 8:  # close: answer it and end
                self._write_frame(8, payload[:2])
                return
            if op == 9:
                self._write_frame(10, payload)
                continue
            if op in (1, 2):
                message, opcode = payload, op
            elif op == 0:
                message += payload
            if len(message) > MAX_WS_MESSAGE:
                self._write_frame(8, struct.pack("!H", 1009))
                return
            if fin and op in (0, 1, 2):
                self._write_frame(opcode, message)

    def _read_exact(self, n: int) -> bytes | None:
        data = self.rfile.read(n)
        return data if len(data) == n else None

    def _read_frame(self) -> tuple[bool, int, bytes] | None:
        head = self._read_exact(2)
        if head is None:
            return None
        fin, op = bool(head[0] & 0x80), head[0] & 0x0F
        masked, length = bool(head[1] & 0x80), head[1] & 0x7F
        if length == 126:
            ext = self._read_exact(2)
            if ext is None:
                return None
            length = struct.unpack("!H", ext)[0]
        elif length == 127:
            ext = self._read_exact(8)
            if ext is None:
                return None
            length = struct.unpack("!Q", ext)[0]
        if length > MAX_WS_MESSAGE:
            return None
        mask = self._read_exact(4) if masked else b"\0\0\0\0"
        payload = self._read_exact(length) if length else b""
        if mask is None or payload is None:
            return None
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return fin, op, payload

    def _write_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        self.wfile.write(head + payload)
        self.wfile.flush()

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


def main() -> None:
    port = int(os.environ["PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"web-app listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
