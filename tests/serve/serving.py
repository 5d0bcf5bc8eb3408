"""Helpers for the serving tests: a real server process, and plain HTTP with the standard library."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse


class ServerProcess:
    """A real `lmsmith serve` in its own process, on a free loopback port, its log kept in a file."""

    def __init__(self, model, *args: str, log_file):
        import subprocess
        import sys

        self.log_file = log_file
        self.process = subprocess.Popen([sys.executable, "-m", "lmsmith", "serve", str(model), "--host", "127.0.0.1",
                                         "--port", "0", *args], stdout=subprocess.DEVNULL,
                                        stderr=open(log_file, "w", encoding="utf-8"))
        self.url = self._wait_for_address()

    def _wait_for_address(self, timeout: float = 120.0) -> str:
        import re
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r" on (http://127\.0\.0\.1:\d+/v1)", self.log())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                raise RuntimeError(f"lmsmith serve exited with {self.process.returncode}:\n{self.log()}")
            time.sleep(0.1)
        self.process.kill()
        raise RuntimeError(f"lmsmith serve did not start:\n{self.log()}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8")

    def stop(self, timeout: float = 30.0) -> int:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def http_request(url: str, method: str, path: str, body=None, key: str | None = None, timeout: float = 60):
    """(status, parsed JSON) of one request; `body` as JSON, or as text sent exactly as given."""
    connection = open_request(url, method, path, body, key, timeout)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, json.loads(data) if data else None


def open_request(url: str, method: str, path: str, body=None, key: str | None = None, timeout: float = 60):
    """A connection with the request sent, its response not yet read (for streams)."""
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    content = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    connection.request(method, parsed.path + path, body=content, headers=headers)
    return connection
