"""The built-in ``api-app`` template: a JSON API on $PORT (stdlib only, a script).

GET /healthz, GET /v1/info, POST /v1/echo (returns the JSON body it was sent).
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
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
    print(f"api-app listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
