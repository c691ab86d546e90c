"""The arithmetic of a source clock's jumps (raypipe.media.jumps); the files that have them
are in test_fidelity.py, test_captions.py and distributed/test_safety_checks_ray.py, and
here one whose clocks overlap by less than a jump."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from raypipe.errors import UnsupportedVideoError
from raypipe.media import probe
from raypipe.media.jumps import (
    closed,
    describe,
    find_jumps,
    from_text,
    shift_seconds,
    source_time,
    to_text,
)

TB = Fraction(1, 90_000)
STEP = 3600  # 25 fps


def _frames(*runs: tuple[int, int]) -> list[int]:
    """Frame times: ``n`` frames from ``start`` seconds for each ``(start, n)``."""
    return [start * 90_000 + i * STEP for start, n in runs for i in range(n)]


def test_gaps_over_ten_seconds_close_to_one_frame_step_and_the_rest_stay() -> None:
    pts = _frames((1, 10), (3600, 10), (7300, 5))  # two jumps
    pts.insert(10, pts[9] + 9 * 90_000)  # a 9 s pause of a variable rate: not a jump
    jumps = find_jumps(pts, TB)
    assert len(jumps) == 2
    out = [closed(p, jumps) for p in pts]
    steps = [b - a for a, b in zip(out, out[1:])]
    assert steps.count(STEP) == len(steps) - 1 and steps[9] == 9 * 90_000
    assert out[11] - out[10] == STEP  # the first frame after a jump follows the last before
    assert [source_time(c, jumps) for c in out] == pts  # every frame's own source time
    assert find_jumps(_frames((1, 50)), TB) == () and find_jumps([5], TB) == ()


def test_other_streams_move_by_the_middle_of_each_jump() -> None:
    jumps = find_jumps(_frames((1, 10), (3601, 10)), TB)
    before, after, moved = jumps[0]
    middle = Fraction(before + after, 2) * TB
    assert shift_seconds(middle - Fraction(1, 1000), jumps, TB) == 0  # sound before the join
    assert shift_seconds(middle, jumps, TB) == moved * TB
    assert shift_seconds(Fraction(after, 1) * TB - 1, jumps, TB) == moved * TB  # sound ahead


def test_jumps_travel_as_text_and_say_what_they_leave_out() -> None:
    jumps = find_jumps(_frames((1, 10), (3601, 10)), TB)
    assert from_text(to_text(jumps)) == jumps and from_text(to_text(())) == ()
    (line,) = describe(jumps, TB)
    assert line.startswith("the 3599.600s jump of the source's clock from 1.360s to 3601.000s")
    assert line.endswith("the video goes on at 1.400s")


def test_recordings_joined_with_overlapping_clocks_are_refused_with_where_and_what_to_do(
    tmp_path: Path,
) -> None:
    """Two MPEG-TS recordings joined (``cat a.ts b.ts``) whose clocks overlap by less than a
    jump back (:data:`raypipe.media.jumps.BACK_SECONDS`) give frames the time of others.
    The refusal said "duplicate video timestamps ... remux it with fresh timestamps", with
    no place, and the remux it named for larger jumps does not mend it; it now says how
    many, where, and a re-encode that does (a helper's sweep of real-world inputs)."""
    parts = []
    for name, offset in (("a.ts", "0"), ("b.ts", "1")):
        parts.append(tmp_path / name)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i",
             "testsrc2=size=96x64:rate=25:duration=1", "-c:v", "libx264", "-g", "25",
             "-pix_fmt", "yuv420p", "-output_ts_offset", offset, str(parts[-1])],
            check=True, timeout=60,
        )  # fmt: skip
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with pytest.raises(UnsupportedVideoError) as refused:
        probe(str(joined))
    assert (
        "has 2 video frame(s) with the time of another frame, the first 0.920s after its "
        "start (recordings joined whose clocks overlap?)"
    ) in str(refused.value)
    mended = tmp_path / "mended.mkv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(joined), "-c:a", "copy", str(mended)],
        check=True, timeout=60,
    )  # fmt: skip
    assert 48 <= probe(str(mended)).n_frames <= 50  # a frame or two dropped to fit one clock


def test_frames_sharing_a_time_for_other_reasons_are_not_called_joined_recordings(
    tmp_path: Path,
) -> None:
    """An MP4 edit list's second edit starting inside a group of pictures (FFmpeg 5.1 reads
    two frames at one time there) and 2000 fps in Matroska's milliseconds were refused as
    "recordings joined whose clocks overlap?" (a sweep)."""
    from raypipe.testing.bad_inputs import write_edit_list

    base = tmp_path / "base.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc=s=96x64:r=25",
         "-t", "4", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-g", "50", "-bf", "3",
         str(base)],
        check=True, timeout=60,
    )  # fmt: skip
    edited = tmp_path / "edited.mp4"
    write_edit_list(
        str(edited), str(base), [(Fraction(1), Fraction(1, 2)), (Fraction(1), Fraction(13, 5))]
    )
    with pytest.raises(UnsupportedVideoError, match=r"\(an edit list whose edit starts inside "
                       r"a group of pictures, as FFmpeg reads it\?\)"):  # fmt: skip
        probe(str(edited))
    fast = tmp_path / "fast.mkv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=s=96x64:r=2000",
         "-frames:v", "20", "-c:v", "libx264", str(fast)],
        check=True, timeout=60,
    )  # fmt: skip
    with pytest.raises(UnsupportedVideoError, match=r"\(frames closer together than the "
                       r"container's clock, 1/1000 s a tick\?\)"):  # fmt: skip
        probe(str(fast))
