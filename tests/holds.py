"""Inference held on every node until enough of it has begun, for tests that must see work
spread over several actors or nodes (raypipe.faults: the workers record each attempt in one
directory and wait while a hold file in another names their node's stage).

Left alone, Ray Data may hand every chunk of a short clip to the actors that are up first
(or to the one local to the decoded chunks while it has room), however many actors the
pool starts: on a loaded 2-core machine the last of four actors came up after three had
done all 30 chunks of a clip. A held actor takes at most two chunks
(``max_tasks_in_flight_per_actor``) and the clips have more, so an actor that comes up late
gets the next chunk. Only inference waits (``NODE.infer`` hold files): held decode and encode
tasks could take every slot Ray Data gives those stages."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ray

from raypipe.faults import Attempt, attempt_of


@contextmanager
def inference_held(
    attempts: Path,
    hold_dir: Path,
    enough: Callable[[list[Attempt]], bool],
    what: str,
    timeout_s: float = 240.0,
) -> Iterator[list[str]]:
    """Hold inference on every alive node until ``enough`` holds for the inference attempts
    recorded since the block began (or ``timeout_s`` passed).

    Yields a list that says, once the block ends, how the hold ended (``what`` names the
    condition) and which node and process inferred which chunk: a failing assertion shows
    it."""
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    holds = [hold_dir / f"{node}.infer" for node in nodes]
    before = set(os.listdir(attempts))
    done = threading.Event()
    report: list[str] = []
    start = time.monotonic()

    def inferred() -> list[Attempt]:
        new = map(attempt_of, set(os.listdir(attempts)) - before)
        return sorted(a for a in new if a.stage == "infer")

    def release() -> None:
        while not done.is_set() and time.monotonic() < start + timeout_s:
            if enough(inferred()):
                report.append(f"{what} after {time.monotonic() - start:.1f} s")
                break
            time.sleep(0.05)
        else:
            elapsed = time.monotonic() - start
            report.append(f"hold ended before {what}, after {elapsed:.1f} s")
        for hold in holds:
            hold.unlink(missing_ok=True)

    for hold in holds:
        hold.touch()
    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        yield report
    finally:
        done.set()
        releaser.join()
        records = [(a.key, a.node[:8], a.pid) for a in inferred()]
        report.append(f"inference records (chunk, node, pid): {records}")
