"""``ray job submit`` entry point: one video through the cluster (``raypipe run``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        --runtime-env cluster/runtime_env.yaml -- \
        python jobs/process_video.py s3://bucket/film.mp4 /mnt/shared/film.out.mp4 \
        --model builtin:sharpen --chunk-frames 64

A processor runs the same way: ``--processor processors/redact.py:Redact`` names a file in
the uploaded working dir (read by the driver; its text travels to the actors), or
``--processor package.module:Class`` a module installed on the cluster.

It takes exactly the arguments of ``raypipe run`` (``python jobs/process_video.py --help``)
and delegates to :func:`raypipe.cli.entry`, so the job and the command line never drift.
Progress goes to stderr, which the job logs keep (``ray job logs --follow ID``). The exit
code is the job's status in the Jobs API: 0 SUCCEEDED; 1 (a raypipe error, printed as one
line ``raypipe: error: TypeName: ...``), 2 (bad usage) or 130 (interrupted) FAILED.
"""

from __future__ import annotations

import os
import sys

# Ray runs the driver with the uploaded working dir as its cwd; put the repository root
# first on sys.path so the uploaded raypipe is the one imported, installed or not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raypipe.cli import entry  # noqa: E402

if __name__ == "__main__":
    entry(["run", *sys.argv[1:]])
