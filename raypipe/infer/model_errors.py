"""What a model says when it fails, as one typed line with something to try.

ONNX Runtime's run-time errors are long (an error code, the node, a C++ source path and
function signature, the failed internal check) and come as its own exception types.
:func:`model_failure` turns one into a :class:`~raypipe.errors.ModelError` whose message is
``the model failed on HxW (height x width) frames: <what it said, shortened>; <what to
try>``. When what it said is about shapes (a broadcast in an ``Add``, a ``Concat``, a
reshape) and padding the frames to a multiple of 8, 16, 32 or 64 px makes the model run
(tried on one frame, smallest multiple first, only when the first try failed), the hint
is ``try --pad-multiple M``. :func:`check_finite` makes NaN outputs an error too.

Pure functions: no session here (the caller passes a ``fits(multiple)`` probe).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator

import numpy as np

from raypipe.errors import ModelError, RaypipeError
from raypipe.infer.padding import padded_size

HINT_MULTIPLES: tuple[int, ...] = (8, 16, 32, 64)
"""Pad multiples tried, smallest first, for a hint after a shape failure."""

MESSAGE_CHARS = 240
"""What the model said is cut to this many characters."""

_SHAPE_WORDS = re.compile(r"broadcast|concat|shape|dimension|reshape|size", re.IGNORECASE)
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : "), ""),
    (
        re.compile(
            r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' "
            r"Status Message: "
        ),
        r"\1 node '\2': ",
    ),
    (re.compile(r"node '': "), "node: "),
    (re.compile(r"\S*\.(?:cc|h|cpp|cu):\d+ "), " "),  # C++ source file:line
    (re.compile(r"[\w:<>*&]+ onnxruntime::[\w:~<>]+\([^)]*\)(?: const)? "), " "),  # signature
    (re.compile(r"[^.:]*? was false\. "), " "),  # the failed internal check's expression
    (re.compile(r" +(?=[:.,])"), ""),
)


def shorten(message: str, limit: int = MESSAGE_CHARS) -> str:
    """ONNX Runtime's (or any) error message on one line, without codes, C++ source paths
    and signatures, cut to ``limit`` characters."""
    text = " ".join(message.split())
    for pattern, replacement in _REWRITES:
        text = " ".join(pattern.sub(replacement, text).split())
    text = text.rstrip(".")
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def is_shape_failure(message: str) -> bool:
    """Whether the model's complaint is about tensor shapes (broadcast, concat, reshape)."""
    return bool(_SHAPE_WORDS.search(message))


def pad_hint(
    height: int,
    width: int,
    fits: Callable[[int], bool],
    *,
    model_hw: tuple[int, int] | None = None,
) -> int | None:
    """The smallest of :data:`HINT_MULTIPLES` whose padding lets the model run, or None.

    ``model_hw`` is the size the model was given when it failed (the frame's, or already
    padded); multiples that give that same size again are not tried. ``fits(m)`` runs the
    model on one frame padded to multiples of ``m`` and says whether it ran.
    """
    tried: set[tuple[int, int]] = {model_hw or (height, width)}
    for multiple in HINT_MULTIPLES:
        size = (padded_size(height, multiple), padded_size(width, multiple))
        if size in tried:
            continue
        tried.add(size)
        if fits(multiple):
            return multiple
    return None


def model_failure(
    error: BaseException,
    height: int,
    width: int,
    *,
    fits: Callable[[int], bool] | None = None,
    model_hw: tuple[int, int] | None = None,
    windows: tuple[int, int] | None = None,
) -> ModelError:
    """``error`` (raised by the model on ``height`` x ``width`` frames, or on ``windows``
    (height, width) tile windows of them) as a :class:`ModelError` with what to try (see
    the module docstring)."""
    said = shorten(str(error) or type(error).__name__)
    where = f"the model failed on {height}x{width} (height x width) frames: {said}"
    seen, what = (height, width), "frames are"
    if windows is not None:
        where = (
            f"the model failed on {windows[0]}x{windows[1]} (height x width) tile windows "
            f"of {height}x{width} frames: {said}"
        )
        seen, what = windows, "tile windows are"
    if is_shape_failure(said):
        multiple = pad_hint(height, width, fits, model_hw=model_hw) if fits else None
        if multiple is not None:
            padded = f"{padded_size(seen[0], multiple)}x{padded_size(seen[1], multiple)}"
            return ModelError(
                f"{where}; try --pad-multiple {multiple} (Python and sidecars: "
                f"pad_multiple={multiple}): {what} padded to {padded} and the output "
                "is cropped back"
            )
        return ModelError(
            f"{where}; the model does not take frames of this size: declare its size rules "
            "(pad_multiple, resize with input_size, or tile) in its sidecar, or resize the video"
        )
    return ModelError(
        f"{where}; check that the model runs in ONNX Runtime on a (n, 3, {seen[0]}, {seen[1]}) "
        "batch, and rerun with --verbose for the traceback"
    )


@contextlib.contextmanager
def reported(
    hw: tuple[int, int],
    *,
    fits: Callable[[int], bool] | None = None,
    model_hw: tuple[int, int] | None = None,
    windows: tuple[int, int] | None = None,
) -> Iterator[None]:
    """Exceptions raised in the block while a model runs on frames of ``hw`` (height,
    width) px (in tile ``windows`` of that size, when tiled) become
    :func:`model_failure`'s :class:`ModelError`; raypipe's own typed errors pass as they
    are."""
    try:
        yield
    except RaypipeError:
        raise
    except Exception as e:  # ONNX Runtime raises its own pybind exception types
        raise model_failure(e, *hw, fits=fits, model_hw=model_hw, windows=windows) from e


def check_finite(name: str, values: np.ndarray, height: int, width: int) -> None:
    """Raise :class:`ModelError` when a float output holds NaN (one reduction when it does
    not: its minimum, which NaN propagates to, is finite; a minimum is cheaper than a sum)."""
    if values.dtype.kind != "f" or values.size == 0 or np.isfinite(values.min()):
        return
    if np.isnan(values).any():
        raise ModelError(
            f"the model's output {name!r} holds NaN on {height}x{width} (height x width) frames; "
            "check its input scaling (scale, mean, std in its sidecar) and, with "
            "--precision fp16, whether it overflows in FP16 (try --precision fp32)"
        )
