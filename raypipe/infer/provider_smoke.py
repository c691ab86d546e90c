"""Prove that ONNX Runtime's GPU providers load: ``python -m raypipe.infer.provider_smoke``.

For each provider asked for (``TensorRT``, ``CUDA``): its library must load with every library
it needs (:func:`raypipe.infer.provider_check.check_provider`: the real ``dlopen``, after
raypipe's preloading), and where the CUDA driver sees a GPU, a session on a tiny float32
convolution network with *that provider only* must be granted it and compute what the CPU
computes. ``get_available_providers()`` is not evidence: it lists what is compiled in.

Where no GPU is visible (``docker build``, a CPU CI machine) the session cannot be created;
the check then proves the libraries load and says the session was not tried, unless
``--require-gpu`` makes that a failure (on a GPU node: ``docker run --gpus all IMAGE python
-m raypipe.infer.provider_smoke --require-gpu TensorRT CUDA``). The CUDA provider needs the
driver's ``libcuda.so.1``, which the NVIDIA container runtime mounts only at run time: at
build time put the CUDA toolkit's stub on ``LD_LIBRARY_PATH`` (cluster/Dockerfile does).

Exit status 0 when every provider passed, 1 otherwise (one line per provider on stdout).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from raypipe.infer.provider_check import SHORT_NAMES, DriverCheck, check_driver, check_provider

NAMES = {short.lower(): provider for provider, short in SHORT_NAMES.items() if short != "CPU"}
_HW = (16, 24)


def smoke_line(
    provider: str,
    *,
    require_gpu: bool = False,
    driver: DriverCheck | None = None,
    capi_dir: str | None = None,
) -> tuple[str, str]:
    """``(what passed, why it failed)`` for ``provider``; exactly one of them is non-empty.

    ``capi_dir``: where the provider libraries are (default: the installed onnxruntime's)."""
    check = check_provider(provider, capi_dir=capi_dir)
    driver = driver if driver is not None else check_driver()
    if check.missing == ("libcuda.so.1",) and not driver.library and not require_gpu:
        return (
            f"{provider}: every library it links was found except the driver's libcuda.so.1 "
            "(absent here: no driver; put the CUDA stub on LD_LIBRARY_PATH to load the rest)",
            "",
        )
    if not check.loads:
        return "", check.problem
    no_gpu = driver.problem(check.cuda_major)
    if no_gpu:
        if require_gpu:
            return "", f"{provider}: library loads, but no session: {no_gpu}"
        return f"{provider}: library loads; session not tried ({no_gpu})", ""
    return _session(provider)


def _session(provider: str) -> tuple[str, str]:
    from raypipe.infer.heavy import build_superres
    from raypipe.infer.session import create_session, granted_providers

    data = build_superres(scale=2, channels=8, blocks=1).SerializeToString()
    x = np.random.default_rng(0).random((1, 3, *_HW), dtype=np.float32)
    try:
        session = create_session(data, device="gpu", providers=[provider])
        granted = granted_providers(session)
        (y,) = session.run(["output"], {"input": x})
    except Exception as e:  # noqa: BLE001 - the error is the finding
        return "", f"{provider}: library loads, but a session fails: {' '.join(str(e).split())}"
    if granted[0] != provider:
        return "", f"{provider}: library loads, but ONNX Runtime granted {granted}"
    (expected,) = create_session(data, device="cpu").run(["output"], {"input": x})
    error = float(np.max(np.abs(y - expected)))
    if error > 1e-2:
        return "", f"{provider}: session granted, but its output differs from CPU's by {error}"
    return f"{provider}: session granted {granted}, output equals CPU's (max error {error:.1e})", ""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m raypipe.infer.provider_smoke", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("providers", nargs="+", type=str.lower, choices=sorted(NAMES))
    p.add_argument("--require-gpu", action="store_true", help="fail when no GPU is visible")
    args = p.parse_args(argv)
    driver = check_driver()
    failed = False
    for name in args.providers:
        passed, problem = smoke_line(NAMES[name], require_gpu=args.require_gpu, driver=driver)
        print(f"ok: {passed}" if passed else f"FAILED: {problem}", flush=True)
        failed = failed or bool(problem)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
