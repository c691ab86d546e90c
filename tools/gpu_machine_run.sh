#!/usr/bin/env bash
# On the GPU machine, in the repository's root, after tools/gpu_bundle.sh's five parts were
# copied into /tmp/dev: assemble and install them into /tmp/site, then run the GPU checks,
# each under its own timeout. Results go to $OUT (or benchmarks/results).
set -u
T0=$(date +%s)
step() { echo "=== $(($(date +%s) - T0))s: $*"; }
REPO=$PWD
OUT=${OUT:-$REPO/benchmarks/results}
cd /tmp/dev && cat part.0 part.1 part.2 part.3 part.4 >bundle.tar && sha256sum -c bundle.sha256 || exit 3
tar xf bundle.tar && rm -f part.* bundle.tar
mkdir -p /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site ./*.whl
(tar xJf onnxruntime_gpu.tar.xz -C /tmp/site) & (tar xJf ray.tar.xz -C /tmp/site) & wait
cd "$REPO"
export PYTHONPATH=/tmp/site:$REPO PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
step "doctor"
timeout 45 python3 -m raypipe.cli doctor --device gpu
step "pytest -m gpu"
# the files holding gpu tests (others import test-only packages that machine lacks)
files=$(grep -rl "mark.gpu" tests --include="test_*.py")
timeout 130 python3 -m pytest -m gpu -q -rfEs -p no:cacheprovider --timeout 120 $files 2>&1 | tail -40
step "gpu_acceptance"
timeout 130 python3 benchmarks/gpu_acceptance.py --skip-tests --out "$OUT/gpu_acceptance.json" 2>&1 | tail -30
step "gpu_e2e"
OUT=$OUT timeout 150 python3 benchmarks/gpu_e2e.py 2>&1 | tail -20
step "gpu_iobinding"
OUT=$OUT timeout 120 python3 benchmarks/gpu_iobinding.py 2>&1 | tail -10
step "pixels --device gpu"
timeout 80 python3 benchmarks/pixels.py --device gpu 2>&1 | tail -8
step "done"
