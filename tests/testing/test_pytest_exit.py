"""raypipe.testing.pytest_exit: a pytest process that loads it ends with pytest's own exit
status, after pytest's session and the atexit handlers registered after it, and without
Python's finalization."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = """
import atexit
from pathlib import Path

OUT = Path({out!r})


class Finalized:
    def __del__(self):  # runs in Python's finalization (module teardown), if it runs
        (OUT / "finalized").write_text("yes")


KEPT = Finalized()


def test_registers_a_handler():
    atexit.register(lambda: (OUT / "atexit").write_text("yes"))


def test_outcome():
    assert {outcome}
"""


def _run(tmp_path: Path, outcome: str, plugin: bool) -> tuple[int, str]:
    (tmp_path / "test_sample.py").write_text(
        textwrap.dedent(TESTS.format(out=str(tmp_path), outcome=outcome))
    )
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    args += ["-p", "raypipe.testing.pytest_exit"] if plugin else []
    done = subprocess.run(
        [*args, "test_sample.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stdout


@pytest.mark.parametrize(
    "outcome,status,summary", [("True", 0, "2 passed"), ("False", 1, "1 failed")]
)
def test_the_process_exits_with_pytests_status_after_its_atexit_handlers(
    tmp_path: Path, outcome: str, status: int, summary: str
) -> None:
    code, out = _run(tmp_path, outcome, plugin=True)
    assert code == status, out
    assert summary in out.splitlines()[-1]
    assert (tmp_path / "atexit").read_text() == "yes"  # registered during the session: ran
    assert not (tmp_path / "finalized").exists()  # finalization: skipped


def test_without_the_plugin_finalization_runs(tmp_path: Path) -> None:
    """The control: the same tests without the plugin reach finalization."""
    code, out = _run(tmp_path, "True", plugin=False)
    assert code == 0, out
    assert (tmp_path / "atexit").read_text() == "yes"
    assert (tmp_path / "finalized").read_text() == "yes"


def test_no_tests_collected_keeps_its_status(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "raypipe.testing.pytest_exit", "-p",
         "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 5, done.stdout
