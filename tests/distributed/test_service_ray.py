"""A handed-over run inside the service, on a real local Ray: its mailbox actor, its watcher
thread and the pipeline. (The service as a command: tests/deploy/test_serve.py.)"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import ray

from raypipe.distributed import service
from raypipe.distributed.service import Mailbox
from raypipe.testing import ClipSpec, make_clip


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    pass


def _request(tmp_path: Path) -> dict[str, Any]:
    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=12, width=96, height=64))
    return {
        "input": str(tmp_path / "in.mp4"),
        "output": str(tmp_path / "out.mp4"),
        "options": {"model": "builtin:invert", "chunk_frames": 6, "quiet": True},
        "tty": False,
        "cwd": str(tmp_path),
    }


def _events(mailbox: Any, run_id: str) -> list[tuple[str, Any]]:
    return list(ray.get(mailbox.events.remote(run_id, 0, 1.0)))


def test_a_cancel_that_comes_once_the_output_is_in_place_leaves_the_run_standing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C on a served run as it ended: the service's watcher interrupted it after its
    output was in place, and the run was called cancelled (the command said
    "interrupted", exit 130) with the whole output left there (a sweep). A cancel from
    that moment on is too late: the run is done."""
    mailbox = ray.remote(Mailbox).remote({"host": "h", "pid": os.getpid(), "install": "/x",
                                          "version": "0"})  # fmt: skip
    run_id, _ = ray.get(mailbox.submit.remote(_request(tmp_path)))
    _, request = ray.get(mailbox.take.remote(0.0))
    written = service._Run.output_written

    def cancel_once_written(run: service._Run, stats: Any) -> None:
        written(run, stats)
        assert (tmp_path / "out.mp4").exists()
        ray.get(mailbox.cancel.remote(run_id))  # the command's Ctrl-C, now
        time.sleep(3 * service.POLL_S)  # the watcher sees it (it waits POLL_S a call)

    monkeypatch.setattr(service._Run, "output_written", cancel_once_written)
    ended = service.run_one(mailbox, run_id, request)
    assert ended.startswith("done"), ended
    kinds = [kind for kind, _ in _events(mailbox, run_id)]
    assert kinds[-1] == "done" and "error" not in kinds, kinds
    assert (tmp_path / "out.mp4").exists()


def test_a_cancel_before_the_output_is_in_place_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: a cancel while the run works stops it, and nothing is written."""
    mailbox = ray.remote(Mailbox).remote({"host": "h", "pid": os.getpid(), "install": "/x",
                                          "version": "0"})  # fmt: skip
    request = _request(tmp_path)
    request["options"]["model"] = "sim:hold_ms=400"
    request["options"]["batch_size"] = 1
    run_id, _ = ray.get(mailbox.submit.remote(request))
    _, request = ray.get(mailbox.take.remote(0.0))
    mailbox.cancel.remote(run_id)  # before the run starts: the watcher sees it at once
    assert service.run_one(mailbox, run_id, request) == "cancelled"
    assert _events(mailbox, run_id)[-1] == (
        "error", {"type": "KeyboardInterrupt", "message": "cancelled"}
    )  # fmt: skip
    assert not (tmp_path / "out.mp4").exists()


def test_an_actor_of_the_services_name_that_is_no_service_is_said_so(caplog: Any) -> None:
    """Another program's actor named as the service's: `serve` failed with "KeyError: 'host'
    (unexpected)" and a run said "it runs on None, not this machine" (a sweep)."""
    import logging

    from raypipe.errors import ClusterError

    @ray.remote(num_cpus=0)
    class Squatter:
        def info(self) -> dict[str, Any]:
            return {"mine": True}

    squatter = Squatter.options(  # type: ignore[attr-defined]
        name=service.SERVICE_NAME, namespace=service.NAMESPACE
    ).remote()
    try:
        ray.get(squatter.info.remote())
        with pytest.raises(ClusterError, match="is not a raypipe service; stop whatever made it"):
            service._wait_for_no_service({"host": "h", "pid": 1})
        with caplog.at_level(logging.WARNING, logger="raypipe"):
            assert service.hand_over("in.mp4", "out.mp4", {}) is None
        assert "there is not a raypipe service; running it here" in caplog.text
    finally:
        ray.kill(squatter)
