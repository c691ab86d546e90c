"""``raypipe doctor``: what this machine and this install can do, and why not.

:func:`examine` gathers the facts as one JSON-ready dict: Python, raypipe, Ray, PyAV and its
FFmpeg (NVDEC decoders, NVENC encoders and whether each can open here), ONNX Runtime (which
distribution, its CUDA build, its providers), for each GPU provider whether its library
loads and if not the missing library or the driver's limit
(:mod:`raypipe.infer.provider_check`), the CUDA driver and the GPUs NVML sees, and the
TensorRT engine cache (where, and whether it can be written). ``verdicts`` holds, per
``--device``, ``""`` when that device works here and the reason on one line when it does
not. :func:`format_report` prints it on one screen.

Nothing here fails for a missing piece: a missing piece is a fact to report.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any

from raypipe.config import DEVICES, engine_cache_from_env
from raypipe.infer.provider_check import SHORT_NAMES, GpuStack, check_gpu_stack
from raypipe.infer.session import TENSORRT

NVDEC_DECODERS = ("h264_cuvid", "hevc_cuvid", "av1_cuvid", "vp9_cuvid")
NVENC_ENCODERS = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")


def examine(
    *,
    engine_cache: str | None = None,
    capi_dir: str | None = None,
    dirs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every fact ``raypipe doctor`` reports (see the module docstring), JSON-ready.

    ``engine_cache``: the cache URL to check (default ``RAYPIPE_ENGINE_CACHE``, else the
    local default). ``capi_dir``/``dirs``: point the provider checks at other libraries
    (:func:`raypipe.infer.provider_check.check_provider`).
    """
    stack = check_gpu_stack(capi_dir=capi_dir, dirs=dirs)
    report: dict[str, Any] = {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "raypipe": {"version": _version("raypipe"), "path": os.path.dirname(__file__)},
        "ray": {"version": _version("ray") or "not installed", **_ray_temp()},
        "pyav": _pyav(),
        "onnxruntime": _onnxruntime(stack),
        "providers": _providers(stack),
        "driver": _driver(stack),
        "gpus": _gpus(),
        "engine_cache": _engine_cache(engine_cache),
    }
    report["verdicts"] = {device: stack.device_problem(device) for device in DEVICES}
    report["auto_providers"] = stack.usable()
    report["tensorrt"] = stack.provider_problem(TENSORRT)
    return report


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _ray_temp() -> dict[str, str]:
    """Where a local Ray would keep its session, and why it could not start there (a full
    disk: raypipe refuses to start it; doctor said a run works; a sweep)."""
    from raypipe.distributed.cluster import ray_temp_dir, temp_space_problem

    folder = ray_temp_dir()
    return {"temp_dir": folder, "temp_problem": temp_space_problem(folder)}


def _pyav() -> dict[str, Any]:
    try:
        import av
        from av.codec.hwaccel import hwdevices_available
    except ImportError as e:
        return {"version": "", "error": str(e)}
    from raypipe.media.decode import nvdec_problem
    from raypipe.media.encode import nvenc_problem

    codecs = set(av.codecs_available)
    libavcodec = av.library_versions.get("libavcodec", ())
    return {
        "version": str(av.__version__),
        "libavcodec": ".".join(str(v) for v in libavcodec),
        "hw_devices": sorted(hwdevices_available()),
        "nvdec_decoders": [c for c in NVDEC_DECODERS if c in codecs],
        "nvdec_problem": nvdec_problem(),
        "nvenc_encoders": [c for c in NVENC_ENCODERS if c in codecs],
        "nvenc_problem": nvenc_problem("h264_nvenc") or "",
    }


def _onnxruntime(stack: GpuStack) -> dict[str, Any]:
    b = stack.build
    return {
        "package": b.package,
        "version": b.version,
        "cuda_version": b.cuda_version,
        "providers": list(b.providers),
        "installed": list(b.installed),
        "capi_dir": b.capi_dir,
        "problem": b.problem,
    }


def _providers(stack: GpuStack) -> dict[str, Any]:
    return {
        p: {
            "library": c.library,
            "cuda_major": c.cuda_major,
            "loads": c.loads,
            "missing": list(c.missing),
            "problem": stack.provider_problem(p),
        }
        for p, c in stack.providers.items()
    }


def _driver(stack: GpuStack) -> dict[str, Any]:
    d = stack.driver
    return {
        "library": d.library,
        "cuda_version": d.cuda_version,
        "devices": d.devices,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "problem": d.problem(),
    }


def _gpus() -> dict[str, Any]:
    from raypipe.distributed.gpu_monitor import nvml_devices

    devices, reason = nvml_devices()
    return {"devices": devices, "problem": reason}


