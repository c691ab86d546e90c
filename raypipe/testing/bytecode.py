"""raypipe's bytecode written ahead of runs that start many Python processes.

An editable install (the README's ``pip install -e``) leaves raypipe's modules without
bytecode, and where ``PYTHONDONTWRITEBYTECODE`` is set (this project's machines set it) no
process writes it: every process that imports raypipe (a driver, each Ray worker, each
actor) compiles the modules it needs again. A wheel install does not have that cost (pip
compiles the package), nor does any machine where a first run writes the bytecode. The test
suite and the benchmarks write it once before they start, so that what they measure is a
user's install. The driver's imports took 0.95-1.20 s without bytecode and 0.78-0.95 s with
it (session 13). A Ray worker's raypipe imports took about 0.2 s without bytecode and 0.1 s
with it (session 21, ``python -X importtime``); one run of the test suite started 564 Ray
worker and actor processes (their core-worker logs); two Ray test modules
(``test_safety_checks_ray``, ``test_processors_ray``) took 188.8 and 169.0 s without, 179.9
and 147.3 s with it (two alternated rounds).
"""

from __future__ import annotations

import compileall
import os


def compile_raypipe(package: str | os.PathLike[str] | None = None) -> str:
    """Write the bytecode of every raypipe module (``compileall`` writes it whatever
    ``PYTHONDONTWRITEBYTECODE`` says; each module's is rewritten only if its source
    changed). ``package``: the ``raypipe`` directory to compile (None: the one this
    process imports, such as another checkout's). Returns where it went, for the record."""
    if package is None:
        import raypipe

        package = os.path.dirname(os.path.abspath(raypipe.__file__))
    if not compileall.compile_dir(package, quiet=1):
        raise RuntimeError(f"compileall failed on {package}")
    return f"{package}/**/__pycache__ (compileall before the runs)"
