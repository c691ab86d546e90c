"""The cluster configs in cluster/ as shipped: Ray's own validation, required fields, security.

The launcher YAML goes through the same ``prepare_config`` + ``validate_config`` that
``ray up`` runs; the runtime env is zipped by Ray's own packaging code, as ``ray job submit``
does; the KubeRay manifests are parsed and walked for the fields a GPU cluster needs and
for anything that would expose the dashboard or GCS or leak the token.
"""

from __future__ import annotations

import copy
import re
import shlex
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "aws-gpu.yaml"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob-archive.yaml"
NETWORK_POLICY = CLUSTER / "kuberay" / "networkpolicy.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"

TOKEN_SECRET = "raypipe-ray-token"
TOKEN_KEY = "auth_token"  # the key KubeRay's authOptions reads
PRIVATE_PORTS = {6379, 8265, 10001}  # GCS, dashboard/Jobs API, Ray client
SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|API_KEY")
RAY_UPLOAD_LIMIT_BYTES = 100 * 1024 * 1024


def _load(path: Path) -> Any:
    with open(path) as f:
        return yaml.safe_load(f)


def _strings(node: Any) -> Iterator[str]:
    """Every string value (not key) in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


# --------------------------------------------------------------------- launcher


def test_launcher_config_passes_rays_own_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(LAUNCHER)
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` runs


def test_launcher_validation_is_real() -> None:
    """The check above bites: a GPU count given as a string is rejected."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(LAUNCHER)
    config["available_node_types"]["gpu-a10g-x1"]["resources"]["GPU"] = "1"
    with pytest.raises(jsonschema.ValidationError, match="'1' is not of type 'integer'"):
        validate_config(prepare_config(config))


def test_launcher_head_has_no_gpu_and_workers_do() -> None:
    config = _load(LAUNCHER)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU") == 0, "the head takes no tasks (num-cpus 0)"
    assert "--num-cpus=0" in " ".join(config["head_start_ray_commands"])
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers.values())
    for name, node_type in workers.items():
        shm = [o for o in node_type["docker"]["worker_run_options"] if o.startswith("--shm-size=")]
        assert shm, f"worker type {name} must size /dev/shm for frames (--shm-size)"
        assert node_type["max_workers"] <= config["max_workers"]


def test_launcher_turns_token_auth_on_without_a_literal_token() -> None:
    config = _load(LAUNCHER)
    options = config["docker"]["run_options"]
    assert "--env RAY_AUTH_MODE=token" in options
    assert "--env RAY_AUTH_TOKEN_PATH=/run/secrets/raypipe/ray_auth_token" in options
    assert not any("RAY_AUTH_TOKEN=" in o for o in options), "never a token in the config"
    fetch = " ".join(config["initialization_commands"])
    assert "aws ssm get-parameter" in fetch and "--with-decryption" in fetch
    assert "> /home/ubuntu/.raypipe-secrets/ray_auth_token" in fetch, "written to a file"
    assert "umask 077" in fetch and not re.search(r"\becho\b|\bcat\b|\btee\b", fetch)
    assert any(o.startswith("--env RAYPIPE_ENGINE_CACHE=s3://") for o in options)


def test_launcher_never_exposes_dashboard_or_gcs() -> None:
    config = _load(LAUNCHER)
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
        public = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))
        assert not (public and ports & PRIVATE_PORTS), f"rule opens {PRIVATE_PORTS} publicly"


# ------------------------------------------------------------------ runtime env


def test_runtime_env_parses_and_leaves_out_non_source() -> None:
    from ray.runtime_env import RuntimeEnv

    doc = _load(RUNTIME_ENV)
    RuntimeEnv(**doc)  # Ray's own field validation
    for pattern in (".git", ".venv", ".mypy_cache", "benchmarks/results", ".ipynb_checkpoints"):
        assert pattern in doc["excludes"], pattern
    assert {"*.mp4", "*.onnx", "*.engine"} <= set(doc["excludes"])
    leaked = [k for k in doc.get("env_vars", {}) if SECRET_WORDS.search(k.upper())]
    assert not leaked, f"secrets in the runtime env are shown by `ray job list`: {leaked}"


def test_runtime_env_upload_is_small_and_source_only(tmp_path: Path) -> None:
    """Zip the repository with the runtime env's excludes the way `ray job submit` does."""
    packaging = pytest.importorskip("ray._private.runtime_env.packaging")
    doc = _load(RUNTIME_ENV)
    target = tmp_path / "working_dir.zip"
    packaging.create_package(
        str(REPO), target, include_gitignore=True, excludes=doc["excludes"], logger=None
    )
    names = zipfile.ZipFile(target).namelist()
    assert target.stat().st_size < RAY_UPLOAD_LIMIT_BYTES
    assert {"raypipe/cli.py", "jobs/process_video.py", "cluster/runtime_env.yaml"} <= set(names)
    top = {n.split("/")[0] for n in names}
    assert not top & {".git", ".venv", ".mypy_cache", "raypipe-demo"}, sorted(top)
    assert not [n for n in names if n.endswith((".mp4", ".onnx", ".pyc"))]


