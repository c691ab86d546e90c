"""Inference through ONNX Runtime's IO binding: persistent device buffers per input shape,
so a batch costs one host-to-device and one device-to-host copy."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from raypipe.errors import ConfigError
from raypipe.infer.session import GPU_PROVIDERS, granted_providers, import_onnxruntime
from raypipe.infer.trt.options import int_at_least

if TYPE_CHECKING:
    import onnxruntime


@dataclass
class _Slot:
    binding: Any  # onnxruntime.IOBinding
    input: Any  # onnxruntime.OrtValue on the device
    output: Any = None  # onnxruntime.OrtValue on the device, once the output shape is known


class IOBindingRunner:
    """Runs one input -> one output through ``session`` with persistent bound buffers.

    ``bind="auto"`` binds device (``cuda``) memory when the session's first granted provider
    is TensorRT or CUDA and otherwise calls ``session.run`` as it is. ``"cuda"`` or ``"cpu"``
    force binding on that device (``"cpu"`` exercises the same code on any machine).

    Per input shape and dtype the runner keeps one input OrtValue (written with
    ``update_inplace``, one host-to-device copy) and, after the first run has told it the
    output shape, one output OrtValue ORT writes into; only ``max_shapes`` shapes are kept
    (least recently used dropped). A video has one frame size and at most two batch sizes
    (full, and its last short batch). Calls are serialised by a lock.
    """

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        input_name: str,
        output_name: str,
        *,
        bind: str = "auto",
        device_id: int = 0,
        max_shapes: int = 4,
    ) -> None:
        if bind not in ("auto", "cuda", "cpu", "off"):
            raise ConfigError(f"bind must be 'auto', 'cuda', 'cpu' or 'off', got {bind!r}")
        if bind == "auto":
            bind = "cuda" if granted_providers(session)[0] in GPU_PROVIDERS else "off"
        self.session = session
        self.input_name = input_name
        self.output_name = output_name
        self.device: str | None = None if bind == "off" else bind
        self.device_id = int_at_least("device_id", device_id, 0)
        self.max_shapes = int_at_least("max_shapes", max_shapes, 1)
        self._slots: OrderedDict[tuple[tuple[int, ...], str], _Slot] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for ``batch`` as a new host array (never a view of a buffer)."""
        if self.device is None:
            (out,) = self.session.run([self.output_name], {self.input_name: batch})
            return np.asarray(out)
        batch = np.ascontiguousarray(batch)
        with self._lock:
            slot = self._slot(batch)
            self.session.run_with_iobinding(slot.binding)
            slot.binding.synchronize_outputs()
            (out,) = slot.binding.copy_outputs_to_cpu()
            if slot.output is None:
                # First run for this shape: ORT allocated the output; from now on it writes
                # into a buffer of that shape, bound once.
                ort = import_onnxruntime()
                slot.output = ort.OrtValue.ortvalue_from_shape_and_type(
                    out.shape, out.dtype, self.device, self.device_id
                )
                slot.binding.bind_ortvalue_output(self.output_name, slot.output)
            # On the CPU the array may view the bound buffer, which the next run overwrites.
            return np.array(out, copy=True) if self.device == "cpu" else np.asarray(out)

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
        binding.bind_output(self.output_name, self.device, self.device_id)
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
