"""A pytest plugin: once pytest is done, the test process ends with pytest's exit status
and without Python's finalization (``-p raypipe.testing.pytest_exit``; raypipe's own
``tests/conftest.py`` loads it).

Why: a test process that has started and shut down Ray many times (raypipe's suite does,
module by module) still runs Ray's native threads after the last ``ray.shutdown()``:
``gcs_client_io_s``, ``worker.io``, ``event_engine``, ``grpc_global_tim`` and others, seen in
``/proc/self/task`` at the end of a session of four of the suite's files, with
``ray.is_initialized()`` false. Python's finalization then destroys the modules and objects
those threads may still touch (Ray's ``CoreWorker`` among them; Ray's own workers never
destroy theirs and leave with ``os._exit``, and the ``raypipe`` command ends that way too:
:mod:`raypipe.exiting`). One CI run of the suite (session 12: 1221 passed, 17 skipped)
ended in a segmentation fault after pytest's summary line, exit status 139, with no Python
traceback: the crash was in finalization, after every test and report had finished.

What still runs: pytest's whole session, its reports and its clean-up; every ``atexit``
handler registered after this module is imported (a test's own, pytest's temporary-directory
lock removal, Ray's if Ray is imported later), because ``atexit`` runs them last in, first out.
Then this module's handler shuts Ray down if it is still up (what Ray's handler does),
flushes logging and the standard streams, and calls ``os._exit`` with the session's exit
status. What is skipped: only the interpreter's finalization (module teardown and the C
libraries' static destructors). A crash during the tests is not hidden: it kills the process
before this handler runs.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import TYPE_CHECKING

from raypipe.exiting import flush_standard_streams

if TYPE_CHECKING:
    import pytest

_session: pytest.Session | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _session
    _session = session


def _exit_with_session_status() -> None:
    """The last ``atexit`` handler of a pytest process (see the module docstring)."""
    if _session is None:  # pytest never started a session (a usage error): exit as usual
        return
    status = int(_session.exitstatus)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    logging.shutdown()
    flush_standard_streams()
    os._exit(status)


# Registered at import, before the session starts: atexit runs handlers last in, first out,
# so this one runs after those registered during the session.
atexit.register(_exit_with_session_status)
