"""The only package that imports Ray: datasets, actors, the pipeline, progress and stats."""

from raypipe.distributed.pipeline import process_video
from raypipe.distributed.stats import RunStats

__all__ = ["RunStats", "process_video"]
