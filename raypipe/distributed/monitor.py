"""Progress of a run: frames done of total, fps and ETA, on one line of stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints ``label: done/total frames, fps, ETA`` at most every ``interval_s`` seconds."""

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
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.done = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, frames: int) -> None:
        self.done += frames
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.interval_s or self.done >= self.total):
            self._last = now
            self._print(self.line(now), final=False)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        fps = self.done / elapsed
        left = (self.total - self.done) / fps if fps > 0 else float("inf")
        eta = f"{left:.0f}s" if left != float("inf") else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.label}: {self.done}/{self.total} frames ({pct:.0f}%), {fps:.1f} fps, ETA {eta}"
        )

    def close(self, message: str | None = None) -> None:
        if self.enabled:
            self._print(message or self.line(), final=True)

    def _print(self, text: str, *, final: bool) -> None:
        if self._tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
