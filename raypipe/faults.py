"""Fault hooks for resilience tests: crash a process at a chosen point, record attempts.

Inert unless the environment asks for them, so production runs pay one dictionary lookup
per hook. Two variables, read when a hook runs (workers get them through the Ray
``runtime_env``, a driver from its own environment):

``RAYPIPE_INJECT_EXIT`` = ``STAGE:ID:MARKER_DIR`` (several separated by ``;``)
    The first process to reach ``STAGE`` for ``ID`` creates ``MARKER_DIR/ID.STAGE`` and
    kills itself with SIGKILL (no cleanup, like a crash); later attempts find the marker
    and carry on. Stages and their ids: ``decode``, ``infer``, ``encode`` (a chunk id, in
    the worker running that stage); ``segment`` (a chunk id, in the driver, when it learns
    that the chunk's segment is in the work directory); ``assembly`` (a video id, in the
    assembly task, as it starts); ``assemble`` (an output file name, in the process
    assembling it, after some packets of the output are written).

``RAYPIPE_RECORD_ATTEMPTS`` = ``DIR``
    Every hook creates an empty file ``DIR/ID.STAGE.NODE.PID.N`` when reached, so a test
    can see which node and process started which chunk, and how often.

``RAYPIPE_HOLD_NODES`` = ``DIR``
    A hook reached on a node (a worker stage given its node id) waits, after recording its
    attempt, for as long as ``DIR`` holds a file named by the node's id (every stage there
    waits: a test holds work on a node it is about to remove, so that work is certainly in
    flight) or by ``NODE.STAGE`` (only that stage waits: a test holds each node's inference
    until every node has begun it, while decoding and encoding go on).
"""

from __future__ import annotations

import os
import signal
import time
from typing import NamedTuple

EXIT_ENV = "RAYPIPE_INJECT_EXIT"
RECORD_ENV = "RAYPIPE_RECORD_ATTEMPTS"
HOLD_ENV = "RAYPIPE_HOLD_NODES"


def checkpoint(stage: str, key: str, *, node: str = "") -> None:
    """A point where ``stage`` starts (or has just done) its work on ``key``."""
    record_dir = os.environ.get(RECORD_ENV)
    if record_dir:
        _record(record_dir, stage, key, node)
    hold_dir = os.environ.get(HOLD_ENV)
    if hold_dir and node:
        holds = os.path.join(hold_dir, node), os.path.join(hold_dir, f"{node}.{stage}")
        while any(map(os.path.exists, holds)):
            time.sleep(0.05)
    for spec in filter(None, os.environ.get(EXIT_ENV, "").split(";")):
        want_stage, want_key, marker_dir = spec.split(":", 2)
        if want_stage == stage and want_key == key:
            _die_once(os.path.join(marker_dir, f"{key}.{stage}"))


class Attempt(NamedTuple):
    """One recorded attempt: a file ``KEY.STAGE.NODE.PID.N`` in the record directory."""

    key: str
    stage: str
    node: str  # ``local`` where the hook was given no node
    pid: int
    n: int  # how many attempts this process had recorded for the same key and stage


def attempt_of(name: str) -> Attempt:
    """The attempt the record file ``name`` stands for (the key may hold dots)."""
    key, stage, node, pid, n = name.rsplit(".", 4)
    return Attempt(key, stage, node, int(pid), int(n))


def _record(directory: str, stage: str, key: str, node: str) -> None:
    n = 0
    while True:
        name = f"{key}.{stage}.{node or 'local'}.{os.getpid()}.{n}"
        try:
            os.close(os.open(os.path.join(directory, name), os.O_CREAT | os.O_EXCL))
            return
        except FileExistsError:
            n += 1


def _die_once(marker: str) -> None:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
