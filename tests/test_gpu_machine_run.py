"""tools/gpu_machine_run.sh, the one command a lent GPU machine runs, reaches its end: the
bundle's parts assembled, checked and unpacked, every step called, the log written.

A device session's whole call was once lost to this script hanging after its checksum
(a bare ``wait`` also waits for the ``tee`` that logs the script, which never ends), so the
script runs here with a stand-in bundle and a stand-in Python that only records its
arguments."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_machine_run.sh"


def _tar_xz(path: Path, name: str, data: bytes) -> None:
    with tarfile.open(path, "w:xz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _bundle(dev: Path, work: Path) -> None:
    """What tools/gpu_bundle.sh leaves in the machine's /tmp/dev: five parts of one tar and
    its sha256."""
    _tar_xz(work / "onnxruntime_gpu.tar.xz", "onnxruntime_marker", b"ort")
    _tar_xz(work / "ray.tar.xz", "ray_marker", b"ray")
    (work / "stand_in-1.0-py3-none-any.whl").write_bytes(b"not a wheel: pip is a stand-in")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("onnxruntime_gpu.tar.xz", "ray.tar.xz", "stand_in-1.0-py3-none-any.whl"):
            tar.add(work / name, arcname=name)
    data = buffer.getvalue()
    size = -(-len(data) // 5)
    for i in range(5):
        (dev / f"part.{i}").write_bytes(data[i * size : (i + 1) * size])
    digest = hashlib.sha256(data).hexdigest()
    (dev / "bundle.sha256").write_text(f"{digest}  bundle.tar\n")


def test_gpu_machine_run_installs_the_bundle_and_reaches_the_end(tmp_path: Path) -> None:
    dev, site, out, work = (tmp_path / d for d in ("dev", "site", "out", "work"))
    for d in (dev, work):
        d.mkdir()
    _bundle(dev, work)
    calls = tmp_path / "calls.txt"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    python.chmod(0o755)
    env = {**os.environ, "DEV": str(dev), "SITE": str(site), "OUT": str(out), "PY": str(python)}
    done = subprocess.run(
        ["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bundle.tar: OK" in done.stdout
    assert (site / "onnxruntime_marker").read_bytes() == b"ort"
    assert (site / "ray_marker").read_bytes() == b"ray"
    steps = [line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("===")]
    assert steps == [
        "install", "doctor", "pytest -m gpu", "pixels --device gpu", "handoff --device gpu",
        "gpu_e2e", "done",
    ]  # fmt: skip
    recorded = calls.read_text().splitlines()
    assert recorded[0].startswith("-m pip install") and f"--target {site}" in recorded[0]
    assert any(c.startswith("benchmarks/gpu_e2e.py") for c in recorded)
    assert "=== " in (out / "gpu-run.log").read_text()
