#!/usr/bin/env bash
# Packages for a bare GPU machine that has Python 3.12, CUDA 13 and cuDNN 9 (e.g. PyTorch's
# wheels) but no onnxruntime-gpu, Ray or PyAV, and no network: downloads the wheels here,
# xz-compresses onnxruntime-gpu and Ray, and splits the lot into five ~58 MiB parts under
# .dev/p1 .. .dev/p5 (add /.dev/ to .git/info/exclude; cluster/runtime_env.yaml excludes it from
# `ray job submit` uploads), so each part fits one transfer of
# 64 MiB. Copy the parts one call after another into /tmp/dev on that machine, then run
# tools/gpu_machine_run.sh there. TensorRT (over 1 GB) is not included.
set -euo pipefail
dl=$(mktemp -d)
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$dl" onnxruntime-gpu==1.31.1 av==18.1.0 ray==2.60.0 \
  jsonschema jsonschema-specifications referencing rpds-py
for pkg in onnxruntime_gpu ray; do
  mkdir -p "$dl/x-$pkg" && (cd "$dl/x-$pkg" && unzip -q ../${pkg}-*.whl && tar cf - . | xz -T0 -6 >"$dl/$pkg.tar.xz")
done
(cd "$dl" && tar cf bundle.tar onnxruntime_gpu.tar.xz ray.tar.xz av-*.whl jsonschema*.whl referencing-*.whl rpds_py-*.whl \
  && sha256sum bundle.tar >bundle.sha256 && split -n 5 -d -a 1 bundle.tar part.)
for i in 0 1 2 3 4; do mkdir -p ".dev/p$((i + 1))" && mv "$dl/part.$i" ".dev/p$((i + 1))/"; done
cp "$dl/bundle.sha256" .dev/p5/
rm -rf "$dl"
du -sh .dev/p*
