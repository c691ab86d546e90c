"""``ray job submit`` entry point: TensorRT engines ahead of a run (``raypipe build-engines``).

    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        --runtime-env cluster/runtime_env.yaml -- \
        python jobs/build_engines.py s3://bucket/models/restore.onnx

Builds each engine once per GPU kind in the cluster and publishes it to the shared engine
cache (``RAYPIPE_ENGINE_CACHE``, see cluster/runtime_env.yaml), so the first chunk of a
run does not pay for the build. It takes exactly the arguments of ``raypipe build-engines``
(``python jobs/build_engines.py --help``) and delegates to :func:`raypipe.cli.entry`. The
exit code is the job's status in the Jobs API: 0 SUCCEEDED, anything else FAILED.
"""

from __future__ import annotations

import os
import sys

# Ray runs the driver with the uploaded working dir as its cwd; put the repository root
# first on sys.path so the uploaded raypipe is the one imported, installed or not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raypipe.cli import entry  # noqa: E402

if __name__ == "__main__":
    entry(["build-engines", *sys.argv[1:]])
