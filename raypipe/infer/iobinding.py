"""Inference through ONNX Runtime's IO binding: persistent device buffers per input shape,
so a batch costs one host-to-device and one device-to-host copy (per output)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from raypipe.errors import ConfigError
from raypipe.infer.session import import_onnxruntime
from raypipe.infer.trt.options import int_at_least

if TYPE_CHECKING:
    import onnxruntime


@dataclass
class _Slot:
    binding: Any  # onnxruntime.IOBinding
    input: Any  # onnxruntime.OrtValue on the device
    # onnxruntime.OrtValue per output on the device, once the output shapes are known
    outputs: list[Any] = field(default_factory=list)

    @property
    def output(self) -> Any:
        """The first output's bound OrtValue (None before the first run)."""
        return self.outputs[0] if self.outputs else None


class IOBindingRunner:
    """Runs one input -> one output (or several: ``output_name`` a sequence of names)
    through ``session``: plainly (``bind="auto"``/``"off"``) or with persistent bound
    buffers (``"cuda"``, ``"cpu"``).

    ``bind="auto"`` calls ``session.run`` as it is, on every provider: measured on an H200
    (CUDA EP, 1080p x2 superres, batches of 4, three alternated rounds), bound buffers were
    slower, 72-75 against 47-51 ms/frame in FP32 and 52-55 against 28-30 in FP16 NHWC. The
    bound output's copy to the host runs into pageable memory, where ``session.run`` copies
    through ORT's pinned staging buffer; binding the outputs to host arrays instead was as
    slow (benchmarks/README.md, GPU section). ``"cuda"`` or ``"cpu"`` force binding on that
    device (``"cpu"`` exercises the same code on any machine).

    Per input shape and dtype the runner keeps one input OrtValue (written with
    ``update_inplace``, one host-to-device copy) and, after the first run has told it the
    output shapes, one OrtValue per output ORT writes into; only ``max_shapes`` shapes are kept
    (least recently used dropped). A video has one frame size and at most two batch sizes
    (full, and its last short batch). Calls are serialised by a lock.
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        input_name: str,
        output_name: str | Sequence[str],
        *,
        bind: str = "auto",
        device_id: int = 0,
        max_shapes: int = 4,
    ) -> None:
        if bind not in ("auto", "cuda", "cpu", "off"):
            raise ConfigError(f"bind must be 'auto', 'cuda', 'cpu' or 'off', got {bind!r}")
        if bind == "auto":
            bind = "off"  # measured faster on a GPU too: see the class docstring
        self.session = session
        self.input_name = input_name
        self.output_names = [output_name] if isinstance(output_name, str) else list(output_name)
        self.output_name = self.output_names[0]
        self.device: str | None = None if bind == "off" else bind
        self.device_id = int_at_least("device_id", device_id, 0)
        self.max_shapes = int_at_least("max_shapes", max_shapes, 1)
        self._slots: OrderedDict[tuple[tuple[int, ...], str], _Slot] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The (first) output for ``batch`` as a new host array (never a view of a buffer)."""
        return self.run_all(batch)[0]

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output for ``batch``, in ``output_name``'s order, as new host arrays."""
        if self.device is None:
            return [
                np.asarray(y) for y in self.session.run(self.output_names, {self.input_name: batch})
            ]
        batch = np.ascontiguousarray(batch)
        with self._lock:
            slot = self._slot(batch)
            self.session.run_with_iobinding(slot.binding)
            slot.binding.synchronize_outputs()
            outs = slot.binding.copy_outputs_to_cpu()
            if not slot.outputs:
                # First run for this shape: ORT allocated the outputs; from now on it writes
                # into buffers of these shapes, bound once.
                ort = import_onnxruntime()
                for name, out in zip(self.output_names, outs):
                    value = ort.OrtValue.ortvalue_from_shape_and_type(
                        out.shape, out.dtype, self.device, self.device_id
                    )
                    slot.binding.bind_ortvalue_output(name, value)
                    slot.outputs.append(value)
            # On the CPU an array may view a bound buffer, which the next run overwrites.
            copy = self.device == "cpu"
            return [np.array(out, copy=True) if copy else np.asarray(out) for out in outs]

    def _slot(self, batch: np.ndarray) -> _Slot:
        key = (tuple(batch.shape), batch.dtype.str)
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
            slot.input.update_inplace(batch)
            return slot
        ort = import_onnxruntime()
        assert self.device is not None
        # On "cpu" an OrtValue from numpy would wrap the caller's array: copy it.
        source = batch.copy() if self.device == "cpu" else batch
        value = ort.OrtValue.ortvalue_from_numpy(source, self.device, self.device_id)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, value)
        for name in self.output_names:
            binding.bind_output(name, self.device, self.device_id)
        slot = _Slot(binding=binding, input=value)
        self._slots[key] = slot
        while len(self._slots) > self.max_shapes:
            self._slots.popitem(last=False)
        return slot

    @property
    def shapes(self) -> list[tuple[tuple[int, ...], str]]:
        """The (shape, dtype) keys of the buffers held, least recently used first."""
        return list(self._slots)


