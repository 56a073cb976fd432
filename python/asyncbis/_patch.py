"""patch_asyncio(): make existing asyncio code run on asyncbis.

Names are replaced where asyncio code looks them up at call time, not only on the ``asyncio``
package: stock ``wait_for`` reads ``timeouts.timeout`` (3.12+), ``asyncio.run`` reads
``runners.Runner``, every loop's ``create_task`` reads ``tasks.Task``, unittest's
IsolatedAsyncioTestCase / pytest-asyncio / AnyIO use ``asyncio.Runner``. The loop classes are
not wrapped: ``BaseEventLoop.create_task`` makes asyncbis tasks (in the root group when there is
one), ``set_task_factory`` enforces the no-task-factory switch (stock's eager factory becomes
asyncbis's eager one), ``run_until_complete(coro)`` runs the coroutine in a root task group
(switch root-task-group), and ``close()`` lets go of the tasks its runs handed over to the
next run (structured-exit=loop).
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import asyncio.events
import asyncio.runners
import asyncio.taskgroups
import asyncio.tasks
import asyncio.timeouts
import sys
from typing import Any

from . import (
    _core,
    _loops,
    _root_group,
    _runner,
    _stats,
    _stock,
    _task_factory,
    _timeouts,
    switches,
)
from ._task import Task
from ._taskgroup import TaskGroup

_patched = False


def is_patched() -> bool:
    return _patched


# 3.14 made loop.create_task(coro, **kwargs) pass exactly the keywords it is given on to the task
# factory (a factory taking (loop, coro) alone works) and added eager_start=.
_CREATE_TASK_KWARGS = (
    {"name", "context", "eager_start"} if sys.version_info >= (3, 14) else {"name", "context"}
)


def _create_task(self: Any, coro: Any, **kwargs: Any) -> Any:
    # Stock's create_task() instantiates whatever `asyncio.tasks.Task` is at call time. Code
    # that puts another class there after patching (CPython's test_graph and
    # test_free_threading install `_CTask`/`_PyTask`) gets that class, as with stock asyncio.
    # A run's root task (asyncbis.Runner's root_main) is always an asyncbis task: it hosts the
    # root group. Neither an installed task class nor a task factory the loop was given (with
    # no-task-factory off: 3.14's test_taskgroups sets stock's eager_task_factory in its
    # loop_factory) applies to it.
    root = getattr(coro, "cr_code", None) is _root_group.root_main.__code__
    if not root and asyncio.tasks.Task is not Task and self._task_factory is None:
        return _stock.loop_create_task(self, coro, **kwargs)
    if root or self._task_factory is None or _task_factory.is_own_factory(self._task_factory):
        unknown = sorted(set(kwargs) - _CREATE_TASK_KWARGS)
        if unknown:
            raise TypeError(f"create_task() got an unexpected keyword argument {unknown[0]!r}")
        self._check_closed()
        return _task_factory.new_task(
            self, coro, kwargs.get("name"), kwargs.get("context"), kwargs.get("eager_start")
        )
    return _stock.loop_create_task(self, coro, **kwargs)


def _set_task_factory(self: Any, factory: Any) -> None:
    if switches.enabled("no-task-factory"):
        factory = _task_factory.accepted_task_factory(self, factory)
    _stock.loop_set_task_factory(self, factory)


def _run_until_complete(self: Any, future: Any) -> Any:
    if (
        asyncio.iscoroutine(future)
        and switches.enabled("root-task-group")
        # Another task class installed as asyncio.tasks.Task (see _create_task): stock's way,
        # a task of that class, not an asyncbis root task.
        and asyncio.tasks.Task is Task
        and _root_group.root_group(self) is None
        and not _task_factory.runner_managed(self)
        and not self.is_running()
    ):
        # Stock's checks first ("Event loop is closed", "another loop is running"), before the
        # coroutine is scheduled: a refused coroutine must not run the next time the loop runs.
        self._check_closed()
        self._check_running()
        if _stats.counting:
            _stats.count_task(self)
        task = _core.spawn(self, _root_group.root_main(self, future))
        task._log_destroy_pending = False  # as stock does for the task it makes
        try:
            return _stock.loop_run_until_complete(self, task)
        except BaseException:
            # Like stock for the task it makes: the caller has no access to it, so consume
            # its exception (no "exception was never retrieved" log).
            if task.done() and not task.cancelled():
                task.exception()
            raise
    return _stock.loop_run_until_complete(self, future)


def _close(self: Any) -> None:
    _stock.loop_close(self)
    # Closed: no run will adopt the tasks its runs handed over (structured-exit=loop); they stay
    # pending as stock leaves a closed loop's tasks.
    _root_group.forget_leftovers(self)


def _names() -> list[tuple[Any, str, Any]]:
    """(module or class, attribute, asyncbis value) for every patched name."""
    taskgroup = TaskGroup if switches.enabled("scoped-taskgroups") else _stock.TaskGroup
    out: list[tuple[Any, str, Any]] = []
    for mod in (asyncio, asyncio.tasks):
        out += [
            (mod, "Task", Task),
            (mod, "shield", _timeouts.shield),
            (mod, "wait_for", _timeouts.wait_for),
        ]
    for mod in (asyncio, asyncio.timeouts):
        out += [
            (mod, "timeout", _timeouts.timeout),
            (mod, "timeout_at", _timeouts.timeout_at),
            (mod, "Timeout", _timeouts.Timeout),
        ]
    for mod in (asyncio, asyncio.taskgroups):
        out.append((mod, "TaskGroup", taskgroup))
    for mod in (asyncio, asyncio.runners):
        out += [(mod, "run", _runner.run), (mod, "Runner", _runner.Runner)]
    out += [
        (asyncio, "get_event_loop", _loops.get_event_loop),
        (asyncio, "get_event_loop_policy", _loops.get_event_loop_policy),
        (asyncio, "set_event_loop_policy", _loops.set_event_loop_policy),
        (asyncio.base_events.BaseEventLoop, "create_task", _create_task),
        (asyncio.base_events.BaseEventLoop, "set_task_factory", _set_task_factory),
        (asyncio.base_events.BaseEventLoop, "run_until_complete", _run_until_complete),
        (asyncio.base_events.BaseEventLoop, "close", _close),
    ]
    return out


_saved: list[tuple[Any, str, Any]] = []


def patch_asyncio() -> None:
    """Make asyncio run on asyncbis: asyncio.run/Runner/new_event_loop()+run_until_complete,
    IsolatedAsyncioTestCase and pytest-asyncio all get asyncbis tasks and a root task group;
    asyncio.Task, TaskGroup, shield, timeout, timeout_at, Timeout and wait_for become the
    asyncbis ones. Idempotent; unpatch_asyncio() undoes it."""
    global _patched
    if _patched:
        return
    for owner, attr, value in _names():
        _saved.append((owner, attr, owner.__dict__.get(attr, _MISSING)))
        setattr(owner, attr, value)
    _patched = True


def rebind_imported() -> int:
    """After patch_asyncio(): rebind module globals that already hold a stock object under
    the same name (``from asyncio import Runner`` run before patching, as pytest plugins
    loaded ahead of ours do). Returns how many were rebound; unpatch_asyncio() undoes them."""
    if not _patched:
        return 0
    replace: dict[tuple[str, int], Any] = {}
    for owner, attr, value in _names():
        if isinstance(owner, type):
            continue
        stock = getattr(_stock, attr, None)
        if stock is not None and stock is not value:
            replace[(attr, id(stock))] = value
    count = 0
    for name, mod in list(sys.modules.items()):
        if mod is None or name == "asyncio" or name.startswith(("asyncio.", "asyncbis")):
            continue
        try:
            ns = vars(mod)
        except TypeError:
            continue
        for (attr, stock_id), value in replace.items():
            current = ns.get(attr)
            if current is not None and id(current) == stock_id:
                _saved.append((mod, attr, current))
                setattr(mod, attr, value)
                count += 1
    return count


def unpatch_asyncio() -> None:
    """Undo patch_asyncio() (for tests). Tasks already created stay asyncbis tasks."""
    global _patched
    if not _patched:
        return
    while _saved:
        owner, attr, value = _saved.pop()
        value = _timeouts.unrouted(value)
        if value is _MISSING:
            delattr(owner, attr)
        else:
            setattr(owner, attr, value)
    _patched = False


def _refresh() -> None:
    """Switch values changed: re-install the names whose choice is made at patch time."""
    if _patched:
        taskgroup = TaskGroup if switches.enabled("scoped-taskgroups") else _stock.TaskGroup
        asyncio.TaskGroup = taskgroup  # type: ignore[misc]
        asyncio.taskgroups.TaskGroup = taskgroup  # type: ignore[misc]


class _Missing:
    pass


_MISSING = _Missing()
switches._on_change(_refresh)
