"""TaskGroup: the native group plus ``start()`` (Trio/AnyIO ``task_status`` protocol)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from . import _core


class TaskStatus:
    """Handed to a task started with ``TaskGroup.start()``; call ``started(value)`` once."""

    __slots__ = ("_task", "_starter", "_called", "_value", "_reparented", "_waiters")

    def __init__(self, starter: Any) -> None:
        self._task: Any = None
        self._starter = starter  # the TaskCore of the task that called start()
        self._called = False
        self._value: Any = None
        self._reparented = False
        self._waiters: list[asyncio.Future] = []

    def started(self, value: Any = None) -> None:
        if self._called:
            raise RuntimeError("task_status.started() was called twice for the same task")
        self._called = True
        self._value = value
        # Trio: if the starter is cancelled by now, the child is not handed over to the group;
        # it stays bound to the starter, which waits for it and shares its fate.
        if self._starter is None or not self._starter.effectively_cancelled:
            self._reparented = True
            # An ordinary member of the group from now on. `_task` is not set yet when the
            # child calls started() inside its eager first step (start() has not got the task
            # back from the spawn): the child is the running task then.
            core = self._task._core if self._task is not None else _core.current_task_core()
            if core is not None:
                core.starting = False
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def _settled(self) -> None:
        """Wait until the child called started() or finished."""
        w = asyncio.get_running_loop().create_future()
        self._waiters.append(w)
        await w


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
        the group); returning without calling ``started()`` raises RuntimeError. If the caller
        is cancelled before the hand-over, the child is cancelled with it and the caller waits
        for it: its error, its cancellation or (if it finished after ``started()``) the value.
        """
        status = TaskStatus(_core.current_task_core())
        task = self._spawn_starting(func(*args, task_status=status), name)
        status._task = task
        task.add_done_callback(lambda _t: status._wake())
        try:
            if not status._called and not task.done():
                await status._settled()
        except asyncio.CancelledError:
            if status._reparented:
                # Handed over first: return the value; the cancellation is delivered again at
                # the caller's next yield point (level cancellation).
                return status._value
            if await self._share_fate(task, status):
                raise  # the child ended cancelled: so does the caller
            return status._value
        if status._reparented:
            return status._value
        if status._called:  # started() while the caller was cancelled: share the child's fate
            if await self._share_fate(task, status):
                await _core.checkpoint_if_cancelled()  # delivers the caller's cancellation
                raise asyncio.CancelledError("the started task was cancelled")
            return status._value
        if task.cancelled():
            raise RuntimeError("the task was cancelled before calling task_status.started()")
        _raise_start_failure(task)

    @staticmethod
    async def _share_fate(task: asyncio.Future, status: TaskStatus) -> bool:
        """The caller was cancelled before the hand-over: cancel the child and wait for it.
        True if it ended cancelled; raises its error, or RuntimeError if it returned without
        started(); False if it finished normally after started() (the value stands)."""
        if not task.done():
            task.cancel()
            with _core.CancelScope(shield=True):
                while not task.done():
                    await status._settled()
        if task.cancelled():
            return True
        if task.exception() is not None or not status._called:
            _raise_start_failure(task)
        return False


def _raise_start_failure(task: asyncio.Future) -> None:
    exc = task.exception()
    if exc is not None:
        raise exc from None
    raise RuntimeError("the task exited without calling task_status.started()")