def run_with_iobinding(
    session: onnxruntime.InferenceSession, input_name: str, output_name: str, batch: np.ndarray
) -> np.ndarray:
    """``session``'s output for ``batch``: bound device buffers on CUDA/TensorRT, else ``run``.

    Keeps one :class:`IOBindingRunner` per session and tensor pair (on the session object),
    so repeated calls reuse the same device buffers.
    """
    runners: dict[tuple[str, str], IOBindingRunner] = session.__dict__.setdefault(
        "_raypipe_iobinding_runners", {}
    )
    runner = runners.get((input_name, output_name))
    if runner is None:
        runner = runners[(input_name, output_name)] = IOBindingRunner(
            session, input_name, output_name
        )
    return runner.run(batch)


class HostRunner:
    """Runs one input -> its outputs through a CPU ``session`` without touching new memory
    per batch: the input is bound where it lies (no copy) and, per input shape and dtype,
    ORT writes each output into a buffer kept for that shape (the first run's own outputs,
    kept; ``max_shapes`` shapes kept, least recently used dropped). A batch shorter than a
    kept one of the same frame shape (a chunk's last batch) is written into the first frames
    of that one's buffers: the memory a run touches for the first time costs the kernel's
    page faults (at 4K, 8 frames of float32 are 800 MB).

    :meth:`run_all` returns views of those buffers, valid until the next run: the caller
    reads them first (post-processing copies the frames out). A model whose outputs change
    shape from run to run at one input shape gets new arrays from ORT for that shape.
    Not for sharing between threads: keep one per thread.
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        input_name: str,
        output_names: Sequence[str],
        *,
        max_shapes: int = 4,
    ) -> None:
        self.session = session
        self.input_name = input_name
        self.output_names = list(output_names)
        self.max_shapes = int_at_least("max_shapes", max_shapes, 1)
        # per (shape, dtype): a binding and its output buffers, or None where ORT allocates
        self._slots: OrderedDict[tuple[tuple[int, ...], str], tuple[Any, list[np.ndarray]] | None]
        self._slots = OrderedDict()

    def run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output for ``batch``, in ``output_names``' order (views: see the class)."""
        batch = np.ascontiguousarray(batch)
        key = (tuple(batch.shape), batch.dtype.str)
        if key not in self._slots:
            within = self._within_larger(batch)
            if within is not None:
                self._keep(key, within)
                return within[1]
            outs = self._allocated(batch)  # the first run of a shape tells the output shapes
            self._keep(key, self._bind(outs))
            return outs
        self._slots.move_to_end(key)
        slot = self._slots[key]
        if slot is None:
            return self._allocated(batch)
        binding, buffers = slot
        binding.bind_cpu_input(self.input_name, batch)
        try:
            self.session.run_with_iobinding(binding)
        except Exception:  # noqa: BLE001 - outputs of another shape: ORT allocates them
            self._slots[key] = None
            return self._allocated(batch)
        return buffers

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The first output for ``batch`` (a view: see the class)."""
        return self.run_all(batch)[0]

    def _allocated(self, batch: np.ndarray) -> list[np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: batch})
        return [np.asarray(y) for y in outs]

    def _keep(self, key: tuple[tuple[int, ...], str], slot: tuple[Any, list[np.ndarray]]) -> None:
        self._slots[key] = slot
        while len(self._slots) > self.max_shapes:
            self._slots.popitem(last=False)

    def _bind(self, outs: list[np.ndarray]) -> tuple[Any, list[np.ndarray]]:
        """A binding whose outputs ORT writes into ``outs`` (the first run's arrays, kept:
        their memory is already touched) or, where ORT gave a read-only array, a copy."""
        ort = import_onnxruntime()
        binding = self.session.io_binding()
        buffers = [y if y.flags.writeable else np.empty_like(y) for y in outs]
        for name, buffer in zip(self.output_names, buffers):
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(buffer))
        return binding, buffers

    def _within_larger(self, batch: np.ndarray) -> tuple[Any, list[np.ndarray]] | None:
        """A slot for ``batch`` whose outputs are the first frames of a larger batch's kept
        buffers (a chunk's short last batch), run; None when no kept batch of the same frame
        shape is larger, or the outputs do not have one entry per frame."""
        n, rest = batch.shape[0], tuple(batch.shape[1:])
        for (shape, dtype), slot in reversed(self._slots.items()):
            if slot is None or dtype != batch.dtype.str or shape[1:] != rest or shape[0] <= n:
                continue
            if any(b.ndim == 0 or b.shape[0] != shape[0] for b in slot[1]):
                continue
            binding, views = self._bind([b[:n] for b in slot[1]])
            binding.bind_cpu_input(self.input_name, batch)
            try:
                self.session.run_with_iobinding(binding)
            except Exception:  # noqa: BLE001 - other output shapes: ORT allocates them
                return None
            return binding, views
        return None
