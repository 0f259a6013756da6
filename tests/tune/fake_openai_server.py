"""A stand-in for an OpenAI-compatible server on 127.0.0.1: `/v1/models` for the health check, and
`/v1/chat/completions` answering whether the checkpoint keeps layer 2's MLP in float. Serves at most
MAX_REQUESTS requests, then exits (so a stray server can never outlive a test for long).

    python fake_openai_server.py <checkpoint dir> <port>
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

MAX_REQUESTS = 50
CHECKPOINT, PORT = Path(sys.argv[1]), int(sys.argv[2])
TAGS = json.loads((CHECKPOINT / "quant_model_description.json").read_text())
ANSWER = "float" if TAGS.get("model.layers.2.mlp.down_proj.weight") == "FLOAT" else "int"


class Handler(BaseHTTPRequestHandler):
    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._reply({"object": "list", "data": [{"id": "quantized", "object": "model"}]})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._reply({"choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}]})

    def log_message(self, *args) -> None:
        pass


server = HTTPServer(("127.0.0.1", PORT), Handler)
server.timeout = 60
for _ in range(MAX_REQUESTS):
    server.handle_request()