# ---------------------------------------------------------------------- KubeRay


def _cluster_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "RayCluster", _load(RAYCLUSTER)["spec"]
    yield "RayJob", _load(RAYJOB)["spec"]["rayClusterSpec"]


def _groups(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "head", spec["headGroupSpec"]
    for group in spec["workerGroupSpecs"]:
        yield group["groupName"], group


def _quantity_bytes(text: str | int) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(text))
    assert match, f"not a Kubernetes quantity: {text!r}"
    return float(match.group(1)) * units.get(match.group(2) or "", 1)


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB], ids=lambda p: p.name)
def test_kuberay_manifests_are_ray_io_v1(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert [d["apiVersion"] for d in docs] == ["ray.io/v1"]
    assert docs[0]["kind"] == ("RayCluster" if path == RAYCLUSTER else "RayJob")


@pytest.mark.parametrize("kind, spec", list(_cluster_specs()), ids=["RayCluster", "RayJob"])
def test_kuberay_pods_have_token_auth_shm_and_gpus(kind: str, spec: dict[str, Any]) -> None:
    assert spec["authOptions"] == {"mode": "token", "secretName": TOKEN_SECRET}
    for name, group in _groups(spec):
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", (kind, name)
        token = env["RAY_AUTH_TOKEN"]
        assert "value" not in token, f"{kind}/{name}: a literal token in the manifest"
        assert token["valueFrom"]["secretKeyRef"] == {"name": TOKEN_SECRET, "key": TOKEN_KEY}
        assert env["RAYPIPE_ENGINE_CACHE"]["value"].startswith("s3://")

        volumes = {v["name"]: v for v in pod["volumes"]}
        shm_mounts = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        assert len(shm_mounts) == 1, f"{kind}/{name}: /dev/shm not mounted"
        shm = volumes[shm_mounts[0]["name"]]["emptyDir"]
        assert shm["medium"] == "Memory", f"{kind}/{name}: /dev/shm must be memory-backed"
        # Ray's object store lives in /dev/shm: it must fit (default 30% of the memory limit).
        limits = container["resources"]["limits"]
        explicit = group["rayStartParams"].get("object-store-memory")
        store = float(explicit) if explicit else 0.3 * _quantity_bytes(limits["memory"])
        assert store <= _quantity_bytes(shm["sizeLimit"]), f"{kind}/{name}: shm too small"

        gpus = int(limits.get("nvidia.com/gpu", 0))
        if name == "head":
            assert gpus == 0 and group["rayStartParams"]["num-cpus"] == "0"
        else:
            assert gpus >= 1, f"{kind}/{name}: worker group without nvidia.com/gpu limits"
            assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB, NETWORK_POLICY], ids=lambda p: p.name)
def test_kuberay_never_exposes_dashboard_or_gcs(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    values = [s for d in docs for s in _strings(d)]
    assert not {"LoadBalancer", "NodePort"} & set(values), f"{path.name} exposes a service"
    assert "0.0.0.0/0" not in values
    for doc in docs:
        if doc["kind"] == "NetworkPolicy":
            continue
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        head = spec["headGroupSpec"]
        assert head["serviceType"] == "ClusterIP"
        assert head.get("enableIngress") is False
        assert "headService" not in head


def test_rayjob_runs_the_archive_entry_point_with_cli_arguments() -> None:
    job = _load(RAYJOB)["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[0] == "python" and argv[1].endswith("jobs/process_archive.py")
    assert (REPO / "jobs" / "process_archive.py").is_file()
    # The image puts the repository where the entry point expects it.
    workdir = re.search(r"^WORKDIR (\S+)$", DOCKERFILE.read_text(), re.M)
    assert workdir and argv[1] == f"{workdir.group(1)}/jobs/process_archive.py"
    assert job["shutdownAfterJobFinishes"] is True and job["backoffLimit"] >= 1
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert not [k for k in runtime_env.get("env_vars", {}) if SECRET_WORDS.search(k.upper())]

    import argparse

    from raypipe.cli import build_parser

    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if "archive" not in actions[0].choices:
        pytest.skip("raypipe.cli has no `archive` subcommand yet")
    args = parser.parse_args(["archive", *argv[2:]])  # the manifest's arguments still parse
    assert args.inputs.startswith("s3://") and args.device == "gpu"


def test_ray_versions_agree() -> None:
    """The image and the KubeRay manifests pin the same Ray (RayJob submitters use it)."""
    image = re.search(r"rayproject/ray:(\d+\.\d+\.\d+)", DOCKERFILE.read_text())
    assert image, "cluster/Dockerfile must pin a rayproject/ray version"
    versions = {_load(RAYCLUSTER)["spec"]["rayVersion"]}
    versions.add(_load(RAYJOB)["spec"]["rayClusterSpec"]["rayVersion"])
    assert versions == {image.group(1)}
