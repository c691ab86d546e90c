"""Progress of a run, for a terminal, a log or a notebook.

:class:`Progress` follows one video: ``label: done/total frames (pct), fps, ETA``.
:class:`ArchiveProgress` follows an archive: videos done/failed of the total, frames and
fps. Both render through one of three sinks, chosen once at construction:

- a terminal (the stream is a TTY): one line rewritten in place (``\\r``), a newline at the
  end;
- a log or a pipe: one plain line every ``interval_s`` seconds and a final line;
- a notebook (IPython with a kernel, and no stream given): one display updated in place,
  an HTML ``<progress>`` bar with the same text beside it. No tqdm or ipywidgets needed.

``enabled=False`` (the CLI's ``--quiet``) prints nothing at all. Neither class talks to
Ray; the driver calls them as rows come back.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from typing import Any, Protocol, TextIO

__all__ = ["ArchiveProgress", "Progress", "format_duration", "in_notebook"]


def format_duration(seconds: float) -> str:
    """``75`` → ``1m15s``, ``3725`` → ``1h02m05s``; ``?`` when unknown (inf or nan)."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "?"
    whole = max(0, int(round(seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def in_notebook() -> bool:
    """Whether this process runs under IPython with a kernel (Jupyter, VS Code, Colab)."""
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:  # never imported: not a notebook, and stay cheap
        return False
    try:
        shell = ipython_module.get_ipython()
    except Exception:  # noqa: BLE001 - any doubt means "not a notebook"
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class _Sink(Protocol):
    def show(self, text: str, fraction: float | None, *, final: bool) -> None: ...


class _TextSink:
    """A TTY line rewritten in place, or plain lines for logs."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def show(self, text: str, fraction: float | None, *, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


class _NotebookSink:
    """One IPython display, updated in place: a ``<progress>`` bar and the text."""

    def __init__(self) -> None:
        self._handle: Any = None

    def show(self, text: str, fraction: float | None, *, final: bool) -> None:
        from IPython.display import HTML, display

        value = "" if fraction is None else f' value="{min(max(fraction, 0.0), 1.0):.4f}"'
        body = HTML(
            f'<div style="font-family:monospace"><progress max="1"{value} '
            f'style="width:40%;vertical-align:middle"></progress> {html.escape(text)}</div>'
        )
        if self._handle is None:
            self._handle = display(body, display_id=True)
        else:
            self._handle.update(body)


def _make_sink(stream: TextIO | None) -> _Sink:
    if stream is None and in_notebook():
        return _NotebookSink()
    return _TextSink(stream or sys.stderr)


LOG_BEAT = 10
"""In a log (not a terminal), a begun progress repeats its line while nothing is done
every this many intervals (10 s), rather than every interval."""


PACE_AFTER_S = 2.0
"""Seconds after the first frames are done from which the pace counts from them
(:meth:`_Throttled._pace`); before, from the start."""


class _Throttled:
    """Shared timing: show at most every ``interval_s`` seconds, always show the last."""

    def __init__(self, *, enabled: bool, stream: TextIO | None, interval_s: float) -> None:
        self.enabled = enabled
        self.interval_s = interval_s
        self.shared = False  # on a cluster raypipe did not start: a slow start says where to look
        self.start = time.monotonic()
        self._last_shown = float("-inf")
        self._sink: _Sink | None = _make_sink(stream) if enabled else None
        self._closed = False
        self._lock = threading.Lock()  # the heartbeat's thread and the caller's show lines
        self._stopped = threading.Event()
        self._first: tuple[float, int] | None = None  # when frames were first done, how many

    def _count_first(self, done_before: int, frames: int) -> None:
        if self._first is None and frames:
            self._first = (time.monotonic(), done_before + frames)

    def _measured(self, done: int, now: float) -> bool:
        """Whether :meth:`_pace` measures the work itself: frames done since the first,
        :data:`PACE_AFTER_S` and more ago."""
        return (
            self._first is not None
            and done > self._first[1]
            and now - self._first[0] >= PACE_AFTER_S
        )

    def _pace(self, done: int, now: float) -> float:
        """Frames done per second: since frames were first done, once more are and
        :data:`PACE_AFTER_S` have passed since (the start, Ray's included for a begun
        progress, is no measure of the pace), else since construction. Chunks that end
        together (the actors' last ones, a short video's) came within milliseconds of the
        first: the last line said 4707.1 fps for a 36-frame video (a sweep)."""
        if self._measured(done, now):
            assert self._first is not None
            return (done - self._first[1]) / (now - self._first[0])
        return done / max(now - self.start, 1e-9)

    def begin(self) -> None:
        """Show the line now and keep showing it every ``interval_s`` until :meth:`close`,
        while nothing is done yet too: Ray's start and the first chunk take seconds (tens
        on a busy machine), which passed without a word before."""
        self._maybe_show(force=True)
        if self._sink is not None and self.interval_s > 0:
            threading.Thread(target=self._beat, name="raypipe-progress", daemon=True).start()

    def _beat(self) -> None:
        # a log gets a line each time something was done, at most every interval, and
        # while nothing is, one every LOG_BEAT intervals: not the same line every second
        quiet = isinstance(self._sink, _TextSink) and not self._sink.tty
        every = self.interval_s * (LOG_BEAT if quiet else 1)
        while not self._stopped.wait(self.interval_s):
            self._maybe_show(every=every)

    def _maybe_show(self, *, force: bool = False, every: float | None = None) -> None:
        with self._lock:
            now = time.monotonic()
            if self._sink is None or self._closed:
                return
            if force or now - self._last_shown >= (every or self.interval_s):
                self._last_shown = now
                self._sink.show(self.line(now), self.fraction(), final=False)

    def message(self, text: str) -> None:
        """One line of news (a failed video) above the progress line; nothing when quiet."""
        with self._lock:
            if self._sink is None or self._closed:
                return
            if isinstance(self._sink, _NotebookSink):
                print(text)  # the bar's display stays one display, updated in place
            else:
                self._sink.show(text, self.fraction(), final=True)
            self._last_shown = float("-inf")  # the progress line comes back on the next update

    def _close(self, message: str | None) -> None:
        self._stopped.set()
        with self._lock:
            if self._sink is not None and not self._closed:
                self._sink.show(message or self.line(), self.fraction(), final=True)
            self._closed = True

    def stop(self) -> None:
        """End the display without a last line (a run that failed: its error follows); a
        terminal's line rewritten in place gets its newline."""
        self._stopped.set()
        with self._lock:
            if isinstance(self._sink, _TextSink) and self._sink.tty and not self._closed:
                self._sink.stream.write("\n")
                self._sink.stream.flush()
            self._closed = True

    def line(self, now: float | None = None) -> str:
        raise NotImplementedError

    def fraction(self) -> float | None:
        raise NotImplementedError


SLOW_START_S = 30.0
"""Seconds before the first chunk after which the progress line says where to look: on a
cluster other jobs use, the run waits for CPUs or GPUs they hold, and said only
"starting" for minutes (a sweep)."""


def _slow_start(seconds: float, shared: bool) -> str:
    """The hint a long start gets on a cluster others may use (not on raypipe's own local
    Ray, which nothing else joins: the hint was wrong there; a sweep)."""
    if seconds < SLOW_START_S or not shared:
        return ""
    return "; `ray status` shows whether other jobs hold the cluster's CPUs or GPUs"


class Progress(_Throttled):
    """Prints ``label: done/total frames (pct), fps, ETA`` at most every ``interval_s`` s.

    ``update(frames)`` adds frames just finished; ``close(message)`` prints the final line
    (``message``, or the progress line) and ends the display.
    """

    def __init__(
        self,
        total_frames: int,
        *,
        label: str = "",
        enabled: bool = True,
        stream: TextIO | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.total = total_frames
        self.label = label
        self.done = 0
        self._all_done: float | None = None  # when the last frame was done
        super().__init__(enabled=enabled, stream=stream, interval_s=interval_s)

    def update(self, frames: int) -> None:
        """Count ``frames`` more frames as finished; redraw when due (or when all are done)."""
        self._count_first(self.done, frames)
        self.done += frames
        if self.done >= self.total and self._all_done is None:
            self._all_done = time.monotonic()
        self._maybe_show(force=self.done >= self.total)

    def fps(self, now: float | None = None) -> float:
        """Frames finished per second (:meth:`_pace`), until the last frame was done (the
        output's assembly after it fell, and took seconds: a sweep)."""
        now = now or time.monotonic()
        return self._pace(self.done, min(now, self._all_done or now))

    def eta_seconds(self, now: float | None = None) -> float:
        """Seconds left at the current rate; ``inf`` before the first frame."""
        fps = self.fps(now)
        return max(self.total - self.done, 0) / fps if fps > 0 else float("inf")

    def fraction(self) -> float | None:
        return min(self.done / self.total, 1.0) if self.total else None

    def line(self, now: float | None = None) -> str:
        now = now or time.monotonic()
        pct = 100.0 * self.done / self.total if self.total else 100.0
        prefix = f"{self.label}: " if self.label else ""
        if not self.done:  # no chunk done yet: Ray's start, the actors', the first chunk's
            return (
                f"{prefix}0/{self.total} frames, starting: Ray, the actors, the first chunk "
                f"({format_duration(now - self.start)}{_slow_start(now - self.start, self.shared)})"
            )
        head = f"{prefix}{self.done}/{self.total} frames ({pct:.0f}%)"
        if self._all_done is not None:  # the segments are assembled (seconds, for many)
            return f"{head}, {self.fps(now):.1f} fps, finishing the output"
        if not self._measured(self.done, now):  # the start's seconds are no pace: an ETA
            # of 44 minutes for 18 s of work (a sweep)
            return f"{head}, measuring the pace"
        return f"{head}, {self.fps(now):.1f} fps, ETA {format_duration(self.eta_seconds(now))}"

    def close(self, message: str | None = None) -> None:
        """Print the final line (``message`` or the progress line); later calls do nothing."""
        self._close(message)


class ArchiveProgress(_Throttled):
    """Videos done/failed of ``total_videos``, frames finished and fps, for an archive.

    Call :meth:`video_done` once per video as its result comes in (``ok`` false for a
    failed one, ``skipped`` for one a resumed run did not redo), and optionally
    :meth:`update` per chunk for a live frame count between videos. The frame count shown
    is the larger of the two tallies, so calling both never counts a frame twice.
    ``total_frames``, when known, gives an ETA by frames; otherwise the ETA is by videos.
    """

    def __init__(
        self,
        total_videos: int,
        *,
        total_frames: int | None = None,
        label: str = "archive",
        enabled: bool = True,
        stream: TextIO | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.total_videos = total_videos
        self.total_frames = total_frames
        self.label = label
        self.ok = 0
        self.failed = 0
        self.skipped = 0
        self._chunk_frames = 0
        self._video_frames = 0
        self._planned = 0  # videos whose plan (frame count) came in
        self._planned_frames = 0
        self._unplanned_done = 0  # videos finished without a plan: skipped, failed to plan
        super().__init__(enabled=enabled, stream=stream, interval_s=interval_s)

    def video_planned(self, frames: int) -> None:
        """A video's plan came in: it has ``frames`` frames to do (an ETA by frames)."""
        self._planned += 1
        self._planned_frames += frames

    @property
    def videos_finished(self) -> int:
        """Videos with a result: done, skipped or failed."""
        return self.ok + self.failed

    @property
    def frames(self) -> int:
        """Frames finished so far."""
        return max(self._chunk_frames, self._video_frames)

    def update(self, frames: int) -> None:
        """Count ``frames`` more frames of chunks just finished (videos may be unfinished)."""
        self._count_first(self.frames, frames)
        self._chunk_frames += frames
        self._maybe_show()

    def video_done(
        self, ok: bool, frames: int = 0, *, skipped: bool = False, planned: bool = True
    ) -> None:
        """One video has its result: ``ok`` (done or ``skipped``) or failed; ``frames`` it
        produced (0 for a skipped or failed one); ``planned``: its plan came in
        (:meth:`video_planned`), which a skipped video's and one that failed to plan do
        not."""
        if ok:
            self.ok += 1
            self.skipped += int(skipped)
        else:
            self.failed += 1
        self._unplanned_done += int(not planned)
        self._video_frames += frames
        self._maybe_show(force=self.videos_finished >= self.total_videos)

    def video_result(self, status: str, frames_in: int, *, planned: bool) -> None:
        """:meth:`video_done` for a video's result (``done``, ``skipped``, ``failed``) of
        ``frames_in`` frames: a failed video's frames are not finished ones (they were
        counted so, "1 done, 2 failed, 138 frames" for 90 written; a sweep); those of its
        chunks that did finish came through :meth:`update`."""
        self.video_done(
            status != "failed",
            frames_in if status == "done" else 0,
            skipped=status == "skipped",
            planned=planned,
        )

    def fps(self, now: float | None = None) -> float:
        """Frames finished per second (:meth:`_pace`)."""
        return self._pace(self.frames, now or time.monotonic())

    def eta_seconds(self, now: float | None = None) -> float:
        """Seconds left: by frames when ``total_frames`` is known, or once videos' plans came
        in (those not in yet counted at the planned ones' mean), else by videos."""
        now = now or time.monotonic()
        total = self.total_frames
        if not total and self._planned:
            unseen = self.total_videos - self._planned - self._unplanned_done
            total = self._planned_frames + max(unseen, 0) * self._planned_frames / self._planned
        if total:
            fps = self.fps(now)
            left = max(total - self.frames, 0)
            return left / fps if fps > 0 else float("inf")
        finished = self.videos_finished - self.skipped
        left = max(self.total_videos - self.videos_finished, 0)
        if left == 0:
            return 0.0
        if finished <= 0:
            return float("inf")
        return left * (now - self.start) / finished

    def fraction(self) -> float | None:
        if not self.total_videos:
            return None
        return min(self.videos_finished / self.total_videos, 1.0)

    def line(self, now: float | None = None) -> str:
        now = now or time.monotonic()
        if not self.frames and not self.videos_finished:  # as `run`'s (it said "ETA ?")
            return (
                f"{self.label}: 0/{self.total_videos} videos, starting: Ray, the actors, the "
                f"first chunk ({format_duration(now - self.start)}"
                f"{_slow_start(now - self.start, self.shared)})"
            )
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return (
            f"{self.label}: {self.videos_finished}/{self.total_videos} videos "
            f"({self.ok - self.skipped} done{skipped}, {self.failed} failed), "
            f"{self.frames} frames, "
            f"{self.fps(now):.1f} fps, ETA {format_duration(self.eta_seconds(now))}"
        )

    def close(self, message: str | None = None) -> None:
        """Print the final line (``message`` or the progress line); later calls do nothing."""
        self._close(message)