def _engine_cache(engine_cache: str | None) -> dict[str, Any]:
    from raypipe.infer.trt.cache import DEFAULT_LOCAL_ROOT
    from raypipe.infer.trt.providers import engine_cache_url

    given = engine_cache or engine_cache_from_env()
    url = engine_cache_url(given)
    return {
        "url": url,
        "source": "--engine-cache"
        if engine_cache
        else "RAYPIPE_ENGINE_CACHE"
        if given
        else "default",
        "problem": writable_problem(url),
        "local_copies": str(DEFAULT_LOCAL_ROOT),
        "local_copies_problem": writable_problem(str(DEFAULT_LOCAL_ROOT)),
    }


def writable_problem(url: str) -> str:
    """``""`` when a file can be created (and removed) under ``url``, else why not.

    A local folder that is missing is judged by the nearest folder above it that exists
    (the engine cache makes the rest), and is not made: the check left an empty
    ``/tmp/raypipe-engines`` behind (a sweep). Any other fsspec URL gets one small probe
    object, deleted again."""
    from raypipe import storage

    try:
        if storage.is_local(url):
            folder = os.path.abspath(storage.local_path(url))
            while not os.path.exists(folder):
                folder = os.path.dirname(folder)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".raypipe-doctor-"):
                pass
        else:
            probe = storage.join(url, f".raypipe-doctor-{uuid.uuid4().hex[:12]}")
            storage.write_bytes(probe, b"")
            storage.remove_file(probe)
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        return f"cannot write under {url}: {type(e).__name__}: {' '.join(str(e).split())}"
    return ""


def format_report(report: dict[str, Any], device: str) -> str:
    """The report on one screen, ending with what ``--device DEVICE`` would do."""
    ok, bad = "ok", "NO"
    av, ort, drv, cache = (
        report["pyav"],
        report["onnxruntime"],
        report["driver"],
        report["engine_cache"],
    )
    lines = [
        f"python       {report['python']['version']} ({report['python']['executable']})",
        f"raypipe      {report['raypipe']['version'] or '(source tree)'}  "
        f"ray {report['ray']['version']}",
        f"  local Ray  {ok if not report['ray']['temp_problem'] else bad}: "
        f"{report['ray']['temp_problem'] or 'sessions in ' + report['ray']['temp_dir']}",
        f"pyav         {av.get('version') or av.get('error')}  "
        f"libavcodec {av.get('libavcodec', '')}  "
        f"hw devices: {', '.join(av.get('hw_devices', [])) or 'none'}",
        f"  NVDEC      {ok if not av.get('nvdec_problem') else bad}: "
        f"{av.get('nvdec_problem') or ', '.join(av.get('nvdec_decoders', []))}",
        f"  NVENC      {ok if not av.get('nvenc_problem') else bad}: "
        f"{av.get('nvenc_problem') or ', '.join(av.get('nvenc_encoders', []))}",
    ]
    if ort["package"]:
        build = f"CUDA {ort['cuda_version']} build" if ort["cuda_version"] else "CPU build"
        lines.append(
            f"onnxruntime  {ort['package']} {ort['version']} ({build}); providers: "
            f"{', '.join(ort['providers'])}"
        )
    if ort["problem"]:
        lines.append(f"  {bad}: {ort['problem']}")
    for provider, p in report["providers"].items():
        state = ok if not p["problem"] else bad
        where = (
            f" ({os.path.basename(p['library'])}, CUDA {p['cuda_major']})" if p["library"] else ""
        )
        lines.append(f"  {SHORT_NAMES[provider]:<10} {state}{where}")
        if p["problem"]:
            lines.append(f"    {p['problem']}")
    driver = f"CUDA {drv['cuda_version']}, {drv['devices']} device(s)" if drv["library"] else "none"
    lines.append(f"cuda driver  {driver}" + (f": {drv['problem']}" if drv["problem"] else ""))
    gpus = report["gpus"]
    if gpus["devices"]:
        for g in gpus["devices"]:
            lines.append(
                f"  GPU {g['index']}: {g['name']}, {g['memory_total_bytes'] / 2**30:.0f} GiB, "
                f"driver {g['driver_version']}"
            )
    else:
        lines.append(f"  NVML: {gpus['problem']}")
    lines.append(
        f"engine cache {cache['url']} ({cache['source']}): "
        + (cache["problem"] or "writable")
        + f"; local copies {cache['local_copies']}: "
        + (cache["local_copies_problem"] or "writable")
    )
    verdicts = report["verdicts"]
    for name in DEVICES:
        detail = verdicts[name] or (", ".join(report["auto_providers"]) if name == "auto" else "")
        state = ok if not verdicts[name] else bad
        lines.append(f"--device {name:<5} {state}" + (f": {detail}" if detail else ""))
    if not verdicts["gpu"] and report["tensorrt"]:
        lines.append(f"  TensorRT will not be used: {report['tensorrt']}")
    works = not verdicts[device] and not report["ray"]["temp_problem"]
    lines.append(f"=> --device {device} {'works here' if works else 'would fail here'}")
    return "\n".join(lines)
