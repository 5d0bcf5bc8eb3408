"""A tiny OpenAI-compatible stub on 127.0.0.1, only for what a real model cannot do on cue: 429s, 500s,
malformed JSON, a server that refuses response_format, and exact token counts for the budgets."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubTeacher:
    """Answers /v1/models with `models` and each chat request with the next scripted reply.

    A reply is an HTTP status (429, 500, ...), "refuse_format" (400 when response_format is sent),
    or a dict: the JSON content to answer with ("text" in it: that exact text instead).
    When the script runs out, `default(prompt)` answers.
    """

    def __init__(self, default, script=(), models=("teacher",), tokens=100):
        self.default, self.script, self.models, self.tokens = default, list(script), list(models), tokens
        self.requests: list[dict] = []
        self.headers: list[str] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                stub.headers.append(self.headers.get("Authorization", ""))
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                              "owned_by": "stub"} for m in stub.models]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append(body)
                    reply = stub.script.pop(0) if stub.script else None
                if reply is None:
                    reply = stub.default(body["messages"][-1]["content"])
                if reply == "refuse_format" and "response_format" in body:
                    return self._send(400, {"error": {"message": "response_format is not supported",
                                                      "type": "invalid_request_error"}})
                if reply == "refuse_format":
                    reply = stub.default(body["messages"][-1]["content"])
                if isinstance(reply, int):
                    return self._send(reply, {"error": {"message": f"stub status {reply}", "type": "stub"}})
                content = reply["text"] if "text" in reply else json.dumps(reply)
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": content}}],
                                 "usage": {"prompt_tokens": stub.tokens // 2, "completion_tokens": stub.tokens // 2,
                                           "total_tokens": stub.tokens}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def chats(self) -> int:
        return len(self.requests)
