#!/usr/bin/env bash
# On the GPU machine, in the repository's root, after tools/gpu_bundle.sh's five parts were
# copied into /tmp/dev: assemble and install them into /tmp/site, then run the GPU checks,
# each under its own timeout. Results and the whole log go to $OUT (or benchmarks/results).
#
#   bash tools/gpu_machine_run.sh          # doctor, pytest -m gpu, pixels, handoff, gpu_e2e
#   ALL=1 bash tools/gpu_machine_run.sh    # + gpu_acceptance's provider table, gpu_iobinding
#
# Not yet run through on a GPU: the default steps' timeouts add up to 545 s after the install,
# ALL's to 250 s more, so give the call its 10 minutes or run ALL on its own. Rehearse the
# flow on any machine first (the steps then fail or skip for want of a GPU, but the script
# must reach "done"):
#
#   SKIP_INSTALL=1 PY=.venv/bin/python OUT=/tmp/rehearsal bash tools/gpu_machine_run.sh
set -u
T0=$(date +%s)
step() { echo "=== $(($(date +%s) - T0))s: $*"; }
REPO=$PWD
OUT=${OUT:-$REPO/benchmarks/results}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu-run.log") 2>&1
PY=${PY:-python3}
if [ -z "${SKIP_INSTALL:-}" ]; then
step "install"
DEV=${DEV:-/tmp/dev} SITE=${SITE:-/tmp/site}
cd "$DEV" && cat part.0 part.1 part.2 part.3 part.4 >bundle.tar && sha256sum -c bundle.sha256 || exit 3
tar xf bundle.tar && rm -f part.* bundle.tar
mkdir -p "$SITE"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" ./*.whl
# wait for these two by pid: a bare `wait` also waits for the tee above, which never ends
# (bash 5.1+; a device session lost its whole call to that)
tar xJf onnxruntime_gpu.tar.xz -C "$SITE" & ort=$!
tar xJf ray.tar.xz -C "$SITE" & ray=$!
wait "$ort" "$ray" || exit 4
cd "$REPO"
export PYTHONPATH=$SITE:$REPO
fi
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
step "doctor"
timeout 45 $PY -m raypipe.cli doctor --device gpu
step "pytest -m gpu"
# the files holding gpu tests (others import test-only packages that machine lacks)
files=$(grep -rl "mark.gpu" tests --include="test_*.py")
timeout 170 $PY -m pytest -m gpu -q -rfEs -p no:cacheprovider --timeout 120 $files 2>&1 | tail -40
step "pixels --device gpu"
timeout 80 $PY benchmarks/pixels.py --device gpu --runs 5 --out "$OUT/pixels-gpu.json" 2>&1 | tail -8
step "handoff --device gpu"
timeout 80 $PY benchmarks/handoff.py --device gpu --runs 5 --out "$OUT/handoff-gpu.json" 2>&1 | tail -14
step "gpu_e2e"
OUT=$OUT timeout 170 $PY benchmarks/gpu_e2e.py 2>&1 | tail -20
if [ -n "${ALL:-}" ]; then
    step "gpu_acceptance"
    timeout 130 $PY benchmarks/gpu_acceptance.py --skip-tests --out "$OUT/gpu_acceptance.json" 2>&1 | tail -30
    step "gpu_iobinding"
    OUT=$OUT timeout 120 $PY benchmarks/gpu_iobinding.py 2>&1 | tail -10
fi
step "done"
