"""asyncbis: Trio/AnyIO-style level cancellation, cancel scopes and strict task groups for
asyncio, with a Rust core.

Import the upgraded names from here (``asyncbis.TaskGroup``, ``asyncbis.timeout``, ...); every
other asyncio name is re-exported unchanged.

PYTEST_DONT_REWRITE: the activation hook (.pth) imports asyncbis before pytest starts; pytest
would otherwise warn that the plugin's package was imported too early to rewrite (and suites
that turn warnings into errors, like janus's, would not start).
"""

from __future__ import annotations

import asyncio as _asyncio
import sys as _sys
from asyncio import *  # noqa: F403  (stock asyncio for every name we do not change)

from . import (
    _anyio_alias,
    _core,  # noqa: F401  (asyncbis._core is part of the public surface)
    switches,
)
from ._core import (
    CancelScope,
    checkpoint,
    checkpoint_if_cancelled,
    current_effective_deadline,
    fail_after,
    fail_at,
    move_on_after,
    move_on_at,
)
from ._loops import get_event_loop, get_event_loop_policy, set_event_loop_policy
from ._patch import patch_asyncio, unpatch_asyncio
from ._root_group import root_group
from ._runner import Runner, run
from ._task import Task
from ._task_factory import create_task
from ._taskgroup import TaskGroup, TaskStatus
from ._timeouts import Timeout, shield, timeout, timeout_at, wait_for

if _sys.version_info >= (3, 12):
    # asyncio's name, asyncbis's factory: loop.set_task_factory(asyncbis.eager_task_factory)
    # makes eager asyncbis tasks (stock's asyncio.eager_task_factory is mapped to it as well).
    from ._task_factory import eager_task_factory  # noqa: F401

# anyio.run(..., backend="asyncbis") finds the AnyIO backend (anyio is imported only on demand)
_anyio_alias.install()

__version__ = "0.1.0"

__all__ = [  # noqa: F405
    *_asyncio.__all__,
    "CancelScope",
    "Runner",
    "Task",
    "TaskGroup",
    "TaskStatus",
    "Timeout",
    "checkpoint",
    "create_task",
    "get_event_loop",
    "get_event_loop_policy",
    "set_event_loop_policy",
    "patch_asyncio",
    "unpatch_asyncio",
    "switches",
    "wait_for",
    "checkpoint_if_cancelled",
    "current_effective_deadline",
    "fail_after",
    "fail_at",
    "move_on_after",
    "move_on_at",
    "root_group",
    "run",
    "shield",
    "timeout",
    "timeout_at",
]
