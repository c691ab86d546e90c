"""Fault injection for resilience tests: kill a worker process on a chunk's first attempt.

Active only when ``RAYPIPE_INJECT_EXIT`` is set in the workers' environment, as
``STAGE:CHUNK_ID:MARKER_DIR`` (stage ``decode`` or ``infer``; several separated by ``;``).
The first process to reach that chunk in that stage creates ``MARKER_DIR/CHUNK_ID.STAGE``
and exits at once with ``os._exit`` (no cleanup, like a crash); retries find the marker
and carry on.
"""

from __future__ import annotations

import os

ENV = "RAYPIPE_INJECT_EXIT"


def maybe_exit(stage: str, chunk_id: str) -> None:
    for spec in filter(None, os.environ.get(ENV, "").split(";")):
        want_stage, want_chunk, marker_dir = spec.split(":", 2)
        if want_stage == stage and want_chunk == chunk_id:
            _exit_once(os.path.join(marker_dir, f"{chunk_id}.{stage}"))


def _exit_once(marker: str) -> None:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)
