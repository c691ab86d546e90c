"""Two revisions of raypipe side by side: the same ``raypipe run`` command from this
checkout and from an earlier commit, alternated round by round, on a case of
``perframe.py``.

For changes that have no switch of their own (a start-up cost, a Ray Data hook): the base
revision is checked out into a temporary git worktree and its command runs with that
worktree first on ``PYTHONPATH`` (checked before the first round: ``import raypipe`` must
resolve there). Ray's worker processes inherit the driver's environment, so a fresh local
Ray runs the base's stages too. Each run is the command as a user runs it, Ray's start
included. For each run: wall seconds, CPU seconds by role (``_common.command_cpu_by_role``),
and from its ``--stats`` the seconds from the command to the first chunk's decode and to
its first inference. Both sides' outputs must decode to the same frames (ffmpeg's
``framemd5``) unless ``--frames-may-differ``. Printed: medians and spreads, and base over
head for each figure.

Usage (repository root)::

    python benchmarks/revisions.py --base HEAD~1                      # 4K 5 s invert, 3 rounds
    python benchmarks/revisions.py --base 26c42d2 --cases 720p-20s --rounds 4

Writes ``benchmarks/results/revisions.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    ForeignLoad,
    machine_info,
    summarise_sides,
    table,
    write_result,
)
from carry import MODEL, frames_md5  # noqa: E402
from perframe import CASES  # noqa: E402
from perframe import run_once as perframe_run  # noqa: E402

from raypipe.testing.bytecode import compile_raypipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("head", "base")
FIGURES = ("wall_s", "cpu_s", "first_decode_after_s", "first_infer_after_s")


def side_env(tree: Path | None) -> dict[str, str]:
    """The environment a side's command runs in: ``tree`` first on ``PYTHONPATH`` (None:
    this checkout, the environment as it is)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(tree), env.get("PYTHONPATH"))))
    return env


def check_side(tree: Path) -> None:
    """Fail unless ``import raypipe`` resolves into ``tree`` in that side's environment."""
    where = subprocess.run(
        [sys.executable, "-c", "import raypipe; print(raypipe.__file__)"],
        env=side_env(tree), cwd=tree, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the base side imports raypipe from {where}, not from {tree}")


def run_once(case: Any, model: str, work: Path, tree: Path | None) -> dict[str, Any]:
    """``perframe.py``'s run of ``raypipe <model>`` on ``case``, from ``tree`` (None: this
    checkout)."""
    side = work / ("base" if tree is not None else "head")
    side.mkdir(exist_ok=True)
    approach = f"raypipe {model.removeprefix('builtin:')}"
    got = perframe_run(approach, case, case.clip(), side, env=side_env(tree), cwd=tree or ROOT)
    return {
        "wall_s": round(got["wall_s"], 2),
        "cpu_s": got["cpu_by_role"]["total"]["cpu_s"],
        "cpu_by_role": got["cpu_by_role"],
        "first_decode_after_s": round(got["first_decode_after_s"], 2),
        "first_infer_after_s": round(got["first_infer_after_s"], 2),
        "frames_md5": frames_md5(Path(got["output"])),
    }


def role_medians(runs: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows: role, each side's median CPU seconds (0 where a side's runs lack the role)."""
    roles = sorted({role for r in runs for role in r["cpu_by_role"]} - {"total"})
    return [
        [role, *(statistics.median(r["cpu_by_role"].get(role, {}).get("cpu_s", 0.0)
                                   for r in runs if r["side"] == side) for side in SIDES)]
        for role in roles
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the earlier revision (a git commit-ish)")
    parser.add_argument("--cases", default="4k-5s", help="perframe.py's case names, commas")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--model", default=None, help="the model of every case (default: identity, invert at 4K)"
    )
    parser.add_argument("--frames-may-differ", action="store_true",
                        help="both sides' outputs need not have the same frames")  # fmt: skip
    parser.add_argument("--out", default=None, help="result JSON (default results/revisions.json)")
    args = parser.parse_args(argv)
    base = subprocess.run(["git", "rev-parse", args.base], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    head = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    compile_raypipe()
    doc: dict[str, Any] = {"machine": machine_info(), "base": base, "head": head,
                           "rounds": args.rounds, "cases": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="raypipe-revisions-") as work:
        tree = Path(work) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), base], cwd=ROOT,
                       check=True, capture_output=True)  # fmt: skip
        try:
            check_side(tree)
            compile_raypipe(tree / "raypipe")
            with ForeignLoad() as load:
                for name in args.cases.split(","):
                    doc["cases"].append(run_case(name, args, Path(work), tree))
            doc["load"] = load.result
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           check=False, capture_output=True)  # fmt: skip
    for c in doc["cases"]:
        rows = [[figure, *s.values()] for figure, s in c["summary"].items()]
        print(f"\n{c['case']} ({c['model']}), base {base[:10]} against head {head}")
        print(table(rows, ["figure", *SIDES, "base / head"]))
        print(table(c["cpu_by_role"], ["CPU s by role (medians)", *SIDES]))
    print(f"foreign share {doc['load']['foreign_share']}")
    print(f"wrote {write_result('revisions', doc, args.out)}")
    return 0


def run_case(name: str, args: Any, work: Path, tree: Path) -> dict[str, Any]:
    case = CASES[name]
    model = args.model or MODEL.get(name, "builtin:identity")
    runs = []
    for r in range(args.rounds):
        for side in SIDES[r % 2 :] + SIDES[: r % 2]:
            run = run_once(case, model, work, tree if side == "base" else None)
            run.update(side=side, round=r)
            print(name, side, {k: run[k] for k in FIGURES}, flush=True)
            runs.append(run)
    if not args.frames_may_differ and len({run.pop("frames_md5") for run in runs}) != 1:
        raise SystemExit(f"{name}: the outputs' frames differ between runs")
    summary = summarise_sides(runs, FIGURES, SIDES)
    return {"case": name, "model": model, "runs": runs, "summary": summary,
            "cpu_by_role": role_medians(runs)}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
