"""raypipe.exiting and the command's entry point: the process ends with the command's status
after Python's exit steps (non-daemon threads, atexit handlers, buffered output) and without
the interpreter's finalization."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from raypipe.exiting import exit_status

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path

OUT = Path({out!r})


class Finalized:
    def __del__(self):  # runs in the interpreter's finalization, if it runs
        (OUT / "finalized").write_text("yes")


KEPT = Finalized()
atexit.register(lambda: (OUT / "atexit").write_text("yes"))


def late():
    time.sleep(0.3)
    (OUT / "thread").write_text("yes")


threading.Thread(target=late).start()  # not a daemon: exit waits for it
sys.stdout.write("buffered, no newline")
{end}
"""


def _script(tmp_path: Path, end: str) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(SCRIPT.format(out=str(tmp_path), end=end))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )


def test_end_process_runs_the_exit_steps_and_skips_finalization(tmp_path: Path) -> None:
    done = _script(tmp_path, "from raypipe.exiting import end_process; end_process(3)")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, no newline"
    assert (tmp_path / "thread").read_text() == "yes"  # waited for
    assert (tmp_path / "atexit").read_text() == "yes"  # ran
    assert not (tmp_path / "finalized").exists()  # skipped


def test_a_plain_exit_finalizes(tmp_path: Path) -> None:
    """The control: the same script ending as Python ends it reaches finalization."""
    done = _script(tmp_path, "sys.exit(3)")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, no newline"
    assert (tmp_path / "thread").read_text() == "yes"
    assert (tmp_path / "atexit").read_text() == "yes"
    assert (tmp_path / "finalized").read_text() == "yes"


@pytest.mark.parametrize("code,status", [(None, 0), (0, 0), (2, 2), (141, 141), ("message", 1)])
def test_exit_status_is_pythons(code: object, status: int) -> None:
    assert exit_status(code) == status


def _raypipe() -> str:
    return shutil.which("raypipe", path=os.path.dirname(sys.executable)) or "raypipe"


@pytest.mark.parametrize(
    "args,status,stream,text",
    [
        (["--help"], 0, "stdout", "usage: raypipe"),
        (["run"], 2, "stderr", "raypipe run: error:"),
        (["probe", "/nonexistent/clip.mp4"], 1, "stderr", "raypipe: error:"),
    ],
)
def test_the_command_exits_with_mains_status_and_output(
    args: list[str], status: int, stream: str, text: str
) -> None:
    """The installed ``raypipe`` script and ``python -m raypipe.cli`` go through
    :func:`raypipe.cli.entry`: the same statuses and output as :func:`raypipe.cli.main`."""
    for command in ([_raypipe()], [sys.executable, "-m", "raypipe.cli"]):
        done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == status, done.stderr
        assert text in getattr(done, stream), (command, done.stdout, done.stderr)


