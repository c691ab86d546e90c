"""Every command the docs show either runs here or is listed with why it cannot.

The commands are extracted from the docs (README.md's and cluster/README.md's shell
blocks, the jobs/*.py docstrings, the notebooks' shell blocks and ``!`` lines), not copied
into this test. Each must match one entry of :data:`RUN` (run here, its placeholders given
generated files) or :data:`NOT_HERE` (the reason it cannot run on a machine without a GPU,
a cluster, docker or kubectl); a new command in the docs that matches neither fails
:func:`test_every_doc_command_is_run_or_listed`. ``ray job submit ... -- python jobs/X.py``
runs its entry point directly: the job's own command line, without the cluster.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from raypipe.cli import main
from raypipe.infer.builtin import builtin_bytes

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL = {"bash", "sh", "shell", "console"}


def _logical_lines(lines: list[str]) -> list[str]:
    """Continuation lines joined, comments and blank lines dropped."""
    out: list[str] = []
    pending = ""
    for raw in lines:
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = re.split(r"\s+#\s", pending + line)[0].strip()
        pending = ""
        out.append(" ".join(line.split()))
    return out


def _markdown_commands(text: str) -> list[str]:
    lines, block, inside = [], [], None
    for line in text.splitlines():
        fence = FENCE.match(line.strip())
        if fence and inside is None:
            inside, block = fence.group(1), []
        elif fence:
            if inside in SHELL:
                lines += _logical_lines(block)
            inside = None
        elif inside is not None:
            block.append(line)
    return lines


def _docstring_commands(path: Path) -> list[str]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return _logical_lines([line for line in doc.splitlines() if line.startswith("    ")])


def _notebook_commands(path: Path) -> list[str]:
    found = []
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            found += _markdown_commands(source)
        else:
            found += _logical_lines(
                [line[1:] for line in source.splitlines() if line.startswith("!")]
            )
    return found


def doc_commands() -> dict[str, list[str]]:
    """Every shell command of the docs, by the file it is in."""
    docs = {
        "README.md": _markdown_commands((REPO / "README.md").read_text()),
        "cluster/README.md": _markdown_commands((REPO / "cluster" / "README.md").read_text()),
    }
    for path in sorted((REPO / "jobs").glob("*.py")):
        docs[f"jobs/{path.name}"] = _docstring_commands(path)
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        docs[f"notebooks/{path.name}"] = _notebook_commands(path)
    return docs


NOT_HERE: dict[str, str] = {
    r"python3 -m venv .venv && .venv/bin/pip install -e \"\.\[cpu\]\"": "a fresh install "
    "from the package index (CI installs so; `raypipe demo` runs in tests/test_cli.py)",
    r"python3 -m venv .venv && .venv/bin/pip install -e \"\.\[test\]\"": "a fresh install "
    "and the whole test suite (CI runs it)",
    r"python3 -m venv .venv && .venv/bin/pip install -e \"\.\[test-gpu\]\"": "needs a GPU",
    r"raypipe run in\.mp4 out\.mkv .*--device gpu": "needs a GPU",
    r"raypipe build-engines ": "needs a GPU cluster and its S3 bucket (the positional "
    "form runs below and fails in one line without a GPU)",
    r"docker ": "needs docker and a registry",
    r"aws ssm ": "needs an AWS account",
    r"ray up ": "needs an AWS account (the cluster launcher)",
    r"ray dashboard ": "needs a launched cluster",
    r"kubectl ": "needs a Kubernetes cluster with KubeRay",
    r"export (RAY_AUTH_MODE|RAY_AUTH_TOKEN_PATH|RAY_ADDRESS|RAYPIPE_CLUSTER_ADDRESS|"
    r"RAYPIPE_INPUT_URI)=": "points the shell or notebook at a real cluster and its bucket "
    "(tests/deploy/test_notebooks.py runs the notebooks without them)",
    r"ray job (logs|status|list|stop)": "needs a running cluster's Jobs API",
    r"ray job submit .*jobs/process_video\.py .*--device gpu": "needs a GPU cluster",
    r"ray job submit .*jobs/process_video\.py s3://bucket/film\.mp4 /mnt/shared/film\.out\.mp4 "
    r"--model builtin:sharpen --chunk-frames 64$": "needs a cluster and its S3 bucket and "
    "a shared /mnt",
    r"ray job submit .*jobs/process_archive\.py": "needs a GPU cluster and its S3 bucket",
    r"ray start --head --port 6379$": "starts a cluster on this machine's default ports "
    "(tests/deploy/test_serve.py starts one on free ports with its own temp dir)",
    r"raypipe serve --address ": "runs until stopped, on a running cluster "
    "(tests/deploy/test_serve.py runs it against a real `ray start --head`)",
    r"raypipe run in\.mp4 out\.mp4 --model builtin:sharpen --address 127\.0\.0\.1:6379$": "needs "
    "the running cluster and service above (tests/deploy/test_serve.py)",
}

# Run here: the pattern, and the exit code expected (1: a typed one-line error).
RUN: dict[str, int] = {
    r"raypipe run INPUT OUTPUT --model builtin:sharpen$": 0,
    r"raypipe run in\.mp4 hashes/ --model builtin:phash --sample-fps 1$": 0,
    r"raypipe run in\.mp4 out\.mp4 --model unet\.onnx --pad-multiple 32$": 0,
    r"raypipe run in\.mp4 out\.mp4 --processor my_chain\.py:FaceChain$": 0,
    r"raypipe archive INPUTS OUTPUT_DIR --model builtin:sharpen": 0,
    r"raypipe report OUTPUT_DIR/_raypipe-report\.parquet$": 0,
    r"raypipe probe INPUT": 0,
    r"raypipe model list$": 0,
    r"raypipe model show builtin:phash$": 0,
    r"raypipe model export builtin:upscale2x upscale2x\.onnx$": 0,
    r"raypipe demo": 0,
    r"raypipe doctor \[--device gpu\] \[--json\]$": 1,  # this machine has no GPU
    r"ray job submit .*-- python jobs/build_engines\.py s3://bucket/models/restore\.onnx$": 1,
}


def _match(command: str, table: dict[str, object]) -> list[str]:
    return [pattern for pattern in table if re.match(pattern, command)]


def test_every_doc_command_is_run_or_listed() -> None:
    docs = doc_commands()
    assert len(docs["README.md"]) >= 10 and len(docs["cluster/README.md"]) >= 10
    assert docs["jobs/build_engines.py"], "the job docstrings show their command"
    unknown, ambiguous, used = [], [], set()
    for where, commands in docs.items():
        for command in commands:
            hits = _match(command, {**RUN, **NOT_HERE})
            used.update(hits)
            if not hits:
                unknown.append(f"{where}: {command}")
            elif len(hits) > 1:
                ambiguous.append(f"{where}: {command} ({hits})")
    assert unknown == [], "commands neither run nor listed with a reason"
    assert ambiguous == []
    assert used == {*RUN, *NOT_HERE}, "entries that no command of the docs matches"


def _expand_optional(command: str) -> str:
    """``[--json] [--chunk-frames N]``: the options as a user would add them."""
    return re.sub(r"\[([^\]]+)\]", r"\1", command)


class _Workspace:
    """The generated files a doc command's placeholders stand for."""

    def __init__(self, root: Path, clip: Path) -> None:
        self.root = root
        videos = root / "videos"
        videos.mkdir()
        (videos / "a.mp4").write_bytes(clip.read_bytes())
        (videos / "b.mp4").write_bytes(clip.read_bytes())
        sharpen = root / "model.onnx"
        sharpen.write_bytes(builtin_bytes("sharpen"))
        chain = root / "my_chain.py"
        chain.write_text("from raypipe.examples.processors import RegionChain as FaceChain\n")
        self.words = {
            "INPUT": str(clip),
            "in.mp4": str(clip),
            "OUTPUT": str(root / "out-input.mp4"),
            "out.mp4": str(root / "out.mp4"),
            "hashes/": str(root / "hashes"),
            "INPUTS": str(videos),
            "OUTPUT_DIR": str(root / "processed"),
            "OUTPUT_DIR/_raypipe-report.parquet": str(
                root / "processed" / "_raypipe-report.parquet"
            ),
            "PATH": str(root / "processed" / "_raypipe-report.parquet"),
            "unet.onnx": str(sharpen),
            "my_chain.py:FaceChain": f"{chain}:FaceChain",
            "upscale2x.onnx": str(root / "upscale2x.onnx"),
            "DIR": str(root / "demo"),
            "N": "24",
            "MIB": "512",
        }

    def argv(self, command: str) -> list[str]:
        words = shlex.split(_expand_optional(command))
        return [self.words.get(w, w) for w in words]


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    extra = {"run": ["--quiet", "--overwrite"], "archive": ["--quiet"]}.get(argv[0], [])
    code = main([*argv, *extra])  # two README lines write out.mp4
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_doc_commands_run(
    ray_local: None, clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command of :data:`RUN`, as the docs write it, with generated files for its
    placeholders: `raypipe ...` in this process on the module's local Ray (`raypipe demo`
    starts its own Ray: tests/test_cli.py runs it in a fresh process), the job entry point
    in a fresh process without a GPU."""
    space = _Workspace(tmp_path, clips["bframes_aac"])
    commands = [c for cs in doc_commands().values() for c in cs]
    ran: set[str] = set()
    for command in commands:
        hits = _match(command, RUN)
        if not hits or hits[0] == r"raypipe demo" or hits[0] in ran:
            continue
        ran.add(hits[0])
        expected = RUN[hits[0]]
        argv = space.argv(command)
        if argv[0] == "raypipe":
            code, err = _run_cli(argv[1:], capsys)
        else:  # ray job submit ... -- python jobs/X.py ARGS: the entry point itself
            job = argv[argv.index("--") + 1 :]
            job[job.index("s3://bucket/models/restore.onnx")] = str(tmp_path / "model.onnx")
            env = {**os.environ, "RAYPIPE_ENGINE_CACHE": str(tmp_path / "engines")}
            env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
            env["PYTHONPATH"] = str(REPO)
            done = subprocess.run(
                [sys.executable, *job[1:]],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
                check=False,
            )
            code, err = done.returncode, done.stderr
        assert code == expected, f"{command}: {err[-2000:]}"
        if expected == 1:
            assert len(err.strip().splitlines()) == 1, err
            assert "DeviceUnavailableError" in err, err
    assert ran == set(RUN) - {r"raypipe demo"}
    assert (tmp_path / "out-input.mp4").exists() and (tmp_path / "upscale2x.onnx").exists()
    assert len(list((tmp_path / "hashes").iterdir())) == 1
