"""User processors: a few lines of Python between models, run like a model.

A processor is a class a user subclasses::

    class Redact(raypipe.Processor):
        def setup(self, ctx):            # once per actor, on the actor's device
            self.det = ctx.session("models/det.onnx")   # an onnxruntime.InferenceSession
        def __call__(self, frames):      # (n, H, W, 3) uint8 RGB, display order, upright
            return frames_out            # (n, h, w, 3) uint8: a video comes out

Frames are uint8, or uint16 (16 bits per channel) for sources deeper than 8 bits, as the
decoder gives them; image outputs are the same dtype as the frames given.

``output = "tensor"`` on the class says ``__call__`` returns a dict of arrays whose first
dimension is ``n`` instead: a Parquet table comes out, laid out as for analysis models.
``version`` (a string) is part of :func:`~raypipe.infer.processor_refs.processor_identity`.

Temporal processors declare what they need around each frame as class attributes
(:mod:`raypipe.infer.temporal`; one of the three, image output only):

- ``window = (B, A)``: each call gets its frames with B frames before and A after
  (``B + m + A`` frames, the first/last frame repeated at the video's edges) and returns
  the ``m`` middle frames' results;
- ``warmup_frames = K``: the processor keeps a state across calls. Before each chunk raypipe
  calls ``reset()`` (start from scratch), then gives it K frames before the chunk and the
  chunk's frames in display order, and drops the K warm-up results;
- ``interpolate = 2``: each call gets ``m + 1`` consecutive frames and returns the ``m``
  frames halfway between neighbours; raypipe puts them between the source frames (after the
  video's last frame that frame is repeated), so twice the frames come out.

:class:`ProcessorContext` is ``ctx``: :meth:`ProcessorContext.session` builds sessions with
the actor's own factory (:mod:`raypipe.infer.factory`: providers TensorRT -> CUDA -> CPU,
engine cache, precision, the actor's GPU, the silent-fallback check), cached per actor;
``ctx.device`` (``cuda:0`` or ``cpu``) and ``ctx.gpu_ids`` (Ray's ids of the actor's GPUs)
say where it runs. :class:`ProcessorRunner` is what the actor calls: frames in batches of
``batch_size``, outputs checked, and any exception of ``setup`` or ``__call__`` turned
into a :class:`~raypipe.errors.ProcessorError` carrying the processor's own message.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from raypipe.errors import ModelNotFoundError, ProcessorError, RaypipeError
from raypipe.infer.factory import SessionSettings, session_record
from raypipe.infer.model_errors import shorten
from raypipe.infer.output_kind import PROCESSOR_VARYING_ADVICE, TABLE_COLUMNS, column_problem
from raypipe.infer.processor_base import Processor as Processor  # the public name
from raypipe.infer.processor_refs import ProcessorRef, resolve_target
from raypipe.infer.session import create_session
from raypipe.infer.sidecar import resolve_model
from raypipe.infer.temporal import Temporal, edge_padded, interleave, processor_temporal


class ProcessorContext:
    """What a processor's ``setup`` gets: sessions from the actor's factory, its device."""

    def __init__(self, settings: SessionSettings, *, gpu_ids: list[str] | None = None) -> None:
        self.settings = settings
        self.gpu_ids: list[str] = list(gpu_ids or [])  # Ray's ids of the actor's GPUs
        self.device: str = settings.device_name  # "cuda:0" (the actor's GPU) or "cpu"
        self.batch_size: int = settings.batch_size  # frames per __call__, at most
        self.records: list[dict[str, Any]] = []  # what each session was built with
        self._sessions: dict[tuple[Any, ...], Any] = {}
        self.base_dir = ""  # the driver's working directory (set by ProcessorRunner)

    def session(
        self,
        model: str | bytes,
        *,
        input_size: tuple[int, int] | None = None,
        layout: str = "NCHW",
        batch_size: int | None = None,
        precision: str | None = None,
    ) -> Any:
        """An ``onnxruntime.InferenceSession`` for ``model`` (a path or fsspec URL of an
        ``.onnx`` file, ``builtin:NAME``, or the model's bytes), built once per actor.

        ``input_size`` (height, width) px and ``batch_size`` (default: the run's) size the
        TensorRT shape profile on a GPU; without ``input_size`` a GPU actor uses CUDA.
        ``precision`` overrides the run's (``fp16``/``fp32``).
        """
        if isinstance(model, bytes):
            data, label = model, f"<{len(model)} bytes>"
        else:
            data, label = resolve_model(self._where(model))[0], model
        digest = hashlib.sha256(data).hexdigest()
        key = (digest, input_size, layout, batch_size, precision)
        if key not in self._sessions:
            setup = self.settings.provider_setup(
                data,
                input_size=input_size,
                layout=layout,
                batch_size=batch_size,
                precision=precision,
            )
            session = create_session(
                data,
                device=self.settings.device,
                intra_op_threads=self.settings.intra_op_threads,
                providers=setup.providers,
                provider_options=setup.provider_options,
            )
            self._sessions[key] = session
            self.records.append(session_record(label, setup, session, self.settings.device))
        return self._sessions[key]

    def _where(self, model: str) -> str:
        """A relative model path as the driver meant it: from its working directory, where
        the actor's own (a workstation's ``ray start --head``'s) has no such file. Found in
        neither, the error says where it looked."""
        if (
            not model.endswith(".onnx")
            or "://" in model
            or os.path.isabs(model)
            or os.path.exists(model)
        ):
            return model
        there = os.path.join(self.base_dir, model) if self.base_dir else ""
        if there and os.path.exists(there):
            return there
        where = f"{os.getcwd()}" + (f" or the driver's {self.base_dir}" if self.base_dir else "")
        raise ModelNotFoundError(
            f"model file '{model}' does not exist (a relative path: looked in {where} on "
            "this actor's node); pass an absolute path, or a URL all nodes can read"
        )

    @property
    def providers(self) -> list[str]:
        """The providers the sessions were granted, best first (no session: ``[]``)."""
        seen: list[str] = []
        for record in self.records:
            for provider in record["granted"][:1]:
                if provider not in seen:
                    seen.append(provider)
        return seen


def processor_error(name: str, stage: str, e: BaseException) -> ProcessorError:
    """``e``, raised by processor ``name`` in ``stage``, as a one-line ProcessorError."""
    said = shorten(str(e)) or "(no message)"
    return ProcessorError(
        f"processor {name}.{stage} raised {type(e).__name__}: {said}; fix the processor "
        "(its traceback: --verbose, or in Python this error's cause)"
    )


class ProcessorRunner:
    """A user processor as an actor runs it (built in the actor: ``setup`` runs here)."""

    def __init__(self, ref: ProcessorRef, ctx: ProcessorContext) -> None:
        target = resolve_target(ref)
        ctx.base_dir = ref.base_dir
        self.ctx = ctx
        self.output = ref.output
        self.name = (target if isinstance(target, type) else type(target)).__qualname__
        try:
            self.processor = target() if isinstance(target, type) else target
        except Exception as e:
            raise processor_error(self.name, "__init__", e) from e
        try:
            self.processor.setup(ctx)
        except RaypipeError:
            raise  # ctx.session's own typed errors (model not found, no GPU granted)
        except Exception as e:
            raise processor_error(self.name, "setup", e) from e
        # output (height, width) per input (height, width): one video's frames keep one size
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}
        cls = target if isinstance(target, type) else type(target)
        self.temporal: Temporal = processor_temporal(cls, self.name)

    @property
    def providers(self) -> list[str]:
        return self.ctx.providers or ["Processor"]

    def run(
        self, frames: np.ndarray, *, before: int = 0, after: int = 0
    ) -> np.ndarray | dict[str, np.ndarray]:
        """``frames`` through the processor in batches of ``ctx.batch_size``, checked.

        A temporal processor's ``frames`` hold ``before`` context frames, the chunk's and
        ``after`` more (see the module docstring); the result is the chunk's frames (twice
        as many for ``interpolate = 2``)."""
        if self.temporal.active:
            return self._run_temporal(frames, before, after)
        if before or after:
            raise ValueError(f"{self.name} takes no context frames, got {before}/{after}")
        n = len(frames)
        parts = []
        for start in range(0, n, self.ctx.batch_size):
            batch = frames[start : start + self.ctx.batch_size]
            parts.append(self._call(batch, len(batch)))
        if self.output == "image":
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        for key in parts[0]:
            problem = column_problem(key, [p[key] for p in parts], PROCESSOR_VARYING_ADVICE)
            if problem:
                raise ProcessorError(f"processor {self.name}: {problem}")
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _call(self, batch: np.ndarray, n: int) -> Any:
        try:
            result = self.processor(batch)
        except Exception as e:
            raise processor_error(self.name, "__call__", e) from e
        return self._checked(result, batch, n)

    def _run_temporal(self, frames: np.ndarray, before: int, after: int) -> np.ndarray:
        n, step = len(frames) - before - after, self.ctx.batch_size
        if self.temporal.recurrent:
            try:
                self.processor.reset()
            except Exception as e:
                raise processor_error(self.name, "reset", e) from e
            batches = [frames[i : i + step] for i in range(0, len(frames), step)]
            return np.concatenate([self._call(b, len(b)) for b in batches])[before:]
        want_before, want_after = self.temporal.context
        padded = edge_padded(
            frames, before=before, after=after, want_before=want_before, want_after=want_after
        )
        extra = want_before + want_after
        parts = []
        for start in range(0, n, step):
            count = min(step, n - start)
            parts.append(self._call(padded[start : start + count + extra], count))
        out = np.concatenate(parts)
        if self.temporal.interpolate == 1:
            return out
        sources = frames[before : before + n]
        if out.shape[1:] != sources.shape[1:]:  # interleave's ValueError named no processor
            raise ProcessorError(
                f"processor {self.name} returned in-between frames of {out.shape[1]}x"
                f"{out.shape[2]} px for source frames of {sources.shape[1]}x"
                f"{sources.shape[2]}; an interpolating processor (interpolate = 2) keeps the "
                "frame size: the video holds both"
            )
        if after == 0:  # the video's last frame: repeated at its own midpoint
            out[-1] = sources[-1]
        return interleave(sources, out)

    def warmup(self, height: int, width: int, frames: int = 0) -> None:
        """Nothing: user code is never called on made-up frames (a processor may keep state
        across calls); ``setup`` is the place to warm up (``ctx.session(..., input_size=)``
        builds or loads the TensorRT engine there)."""

    def _checked(self, result: Any, batch: np.ndarray, n: int) -> Any:
        """``result`` of ``batch`` checked: ``n`` frames (or entries) of the batch's dtype."""
        what = f"processor {self.name} returned"
        given = f"{n} {batch.dtype} frames"
        if n != len(batch):  # a window: the n middle frames' results are expected
            given = f"{len(batch)} {batch.dtype} frames ({n} and their window's context)"
        if self.output == "image":
            if isinstance(result, dict):
                raise ProcessorError(
                    f"{what} a dict for {n} frames; set output = 'tensor' on the class to "
                    "write a table, or return frames (n, h, w, 3) uint8"
                )
            got = _describe(result)
            if not (
                isinstance(result, np.ndarray)
                and result.dtype == batch.dtype
                and result.ndim == 4
                and result.shape[0] == n
                and result.shape[3] == 3
            ):
                raise ProcessorError(
                    f"{what} {got} for {given}; expected a {batch.dtype} array "
                    f"(n, h, w, 3) with n = {n} (or output = 'tensor' on the class and a dict "
                    "of arrays)"
                )
            size = self._sizes.setdefault(batch.shape[1:3], result.shape[1:3])
            if size != result.shape[1:3]:
                raise ProcessorError(
                    f"{what} frames of {result.shape[1]}x{result.shape[2]} px after frames of "
                    f"{size[0]}x{size[1]} for the same input size; a video's frames must keep "
                    "one size"
                )
            return result
        if not isinstance(result, dict) or not result:
            raise ProcessorError(
                f"{what} {_describe(result)}; output = 'tensor' expects a non-empty dict of "
                "arrays whose first dimension is the number of frames"
            )
        out = {}
        for key, value in result.items():
            try:
                array = np.asarray(value)
            except ValueError as e:  # "setting an array element with a sequence": ragged
                raise ProcessorError(
                    f"{what} {key!r} as arrays of different shapes ({shorten(str(e))}); "
                    + PROCESSOR_VARYING_ADVICE
                ) from None
            if not isinstance(key, str) or key in TABLE_COLUMNS:
                raise ProcessorError(
                    f"{what} an output named {key!r}; names must be strings other than "
                    f"{', '.join(TABLE_COLUMNS)}"
                )
            if array.ndim == 0 or array.shape[0] != n:
                raise ProcessorError(
                    f"{what} {key!r} of shape {array.shape} for {n} frames; each output needs "
                    f"one entry per frame along its first dimension ({n})"
                )
            out[key] = array
        return out


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"a {type(value).__name__}"


def apply_processor(
    processor: Any, frames: np.ndarray, *, settings: SessionSettings | None = None
) -> np.ndarray | dict[str, np.ndarray]:
    """``processor`` (a class, instance or target string) on ``frames`` in this process, as an
    actor runs it: ``setup`` once, then batches of ``settings.batch_size`` (default 8)."""
    from raypipe.infer.processor_refs import processor_ref

    ctx = ProcessorContext(settings or SessionSettings(device="cpu"))
    return ProcessorRunner(processor_ref(processor), ctx).run(frames)
