"""run() and Runner: a real event loop whose tasks are asyncbis tasks in a root task group.

The loop is never wrapped: asyncbis installs its task factory on the loop object itself, so
every future (sockets, executors, subprocesses) belongs to the one loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from . import _core
from ._taskgroup import TaskGroup

T = TypeVar("T")

# loop -> its root task group (while the runner's main is running)
_root_groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TaskGroup] = (
    weakref.WeakKeyDictionary()
)


def root_group(loop: asyncio.AbstractEventLoop) -> TaskGroup | None:
    """The root task group of ``loop``, or None outside asyncbis.run()/Runner."""
    try:
        return _root_groups.get(loop)
    except TypeError:  # a loop type without weakref support
        return None


def spawn_ungrouped(
    task: asyncio.Future, coro: Any, loop: asyncio.AbstractEventLoop, *, name=None, context=None
) -> None:
    """Initialise a directly constructed Task (``asyncbis.Task(coro)``)."""
    _core._init_task(task, coro, loop, name, context)


def task_factory(
    loop: asyncio.AbstractEventLoop, coro: Any, *, name=None, context=None, eager_start=None
) -> asyncio.Future:
    """The loop's task factory: tasks created outside a group join the root group."""
    group = root_group(loop)
    if group is not None and group.accepts_tasks:
        return group.create_task(coro, name=name, context=context)
    return _core.spawn(loop, coro, name=name, context=context)


class Runner:
    """Like ``asyncio.Runner``, with a root task group around ``main``."""

    def __init__(
        self,
        *,
        debug: bool | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        self._debug = debug
        self._loop_factory = loop_factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._context: contextvars.Context | None = None

    def __enter__(self) -> Runner:
        self._lazy_init()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        self._lazy_init()
        assert self._loop is not None
        return self._loop

    def _lazy_init(self) -> None:
        if self._closed:
            raise RuntimeError("Runner is closed")
        if self._loop is not None:
            return
        if self._loop_factory is None:
            self._loop = asyncio.new_event_loop()
        else:
            self._loop = self._loop_factory()
        if self._debug is not None:
            self._loop.set_debug(self._debug)
        self._loop.set_task_factory(task_factory)
        self._context = contextvars.copy_context()

    def run(self, coro: Coroutine[Any, Any, T], *, context: contextvars.Context | None = None) -> T:
        if not asyncio.iscoroutine(coro):
            raise ValueError(f"a coroutine was expected, got {coro!r}")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coro.close()
            raise RuntimeError("Runner.run() cannot be called from a running event loop")
        self._lazy_init()
        loop = self._loop
        assert loop is not None
        if context is None:
            context = self._context
        root = _core.spawn(loop, _root_main(loop, coro), context=context)
        return loop.run_until_complete(root)

    def close(self) -> None:
        if self._closed:
            return
        try:
            loop = self._loop
            if loop is None:
                return
            try:
                _cancel_leftovers(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                self._loop = None
        finally:
            self._closed = True


async def _root_main(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    group = TaskGroup()
    main_exc: BaseException | None = None
    try:
        async with group:
            _root_groups[loop] = group
            try:
                return await coro
            except BaseException as exc:
                main_exc = exc
                raise
    except BaseExceptionGroup as eg:
        # main's own exception, alone, propagates unchanged (as asyncio.run and trio.run do)
        if main_exc is not None and len(eg.exceptions) == 1 and eg.exceptions[0] is main_exc:
            raise main_exc from None
        raise
    finally:
        _root_groups.pop(loop, None)


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not pending:
        return
    for t in pending:
        t.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def run(
    main: Coroutine[Any, Any, T],
    *,
    debug: bool | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run ``main`` in a new loop whose tasks all belong to task groups; return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        if asyncio.iscoroutine(main):
            main.close()
        raise RuntimeError("asyncbis.run() cannot be called from a running event loop")
    with Runner(debug=debug, loop_factory=loop_factory) as runner:
        return runner.run(main)
