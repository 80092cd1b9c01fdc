"""The built-in ``api-app`` template: a JSON API on $PORT (stdlib only, a script).

GET /healthz, GET /v1/info, POST /v1/echo (returns the JSON body it was sent),
GET /v1/sleep?seconds=S (answers after S seconds, at most 120: a slow upstream).
"""

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length

    def _send(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif self.path.startswith("/v1/sleep"):
            query = parse_qs(urlsplit(self.path).query)
            seconds = min(120.0, float((query.get("seconds") or ["1"])[0]))
            time.sleep(max(0.0, seconds))
            self._send(200, {"slept": seconds})
        elif self.path == "/v1/info":
            gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            self._send(200, {"workload": os.environ.get("WORKLOAD_ID"),
                             "gpus": [int(g) for g in gpus.split(",") if g]})
        else:
            self._send(404, {"error": "not found", "path": self.path})

    def do_POST(self) -> None:
        if self.path != "/v1/echo":
            self._send(404, {"error": "not found", "path": self.path})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            data = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self._send(400, {"error": "body is not JSON"})
            return
        self._send(200, {"echo": data})

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


def main() -> None:
    port = int(os.environ["PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"api-app listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
