"""The run report: drawn from the stats of a real run on a local Ray, and from archive/GPU
stats documents."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")
ray = pytest.importorskip("ray")

import raypipe  # noqa: E402
from raypipe.report import draw_report, load_stats  # noqa: E402
from raypipe.testing import ClipSpec, make_clip  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_stats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Stats of a small real run: 2 inference actors on 2 logical GPUs, 12 chunks."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",  # a new Ray even when `ray start` runs on this machine
        num_cpus=8,
        num_gpus=2,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        directory = tmp_path_factory.mktemp("report")
        source = make_clip(directory / "in.mp4", ClipSpec(n_frames=48, gop=4))
        stats_path = directory / "stats.json"
        raypipe.process_video(
            str(source),
            str(directory / "out.mp4"),
            model="builtin:blur",
            chunk_frames=4,
            workers=2,
            stats_path=str(stats_path),
            quiet=True,
        )
        yield json.loads(stats_path.read_text())
    finally:
        ray.shutdown()


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"), "PNG is truncated"
    return width, height


def keep_for_review(path: Path) -> None:
    """Copy to RAYPIPE_REPORT_REVIEW_DIR when set, to look at the drawing by eye."""
    review = os.environ.get("RAYPIPE_REPORT_REVIEW_DIR")
    if review:
        Path(review, path.name).write_bytes(path.read_bytes())


def test_report_of_a_real_run(run_stats: dict[str, Any], tmp_path: Path) -> None:
    assert len(run_stats["chunks"]) == 12
    out = tmp_path / "report.png"
    draw_report(run_stats, str(out))
    width, height = png_size(out)
    # 580 px is the shortest drawing (up to 3 lanes, no GPU samples): how many task-worker
    # lanes a run has depends on Ray's scheduling (2 actors + 1 worker happens).
    assert 1000 <= width <= 2000 and 580 <= height <= 2400, (width, height)
    assert not [p for p in tmp_path.iterdir() if p.name != "report.png"], "temp file left"
    keep_for_review(out)

    # One lane per task worker: the same chunks in one worker process (with the actors' 1
    # or 2 lanes, the shortest drawing) and spread over 12 (13 or 14 lanes) draw taller.
    heights = []
    for name, pid_of in (("one", lambda i: 9000), ("spread", lambda i: 9000 + i)):
        chunks = [
            {**c, "decode_pid": pid_of(i), "encode_pid": pid_of(i)}
            for i, c in enumerate(run_stats["chunks"])
        ]
        path = tmp_path / f"{name}-worker.png"
        draw_report({**run_stats, "chunks": chunks}, path)
        heights.append(png_size(path)[1])
    assert heights[0] == 580 and heights[1] > heights[0] + 8 * 26, heights


def test_report_from_a_stats_file_path(run_stats: dict[str, Any], tmp_path: Path) -> None:
    stats_path = tmp_path / "stats.json"
    stats_path.write_text(json.dumps(run_stats))
    out = tmp_path / "from-file.png"
    draw_report(stats_path, out)
    png_size(out)
    assert load_stats(stats_path)["totals"]["frames"] == 48


def _archive_stats_with_gpu(run: dict[str, Any]) -> dict[str, Any]:
    """Three videos (the real run's chunks relabelled, one chunk failed) and GPU samples."""
    chunks = []
    for i, chunk in enumerate(run["chunks"]):
        video = f"video-{i % 3}"
        chunks.append({**chunk, "video_id": video, "chunk_id": f"{video}-{i // 3:06d}"})
    chunks[5].update(error_type="DecodeError", error_message="bad packet")
    t0 = min(c["decode_start"] for c in chunks)
    t1 = max(c["encode_start"] + c["encode_s"] for c in chunks)
    samples = []
    steps = 40
    for k in range(steps + 1):
        t = t0 + (t1 - t0) * k / steps
        for gpu in (0, 1):
            samples.append(
                {
                    "t": t,
                    "gpu": gpu,
                    "util": 50 + 40 * ((k + gpu) % 2),
                    "mem_used": (2 + gpu) * 2**30,
                }
            )
    totals = {"videos": 3, "done": 2, "failed": 1, "frames": 44, "wall_seconds": t1 - t0}
    return {"totals": totals, "chunks": chunks, "gpu": {"available": True, "samples": samples}}


def test_report_of_an_archive_with_gpu_samples(run_stats: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "archive-report.png"
    draw_report(_archive_stats_with_gpu(run_stats), out, title="archive with GPU samples")
    png_size(out)
    keep_for_review(out)


def test_report_with_gpu_monitor_summary(run_stats: dict[str, Any], tmp_path: Path) -> None:
    """GpuMonitor.summary()'s shape: samples in seconds since the monitor started."""
    samples = [
        {"t_s": k * 0.5, "gpu": 3, "util_pct": 10 * (k % 10), "memory_used_bytes": 2**30}
        for k in range(12)
    ]
    stats = {**run_stats, "gpus": {"available": True, "interval_s": 0.5, "samples": samples}}
    out = tmp_path / "gpu-monitor.png"
    draw_report(stats, out)
    png_size(out)
    keep_for_review(out)


def test_report_without_chunks_or_gpu_still_draws(tmp_path: Path) -> None:
    out = tmp_path / "empty.png"
    draw_report({"totals": {}, "chunks": []}, out)
    png_size(out)


def test_not_a_stats_document_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    # {} and `probe --json`'s document drew an empty picture, {"totals": 5} raised an
    # AttributeError (a sweep)
    for doc in ([1, 2, 3], {}, {"streams": []}, {"totals": 5, "chunks": []}, {"totals": {}}):
        bad.write_text(json.dumps(doc))
        with pytest.raises(ValueError, match="expected a raypipe stats document"):
            draw_report(bad, tmp_path / "x.png")
        assert not (tmp_path / "x.png").exists()


def test_the_report_says_which_fps_is_wall_clock(run_stats: dict[str, Any]) -> None:
    """The title's fps counts the whole wall time, the throughput panel's mean only the
    pipeline from the first chunk on: both say so, so they never seem to disagree."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raypipe.report import _draw_throughput, _summary

    chunks = run_stats["chunks"]
    t0 = min(c["decode_start"] for c in chunks)
    summary = _summary(run_stats, chunks, 1.0)
    assert f"{run_stats['totals']['fps']:.1f} fps over the wall time (start-up included)" in summary
    # the actors that ran chunks, of the run's workers: "1 inference actor(s)" beside stats
    # that said 2 workers read as a contradiction (a sweep)
    one = [{**c, "actor_id": "a"} for c in chunks]
    assert "chunks on 1 of 2 inference actors" in _summary(
        {**run_stats, "totals": {**run_stats["totals"], "workers": 2}}, one, 1.0
    )
    ran = len({c["actor_id"] for c in chunks})  # both, unless Ray gave one every chunk
    expected = "chunks on 2 inference actors" if ran == 2 else "chunks on 1 of 2 inference actors"
    assert "12 chunks, " in summary and expected in summary, summary
    fig, ax = plt.subplots()
    _draw_throughput(ax, chunks, t0, 5.0)
    labels = ax.get_legend_handles_labels()[1]
    plt.close(fig)
    assert any(
        label.startswith("mean ") and label.endswith("frames/s in the pipeline (first chunk on)")
        for label in labels
    ), labels


def test_an_archives_table_on_the_terminal_is_capped_failures_first() -> None:
    """`raypipe archive` printed a line per video as it ended: 50,000 of them for an
    archive that size (a sweep). It prints at most a limit of rows, the failed first, and
    says how to see the rest; `raypipe report` prints them all."""
    from raypipe.archive_report import format_report

    def row(i: int, status: str) -> dict[str, Any]:
        error = ("CorruptVideoError", "bad") if status == "failed" else ("", "")
        facts = {"frames_out": 5, "chunks": 1, "seconds": 0.1, "note": ""}
        return {"uri": f"v{i}.mp4", "status": status, **facts,
                "error_type": error[0], "error_message": error[1]}  # fmt: skip

    rows = [row(i, "failed" if i in (7, 90) else "done") for i in range(100)]
    table = format_report(rows, limit=5, path="/o/r.parquet").splitlines()
    assert [line.split()[-1] for line in table[1:-2] if line.startswith(("done", "failed"))] == [
        "v0.mp4", "v1.mp4", "v2.mp4", "v7.mp4", "v90.mp4",
    ]  # fmt: skip
    assert table[-2:] == [
        "... 95 more rows: `raypipe report /o/r.parquet` lists every one",
        "100 videos: 98 done, 0 skipped, 2 failed",
    ]
    assert len(format_report(rows).splitlines()) == 1 + 100 + 2 + 1  # heading, rows, errors, sum


def test_fused_actors_are_one_lane_each_and_busy_with_all_their_stages() -> None:
    """On CPU an actor decodes and encodes its chunks too: it was drawn twice (an actor
    lane and a task worker lane of the same pid) and said to be 8% busy, counting its
    inference alone, when it was nearly always busy (a sweep)."""
    from raypipe.report import _lanes, _summary

    chunks = []
    for i in range(4):
        actor, pid = ("a1", 11) if i % 2 == 0 else ("a2", 12)
        start = 10.0 + 2 * (i // 2)
        chunks.append({
            "index": i, "n_frames": 10, "actor_id": actor, "infer_pid": pid,
            "decode_pid": pid, "encode_pid": pid,
            "decode_start": start, "decode_s": 0.5,
            "infer_start": start + 0.5, "infer_s": 0.2,
            "encode_start": start + 0.7, "encode_s": 1.2,
        })  # fmt: skip
    lanes = _lanes(chunks, 10.0)
    assert [lane.label for lane in lanes] == [
        "infer actor a1 (pid 11) (decode+infer+encode)",
        "infer actor a2 (pid 12) (decode+infer+encode)",
    ]
    # 2 actors over 4 s, each busy 2 x 1.9 s: 95%, not the 10% of inference alone
    assert "actors busy 95%" in _summary({"totals": {}}, chunks, 4.0)
    split = [{**c, "decode_pid": 99, "encode_pid": 99} for c in chunks]
    assert len(_lanes(split, 10.0)) == 3 and "actors busy 10%" in _summary({}, split, 4.0)
