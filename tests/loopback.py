"""A JSON endpoint on 127.0.0.1 for tests of ubsafe's HTTP clients: each POST's decoded body and
headers go to `respond`, whose (status, payload, extra headers) is the answer."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, Any], dict[str, str]]


class Loopback:
    def __init__(self, respond: Callable[[dict[str, Any], dict[str, str]], Reply]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload, headers = respond(body, dict(self.headers))
                data = json.dumps(payload).encode()
                self.send_response(status)
                headers = {
                    "Content-Type": "application/json",
                    "Content-Length": str(len(data)),
                    **headers,
                }
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> Any:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
