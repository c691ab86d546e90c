"""``ray job submit`` entry point: a whole archive of videos (``raypipe archive``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        --runtime-env cluster/runtime_env.yaml -- \
        python jobs/process_archive.py s3://bucket/archive/ s3://bucket/processed/ \
        --model s3://bucket/models/restore.onnx --device gpu

It takes exactly the arguments of ``raypipe archive`` (``python jobs/process_archive.py
--help``) and delegates to :func:`raypipe.cli.entry`. Resuming is re-submitting the same
command: videos whose output is complete are skipped, a video cut off mid-way reuses the
chunks it had encoded. The report (one row per video: done, skipped or failed, and why)
is written next to the outputs. The exit code is the job's status in the Jobs API:
0 SUCCEEDED (every video done or skipped); 3 (some videos failed, see the report), 1 (the
run itself failed), 2 (bad usage) or 130 (interrupted) FAILED.
"""

from __future__ import annotations

import os
import sys

# Ray runs the driver with the uploaded working dir as its cwd; put the repository root
# first on sys.path so the uploaded raypipe is the one imported, installed or not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raypipe.cli import entry  # noqa: E402

if __name__ == "__main__":
    entry(["archive", *sys.argv[1:]])
