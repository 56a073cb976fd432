"""Activation statistics for the breakage study: how many asyncbis tasks and loops a process saw.

With ``ASYNCBIS_STATS_DIR=DIR`` (and autopatch on), every process writes ``DIR/<pid>.json`` at
exit. A run whose files all say 0 tasks was not running on asyncbis.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import weakref
from typing import Any

#: Whether this process records stats: the spawn paths test this flag before calling
#: count_task(), so with stats off a spawn pays one attribute read and no call. On with
#: ASYNCBIS_STATS_DIR (the only place write() puts a file without an explicit directory)
#: or after enable_at_exit().
counting = bool(os.environ.get("ASYNCBIS_STATS_DIR"))
# The core counts every asyncbis task (also those TaskGroup.create_task() makes); after a
# fork the child counts from where the parent was.
_task_base = 0
_loops: weakref.WeakSet[Any] = weakref.WeakSet()
_loop_ids: set[int] = set()  # loops without weakref support
_loop_count = 0
_last_loop: weakref.ref[Any] | None = None  # the loop of the last count_task() call
_written = False


def count_task(loop: Any) -> None:
    """Called (when ``counting``) for each asyncbis task the surface creates: notes its loop
    (one compare, usually; the tasks themselves are counted by the core)."""
    global _last_loop, _loop_count
    last = _last_loop
    if last is not None and last() is loop:
        return
    try:
        if loop not in _loops:
            _loops.add(loop)
            _loop_count += 1
        # Weak: a strong reference kept the last run's loop alive after the run, which stock
        # does not (anyio's test_asyncio_run_does_not_leak_event_loop failed under the study).
        _last_loop = weakref.ref(loop)
    except TypeError:
        if id(loop) not in _loop_ids:
            _loop_ids.add(id(loop))
            _loop_count += 1


def count_loop(loop: Any) -> None:
    """A loop that got the asyncbis task machinery (even if no task was created on it)."""
    global _loop_count
    try:
        if loop not in _loops:
            _loops.add(loop)
            _loop_count += 1
    except TypeError:
        if id(loop) not in _loop_ids:
            _loop_ids.add(id(loop))
            _loop_count += 1


def tasks_created() -> int:
    from . import _core

    return _core._task_count() - _task_base


def loops_seen() -> int:
    return _loop_count


def snapshot() -> dict[str, Any]:
    from . import __version__, switches

    return {
        "pid": os.getpid(),
        "tasks": tasks_created(),
        "loops": _loop_count,
        "disabled": switches.disabled(),
        "profile": switches.profile(),
        "python": ".".join(map(str, sys.version_info[:3])),
        "asyncbis": __version__,
    }


def write(directory: str | None = None) -> str | None:
    """Write DIR/<pid>.json (once per process); returns the path, or None without a directory."""
    global _written
    directory = directory or os.environ.get("ASYNCBIS_STATS_DIR")
    if not directory or _written:
        return None
    _written = True
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{os.getpid()}.json")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(snapshot(), f)
    os.replace(tmp, path)
    return path


def _reset_after_fork() -> None:
    global _loop_count, _last_loop, _written, _task_base
    from . import _core

    _task_base = _core._task_count()
    _loop_count = 0
    _last_loop = None
    _written = False
    _loops.clear()
    _loop_ids.clear()


_registered = False


def enable_at_exit() -> None:
    """Arrange for write() at interpreter exit (idempotent)."""
    global _registered, counting
    counting = True
    if _registered:
        return
    _registered = True
    atexit.register(write)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_reset_after_fork)