def test_sigterm_ends_a_run_as_ctrl_c_does_and_the_same_command_finishes_it(
    tmp_path: Path,
) -> None:
    """``kill``, ``ray job stop`` and a container's stop send SIGTERM: the command says so in
    one line and ends with 143, with Ray's driver handler (``sys.exit(15)``, after a native
    stack dump) kept out of the way; nothing is written at the output, and the same command
    then writes it whole. Not a Ray-less check: the handler must survive ``ray.init``."""
    from conftest import assert_exact, lossless_cli_args, running_command

    from raypipe.testing import ClipSpec, make_clip

    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=360, width=320, height=240))
    model = "builtin:sharpen"
    command = [sys.executable, "-m", "raypipe.cli", "run", "in.mp4", "out.mp4",
               "--model", model, "--chunk-frames", "24", *lossless_cli_args()]  # fmt: skip
    run, seen = running_command(command, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.mp4.raypipe-work/*/*.rpseg")):  # a segment written
        assert time.monotonic() < deadline and run.poll() is None, seen
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    _, rest = run.communicate(timeout=120)
    assert run.returncode == 143, seen + rest
    assert rest.strip().splitlines()[-1] == "raypipe: terminated (SIGTERM)", rest
    assert "SIGTERM received" not in seen + rest  # Ray's native handler's dump
    # nor its work folder: a run never resumes (an archive does), so its segments were left
    # next to OUTPUT for good (a sweep)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
    # and no "remove it by hand" for a folder the removal after Ray's end took (a sweep)
    assert "could not be removed" not in seen + rest
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert_exact(tmp_path / "in.mp4", tmp_path / "out.mp4", model)


def test_ctrl_c_held_is_taken_on_the_way_out() -> None:
    """Ctrl-C (from any thread: a notebook kernel's, a terminal's) inside the block is not
    raised there, where it would cut ``ray.init`` or an import in half, but as the block
    ends; the process's own handler is put back."""
    import threading
    import time

    from raypipe.exiting import ctrl_c_held

    before = signal.getsignal(signal.SIGINT)
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_held():
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGINT))
            sender.start()
            sender.join()
            time.sleep(0.05)  # a Python handler would have run by now
            reached.append("the end of the block")
    assert reached == ["the end of the block"]
    assert signal.getsignal(signal.SIGINT) is before
    with ctrl_c_held():  # nothing came: nothing raised
        pass


def test_sighup_ends_the_command_unless_it_is_ignored() -> None:
    """A closed terminal's SIGHUP ends the command as SIGTERM does (status 129); under
    `nohup`, which ignores it, it stays ignored."""
    code = (
        "import signal, sys\n"
        "ignored = sys.argv[1] == 'nohup'  # a terminal's default, whatever runs the test\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN if ignored else signal.SIG_DFL)\n"
        "from raypipe.exiting import raise_on_sigterm, terminating_signal\n"
        "raise_on_sigterm()\n"
        "print(signal.getsignal(signal.SIGHUP) == signal.SIG_IGN)\n"
        "try:\n"
        "    signal.raise_signal(signal.SIGHUP)\n"
        "except KeyboardInterrupt:\n"
        "    print('terminated', terminating_signal())\n"
    )
    plain = subprocess.run([sys.executable, "-c", code, "tty"], capture_output=True, text=True)
    assert plain.stdout.split() == ["False", "terminated", str(int(signal.SIGHUP))], plain.stderr
    nohup = subprocess.run([sys.executable, "-c", code, "nohup"], capture_output=True, text=True)
    assert nohup.stdout.split() == ["True"] and nohup.returncode == 0, nohup.stderr


def test_a_second_ctrl_c_while_ray_shuts_down_keeps_the_status() -> None:
    """A second Ctrl-C 0.2 s after the first came while the command shut Ray down, after
    main had said "interrupted": the KeyboardInterrupt left the entry point, Ray was left
    half shut and the command ended with status 1 (a sweep). The entry point ignores
    signals from there on: the status is main's."""
    script = textwrap.dedent(
        """
        import os, signal, sys, time, types
        import raypipe.cli as cli
        fake = types.ModuleType("raypipe.distributed.cluster")
        def end_for_exit():  # the second Ctrl-C, inside Ray's shutdown
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
        fake.end_for_exit = end_for_exit
        sys.modules["raypipe.distributed.cluster"] = fake
        cli.main = lambda argv=None: 130
        cli.entry([])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("sig", "status", "line"),
    [(signal.SIGINT, 130, "raypipe: interrupted"),
     (signal.SIGTERM, 143, "raypipe: terminated (SIGTERM)")],
)  # fmt: skip
def test_a_signal_while_the_command_imports_ends_it_in_one_line(
    sig: signal.Signals, status: int, line: str
) -> None:
    """Ctrl-C in the command's first half second (its imports) printed a traceback from
    an import, and SIGTERM ended it with no line and the signal's death (a sweep). The
    signal comes here while ``raypipe.cli`` is being imported."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time, types

        class Importing(types.ModuleType):
            def __getattr__(self, name):
                os.kill(os.getpid(), {int(sig)})
                time.sleep(10)

        sys.modules["raypipe.cli"] = Importing("raypipe.cli")
        from raypipe.command import entry
        entry(["--help"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stderr) == (status, line + "\n")
