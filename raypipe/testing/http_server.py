"""A real HTTP file server on 127.0.0.1 that answers Range requests and counts what it sends.

Object stores and CDNs serve byte ranges; Python's ``http.server`` does not. Tests use
this one to see how much of a file raypipe really reads (a probe should read the index,
not the media).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["ServedBytes", "serve_directory"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class ServedBytes:
    """Body bytes sent per path (GET and ranged GET), and the requests seen."""

    by_path: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, range
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self, path: str) -> int:
        with self.lock:
            return self.by_path.get(path, 0)

    def reset(self) -> None:
        with self.lock:
            self.by_path.clear()
            self.requests.clear()


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args: object, served: ServedBytes, **kwargs: object) -> None:
        self.served = served
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def log_message(self, *args: object) -> None:
        pass

    def _count(self, n: int) -> None:
        with self.served.lock:
            self.served.by_path[self.path] = self.served.by_path.get(self.path, 0) + n

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        path = self.translate_path(self.path)
        header = self.headers.get("Range", "")
        with self.served.lock:
            self.served.requests.append(("GET", self.path, header))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        match = _RANGE.match(header.strip())
        if match:
            a, b = match.groups()
            if a:
                start, end = int(a), min(int(b), size - 1) if b else size - 1
            elif b:  # suffix range: the last b bytes
                start, end = max(0, size - int(b)), size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(left, 1 << 16))
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break  # the client stopped reading (it had what it needed)
                self._count(len(chunk))
                left -= len(chunk)


@contextlib.contextmanager
def serve_directory(root: str | os.PathLike[str]) -> Iterator[tuple[str, ServedBytes]]:
    """Serve ``root`` on 127.0.0.1 with Range support: yields (base URL, byte counters)."""
    served = ServedBytes()
    handler = functools.partial(_RangeHandler, directory=os.fspath(root), served=served)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
