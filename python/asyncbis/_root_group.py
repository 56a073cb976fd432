"""The root task group: the group ``asyncbis.run()``/``Runner`` (and, after patch_asyncio(), a
patched ``run_until_complete(coro)``) opens around ``main``, which every task created outside a
group joins (switch root-task-group)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from . import _core, switches
from ._taskgroup import TaskGroup

T = TypeVar("T")

# loop -> its root task group (while a runner's main, or a patched run_until_complete, runs)
_root_groups: dict[Any, TaskGroup] = {}


def root_group(loop: asyncio.AbstractEventLoop) -> TaskGroup | None:
    """The root task group of ``loop``, or None outside asyncbis.run()/Runner."""
    group = _root_groups.get(loop)
    if group is not None and not loop.is_running():
        # Left by a run that was interrupted before its root main could finish (a
        # KeyboardInterrupt or a test timeout's signal out of run_forever()): that group may be
        # cancelled, and tasks or a later run_until_complete() on the same loop must not join
        # it (aiohttp's suite reuses one loop: every test after a timeout got cancelled).
        del _root_groups[loop]
        return None
    return group


async def root_main(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """The root task's body: main inside the root task group."""
    # A generator its consumer lets go of stops holding the consumer in its scopes at once
    # (docs/architecture.md, "Scopes held by generators across yield").
    _core._watch_left_generators()
    group = TaskGroup()
    # Which background failures the root group acts on (root-task-group: on or unretrieved*).
    policy = switches.value("root-task-group")
    group._set_orphan_policy("on" if policy == "off" else str(policy))
    main_exc: BaseException | None = None
    try:
        async with group:
            _root_groups[loop] = group
            try:
                result = await coro
            except BaseException as exc:
                main_exc = exc
                raise
            if not switches.enabled("structured-exit"):
                # Stock asyncio.run(): leftover background tasks are cancelled when main returns.
                group.cancel("main returned (structured-exit is off)")
            return result
    except BaseExceptionGroup as eg:
        # main's own exception, alone, propagates unchanged (as asyncio.run and trio.run do)
        if main_exc is not None and len(eg.exceptions) == 1 and eg.exceptions[0] is main_exc:
            raise main_exc from None
        raise
    finally:
        # Runs cannot nest on one loop; a group registered since is a later run's (this run
        # was interrupted and resumed when the loop ran again): leave it.
        if _root_groups.get(loop) is group:
            del _root_groups[loop]
