"""A real S3 API for tests: moto's server on 127.0.0.1, reached through s3fs.

:func:`moto_s3` starts the server, puts the credentials and endpoint in the environment
(so Ray workers started afterwards inherit them, and fsspec in every process finds the
endpoint) and yields an :class:`S3`: an s3fs filesystem and the server's request log.
Start Ray (or a ``ray.cluster_utils.Cluster``) inside it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_REQUEST_LINE = re.compile(r'"([A-Z]+ \S+ HTTP/[0-9.]+)"')
SECRET = "raypipe-test-secret-7f3a9c"  # must never appear in output, logs or reports


@dataclass
class S3:
    """A running moto server: ``fs`` (s3fs), ``endpoint`` and ``requests`` (every request
    line the server logged, e.g. ``"PUT /bucket/key HTTP/1.1"``)."""

    fs: Any
    endpoint: str
    requests: list[str] = field(default_factory=list)


class _RequestLog(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        # werkzeug logs '127.0.0.1 - - [date] "PUT /bucket/key HTTP/1.1" 200 -'
        found = _REQUEST_LINE.search(record.getMessage())
        if found:
            self.lines.append(found.group(1))


@contextmanager
def moto_s3(bucket: str) -> Iterator[S3]:
    """moto's S3 server with ``bucket`` created (needs ``moto[server]`` and ``s3fs``)."""
    import fsspec.config
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "raypipe-test-key",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3": json.dumps({"endpoint_url": endpoint}),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fsspec.config.conf.setdefault("s3", {})["endpoint_url"] = endpoint
    s3 = S3(fs=s3fs.S3FileSystem(endpoint_url=endpoint), endpoint=endpoint)
    handler = _RequestLog(s3.requests)
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addHandler(handler)
    level = werkzeug.level
    werkzeug.setLevel(logging.INFO)
    try:
        s3.fs.mkdir(bucket)
        yield s3
    finally:
        werkzeug.removeHandler(handler)
        werkzeug.setLevel(level)
        fsspec.config.conf["s3"].pop("endpoint_url", None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
