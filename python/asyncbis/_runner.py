"""run() and Runner: a real event loop whose tasks are asyncbis tasks in a root task group.

The loop is never wrapped: asyncbis puts its task machinery on the loop object itself (a task
factory, or the patched ``BaseEventLoop.create_task`` after patch_asyncio()), so every future
(sockets, executors, subprocesses, async-generator finalisers) belongs to the one loop, and any
asyncio loop works (stock, uvloop).

A run combines: the root task group (_root_group.py), the task-creation policy installed on
the loop (_task_factory.py), sniffio's answer (_sniffio.py), and shutdown by signal
(_signals.py: the first SIGINT or SIGTERM cancels the root group, the second is a hard
shutdown).
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from . import _root_group, _signals, _sniffio, _stock, _task_factory, _timeouts, switches

T = TypeVar("T")


async def _await(awaitable: Any) -> Any:
    return await awaitable


class Runner(_stock.Runner):
    """``asyncio.Runner`` with a root task group around each ``run()`` (switch root-task-group)
    and graceful signal handling (switch graceful-signals); see the module docstring.

    Built on the stock class (3.11-3.13 share its private layout: ``_loop``, ``_context``,
    ``_interrupt_count``), so close(), get_loop() and the context manager are stock.
    """

    def __init__(
        self,
        *,
        debug: bool | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        super().__init__(debug=debug, loop_factory=loop_factory)
        self._root_task: asyncio.Future | None = None
        self._hard_shutdown = False

    def close(self) -> None:
        """Shut down and close the loop (stock); after a hard shutdown (second signal), close
        it without waiting for tasks that are still finalising.

        With structured-exit=loop, first the loop's last run: its root group adopts the tasks
        earlier runs handed over and waits for them (loop-cancel: cancels them, then waits); a
        failure among them is raised here, once the loop is closed."""
        loop = self._loop  # type: ignore[attr-defined]
        try:
            if (
                not self._hard_shutdown
                and loop is not None
                and not loop.is_closed()
                and asyncio.events._get_running_loop() is None
                and _root_group.has_leftovers(loop)
            ):
                main = _root_group.root_main(loop, _root_group.leftovers_done(), last=True)
                self._run_main(main, None)
        finally:
            self._close()
            if loop is not None:
                _root_group.forget_leftovers(loop)

    def _close(self) -> None:
        if not self._hard_shutdown:
            return super().close()
        loop = self._loop  # type: ignore[attr-defined]
        if loop is None:
            return None
        try:
            for t in asyncio.all_tasks(loop):
                t._log_destroy_pending = False  # type: ignore[attr-defined]
        finally:
            if self._set_event_loop:  # type: ignore[attr-defined]
                asyncio.set_event_loop(None)
            loop.close()
            self._loop = None
            # the stock Runner's private state (3.11-3.13): closed
            self._state = asyncio.runners._State.CLOSED  # type: ignore[attr-defined]
        return None

    def _lazy_init(self) -> None:
        super()._lazy_init()  # type: ignore[misc]
        _task_factory.install_on_loop(self._loop)  # type: ignore[attr-defined]

    def run(self, coro: Coroutine[Any, Any, T], *, context: Any = None) -> T:
        """Run ``coro`` in the embedded loop, inside a fresh root task group; return its result."""
        if sys.version_info < (3, 14) and not asyncio.iscoroutine(coro):
            raise ValueError(f"a coroutine was expected, got {coro!r}")
        if asyncio.events._get_running_loop() is not None:
            raise RuntimeError("Runner.run() cannot be called from a running event loop")
        self._lazy_init()
        if not asyncio.iscoroutine(coro):
            # 3.14+ (as stock): any awaitable runs, wrapped in a coroutine; else TypeError.
            if not inspect.isawaitable(coro):
                raise TypeError("An asyncio.Future, a coroutine or an awaitable is required")
            coro = _await(coro)
        main: Coroutine[Any, Any, T] = coro
        if switches.enabled("root-task-group"):
            main = _root_group.root_main(self._loop, coro)  # type: ignore[attr-defined]
        return self._run_main(main, context)

    def _run_main(self, main: Coroutine[Any, Any, T], context: Any) -> T:
        with _sniffio.sniffio_name(), _timeouts.stock_timeouts_routed():
            if not switches.enabled("graceful-signals"):
                return super().run(main, context=context)
            return self._run_graceful(main, context)

    # -- graceful shutdown (the handlers: _signals.py) ------------------------------------------
    def _run_graceful(self, main: Coroutine[Any, Any, T], context: Any) -> T:
        loop: asyncio.AbstractEventLoop = self._loop  # type: ignore[attr-defined]
        if context is None:
            context = self._context  # type: ignore[attr-defined]
        task = loop.create_task(main, context=context)
        self._root_task = task
        signals = _signals.ShutdownSignals(loop, self._cancel_root, self._on_second_signal)
        signals.install()
        try:
            try:
                result = loop.run_until_complete(task)
            except BaseException as exc:
                if signals.received == signal.SIGINT and isinstance(exc, asyncio.CancelledError):
                    raise KeyboardInterrupt() from None
                raise
            if signals.received == signal.SIGINT:
                raise KeyboardInterrupt()
            return result
        finally:
            signals.restore()
            self._root_task = None
            if signals.received == signal.SIGTERM:
                _signals.die_by_sigterm(self.close)

    def _cancel_root(self, signum: int) -> None:
        reason = f"{signal.Signals(signum).name} received"
        group = _root_group._root_groups.get(self._loop)  # type: ignore[attr-defined]
        if group is not None:
            group.cancel(reason)
        elif self._root_task is not None:
            self._root_task.cancel(reason)

    def _on_second_signal(self, signum: int) -> None:
        """Hard shutdown: close() stops waiting for tasks; a SIGTERM ends the process now."""
        self._hard_shutdown = True
        if signum == signal.SIGTERM:
            _signals.die_by_sigterm(self.close)


def run(
    main: Coroutine[Any, Any, T],
    *,
    debug: bool | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run ``main`` in a new event loop inside a root task group and return its result.

    Every task created outside a group joins the root group; a failing background task cancels
    it and its exception reaches the caller. run() returns when main *and* every background
    task are done (switch structured-exit). The first SIGINT/SIGTERM cancels the root group
    (shielded finalisers still run); a graceful SIGINT ends in KeyboardInterrupt, a graceful
    SIGTERM ends the process as SIGTERM would, after cleanup; a second signal is a hard
    shutdown (switch graceful-signals). ``loop_factory`` takes any asyncio loop factory
    (``asyncio.new_event_loop``, ``uvloop.new_event_loop``, ...).
    """
    if asyncio.events._get_running_loop() is not None:
        if asyncio.iscoroutine(main):
            main.close()
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    with Runner(debug=debug, loop_factory=loop_factory) as runner:
        return runner.run(main)
