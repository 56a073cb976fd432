"""TaskGroup: the native group plus ``start()`` (Trio/AnyIO ``task_status`` protocol)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from . import _core


class TaskStatus:
    """Handed to a task started with ``TaskGroup.start()``; call ``started(value)`` once."""

    __slots__ = ("_future", "_task", "_called")

    def __init__(self, future: asyncio.Future) -> None:
        self._future = future
        self._task: Any = None
        self._called = False

    def started(self, value: Any = None) -> None:
        if self._called:
            raise RuntimeError("task_status.started() was called twice for the same task")
        self._called = True
        if self._task is not None:
            # From now on the task is an ordinary member of the group.
            self._task._core.starting = False
        if not self._future.done():  # the starter may have been cancelled meanwhile
            self._future.set_result(value)


class TaskGroup(_core.TaskGroup):
    """Strict task group: a failing child cancels the group; all failures are raised together.

    ``async with TaskGroup() as tg: tg.create_task(coro)``. ``tg.cancel()`` cancels the body and
    every child (also children spawned later, at their first yield point).
    """

    async def start(
        self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: Any = None
    ) -> Any:
        """Start ``func(*args, task_status=...)`` in this group; wait for ``started(value)``.

        Returns the value. An exception raised before ``started()`` propagates here (not to
        the group); returning without calling ``started()`` raises RuntimeError.
        """
        loop = asyncio.get_running_loop()
        started = loop.create_future()
        status = TaskStatus(started)
        coro = func(*args, task_status=status)
        task = self._spawn_starting(coro, name)
        status._task = task

        def child_done(t: asyncio.Future) -> None:
            if started.done():
                return
            if t.cancelled():
                started.set_exception(
                    RuntimeError("the task was cancelled before calling task_status.started()")
                )
            elif t.exception() is not None:
                started.set_exception(t.exception())
            else:
                started.set_exception(
                    RuntimeError("the task exited without calling task_status.started()")
                )

        task.add_done_callback(child_done)
        try:
            return await started
        except asyncio.CancelledError:
            if started.done() and not started.cancelled() and started.exception() is None:
                # The value arrived before the cancellation: hand it over; the cancellation is
                # delivered again at the caller's next yield point (level cancellation).
                return started.result()
            if status._called:
                raise
            # The starter was cancelled before started(): the child is cancelled with it (it
            # has not joined the group yet) and whatever it raises reaches the starter.
            task.cancel()
            with _core.CancelScope(shield=True):
                await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                raise task.exception() from None
            raise
