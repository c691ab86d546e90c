"""What the inference actors run, as data: the loaded model (or processor) and the job.

:class:`LoadedModel` is the model as the driver checked it (bytes and spec, or a processor
reference) and :class:`ActorJob` everything an inference actor needs, passed to it as one
object rather than a dozen keywords unpacked from the configs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raypipe.config import ModelConfig
from raypipe.distributed.cluster import ActorPlan
from raypipe.infer.processor_refs import ProcessorRef
from raypipe.infer.sidecar import ModelSpec
from raypipe.infer.temporal import NONE, Temporal
from raypipe.media.yuv import YuvInput

if TYPE_CHECKING:
    from raypipe.infer.tiling import FrameGeometry  # cv2: imported where a model is


@dataclass(frozen=True)
class LoadedModel:
    """The model as the driver checked it: bytes, spec, and whether it outputs tensors; or a
    user processor (``processor`` set, no bytes)."""

    data: bytes
    spec: ModelSpec | None
    tensor: bool
    processor: ProcessorRef | None = None
    geometry: FrameGeometry | None = None  # how frames reach an image model (checked at planning)

    @property
    def temporal(self) -> Temporal:
        """What the model or processor needs around each frame (chunks are planned with it)."""
        if self.processor is not None:
            return self.processor.temporal
        return self.spec.temporal if self.spec is not None else NONE

    @property
    def output_scale(self) -> float | None:
        """The side of the model's output frames over its input's: 0 for an analysis model
        (it outputs tables), ``None`` where not known: a processor, a temporal model, a
        simulated one, or an image model whose graph does not give its scale
        (:func:`~raypipe.infer.shapes.image_output_scale`, ONNX shape inference)."""
        if self.processor is not None or self.spec is None or self.temporal.active:
            return None
        if self.tensor:
            return 0.0
        from raypipe.infer.shapes import image_output_scale

        return image_output_scale(self.data, self.spec)


@dataclass(frozen=True, kw_only=True)
class ActorJob:
    """What one inference actor runs and how.

    ``warmup_hw``: (height, width) px of one warm-up batch at start (None: none).
    ``warmup_frames``: the most frames a chunk has, when known (0: not known); an image
    model's actor touches the memory of a chunk's output that long during its warm-up.
    ``warmup_yuv``: the first video's frames come as YUV (the YUV hand-off): the actor
    warms the model that takes them instead.
    """

    model: LoadedModel
    config: ModelConfig
    plan: ActorPlan
    warmup_hw: tuple[int, int] | None = None
    warmup_frames: int = 0
    warmup_yuv: YuvInput | None = None

    def __post_init__(self) -> None:
        # The processor travels in ``model.processor``; the config keeps only its settings.
        if self.config.processor is not None:
            object.__setattr__(self, "config", dataclasses.replace(self.config, processor=None))
