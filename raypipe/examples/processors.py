"""Example processors: the model chains real video work needs, in a few lines each.

- :class:`RegionChain`, the FaceFusion pattern: a detector finds regions in each frame, a
  second model runs on every region crop at its own fixed input size (crops resized to it,
  all crops of a batch in one call), and its output is resized back and pasted in place.
- :class:`Redact`: a detector finds regions, which are blurred out (a strong Gaussian).
- :class:`RegionScores`, a table-writing processor (``output = "tensor"``): the number of
  regions per frame and the detector's score map, one Parquet row per frame.

Their models are built in code (:mod:`raypipe.examples.models`): the detector scores
``CELL`` x ``CELL`` px cells by brightness and a region is a group of bright cells. Set
``detector_model`` / ``region_model`` (class attributes: a path, URL or ``builtin:NAME``)
in a subclass to run your own ONNX models instead.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from raypipe.examples import models
from raypipe.infer.processors import Processor, ProcessorContext


class _Detecting(Processor):
    """Shared by the examples: a detector session and the boxes it finds."""

    detector_model: str = ""  # "" = the built-in example detector
    threshold: float = 0.75  # a cell is part of a region when its score is above this
    cell: int = models.CELL  # px per score cell of the detector

    def setup(self, ctx: ProcessorContext) -> None:
        self.detector = ctx.session(self.detector_model or models.region_detector(self.cell))

    def scores(self, frames: np.ndarray) -> np.ndarray:
        (scores,) = self.detector.run(["score"], {"input": models.to_nchw(frames)})
        return np.asarray(scores)

    def regions(self, frames: np.ndarray) -> list[list[models.Box]]:
        hw = (frames.shape[1], frames.shape[2])
        return models.detect_regions(self.scores(frames), self.threshold, self.cell, hw)


class RegionChain(_Detecting):
    """Detector -> region model on each crop at its fixed size -> pasted back."""

    region_model: str = ""  # "" = the built-in example region model
    region_size: int = models.REGION_SIZE  # px, the region model's fixed input side

    def setup(self, ctx: ProcessorContext) -> None:
        super().setup(ctx)
        model = self.region_model or models.region_model(self.region_size)
        self.regions_session = ctx.session(model, input_size=(self.region_size,) * 2)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = frames.copy()
        found = [(i, box) for i, boxes in enumerate(self.regions(frames)) for box in boxes]
        if not found:
            return out
        side = (self.region_size, self.region_size)
        crops = np.stack([_resize(frames[i, y0:y1, x0:x1], side) for i, (x0, y0, x1, y1) in found])
        (y,) = self.regions_session.run(["output"], {"input": models.to_nchw(crops)})
        pasted = models.from_nchw(np.asarray(y), frames.dtype)
        for (i, (x0, y0, x1, y1)), crop in zip(found, pasted):
            out[i, y0:y1, x0:x1] = _resize(crop, (y1 - y0, x1 - x0))
        return out


class Redact(_Detecting):
    """Detector -> each region blurred beyond recognition."""

    blur_px: int = 31  # Gaussian kernel side (odd)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = frames.copy()
        for i, boxes in enumerate(self.regions(frames)):
            for x0, y0, x1, y1 in boxes:
                region = np.ascontiguousarray(out[i, y0:y1, x0:x1])
                out[i, y0:y1, x0:x1] = cv2.GaussianBlur(region, (self.blur_px,) * 2, 0)
        return out


class RegionScores(_Detecting):
    """Detector -> a table: regions per frame and the score map (one row per frame)."""

    output = "tensor"

    def __call__(self, frames: np.ndarray) -> dict[str, Any]:
        scores = self.scores(frames)
        hw = (frames.shape[1], frames.shape[2])
        boxes = models.detect_regions(scores, self.threshold, self.cell, hw)
        return {
            "regions": np.array([len(b) for b in boxes], dtype=np.int64),
            "score_map": scores[:, 0],
        }


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (h, w, 3) resized to ``size`` (height, width): area when shrinking."""
    shrink = size[0] <= image.shape[0] and size[1] <= image.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (size[1], size[0]), interpolation=interpolation)
