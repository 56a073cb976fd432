"""The AnyIO backend "asyncbis": AnyIO's API on asyncbis's native cancel scopes and task groups.

``anyio.run(main, backend="asyncbis")`` (after ``import asyncbis``) and AnyIO code running under
``asyncbis.run()`` (sniffio then reports "asyncbis") use this module, which AnyIO imports as
``anyio._backends._asyncbis`` (see ``_anyio_alias``).

What is asyncbis's own here:

- ``CancelScope`` *is* ``asyncbis._core.CancelScope`` (also an ``anyio.CancelScope``): level
  cancellation, shields and deadlines come from the Rust scope tree, not from AnyIO's
  ``Task.cancel()``/``uncancel()`` re-cancel loop.
- ``TaskGroup`` *is* ``asyncbis._core.TaskGroup`` with AnyIO's spawning API on top
  (``create_task``/``start_soon`` returning ``anyio.TaskHandle``, ``start`` with
  ``task_status``).
- checkpoints, ``current_effective_deadline()``, ``run()`` (``asyncbis.Runner``: root task group,
  graceful signals), worker-thread cancellation checks, task introspection.

Everything else (sockets, streams, subprocesses, synchronisation primitives, the thread pool,
the pytest runner) is AnyIO's asyncio backend code, run from a private instance of that module
whose names for the cancel scope, the task group, the backend class and the runner are rebound
to the ones here; so its internal ``CancelScope(shield=True)`` blocks and checkpoints are
asyncbis scopes too, while AnyIO's own asyncio backend stays untouched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import math
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from contextvars import Context, copy_context
from functools import partial
from types import ModuleType
from typing import Any

import anyio

if not hasattr(anyio, "TaskHandle"):  # pragma: no cover - depends on the installed AnyIO
    raise ImportError(
        "the asyncbis AnyIO backend needs anyio >= 4.14 (tested with 4.16.0); "
        "upgrade with: pip install -U anyio"
    )

import anyio._backends._asyncio as _stock_backend
from anyio import RunFinishedError, TaskHandle
from anyio._core._eventloop import set_current_async_library, threadlocals
from anyio._core._tasks import CancelScope as _AnyIOCancelScope
from anyio.abc import TaskGroup as _AnyIOTaskGroup
from anyio.abc._tasks import call_for_coroutine, get_callable_name, get_coro_name

from . import _core
from ._runner import Runner

#: The backend name (``anyio.run(..., backend=NAME)``, sniffio's answer inside asyncbis loops).
NAME = "asyncbis"

_BASE_NAME = "anyio._backends._asyncbis_base"


def _load_base() -> ModuleType:
    """A private, separately executed instance of AnyIO's asyncio backend module."""
    existing = sys.modules.get(_BASE_NAME)
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location(_BASE_NAME, _stock_backend.__file__)
    if spec is None or spec.loader is None:  # pragma: no cover - anyio is a normal package
        raise ImportError(f"cannot load AnyIO's asyncio backend from {_stock_backend.__file__}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_BASE_NAME] = module  # dataclasses in it look their module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_BASE_NAME]
        raise
    return module


_base = _load_base()
_TaskState = _base.TaskState
_task_states = _base._task_states  # task -> (parent id, None): only for get_current_task()


# -- cancel scopes ----------------------------------------------------------------------------
def _cancel_message(scope: object, reason: object) -> str:
    """AnyIO's cancellation message: which scope, cancelled by which task, and why."""
    message = f"Cancelled via cancel scope {id(scope):x}"
    task = asyncio.current_task()
    if task is not None:
        message += f" by {task}"
    if reason:
        message += f"; reason: {reason}"
    return message


_DEADLINE = "deadline exceeded"
_native_deadline = _core.CancelScope.deadline


class CancelScope(_core.CancelScope, _AnyIOCancelScope):
    """``anyio.CancelScope`` on the backend "asyncbis": the native asyncbis cancel scope.

    (``_core.CancelScope.__new__`` comes first in the MRO, so ``anyio.CancelScope.__new__``,
    which dispatches to the current backend, is not involved.) Only the cancellation messages
    are AnyIO's: "Cancelled via cancel scope <id> by <task>; reason: <reason>", with the reason
    "deadline exceeded" when the deadline expired.
    """

    def cancel(self, reason: str | None = None) -> None:
        if self.cancel_called:
            return
        _core.CancelScope.cancel(self, _cancel_message(self, reason))

    def _deadline_reached(self) -> None:
        # The loop's timer calls this when the deadline passes.
        if self.active and not self.cancel_called:
            _core.CancelScope.cancel(self, _cancel_message(self, _DEADLINE))
        _core.CancelScope._deadline_reached(self)

    def _expire_if_past(self, deadline: float) -> None:
        if deadline != math.inf and not self.cancel_called:
            try:
                now = asyncio.get_running_loop().time()
            except RuntimeError:
                return
            if deadline <= now:
                _core.CancelScope.cancel(self, _cancel_message(self, _DEADLINE))

    def __enter__(self) -> CancelScope:
        if not self.active:
            self._expire_if_past(_native_deadline.__get__(self))
        return _core.CancelScope.__enter__(self)

    def __exit__(self, exc_type: Any = None, exc: Any = None, tb: Any = None) -> bool:
        if not (isinstance(exc, BaseExceptionGroup) and self.cancel_called):
            return _core.CancelScope.__exit__(self, exc_type, exc, tb)
        # AnyIO filters this scope's own cancellations out of exception groups.
        prefix = f"Cancelled via cancel scope {id(self):x}"

        def ours(e: BaseException) -> bool:
            return (
                isinstance(e, asyncio.CancelledError)
                and bool(e.args)
                and isinstance(e.args[0], str)
                and e.args[0].startswith(prefix)
            )

        matched, rest = exc.split(ours)
        if matched is None:
            return _core.CancelScope.__exit__(self, exc_type, exc, tb)
        if rest is None:
            leaf = matched
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return _core.CancelScope.__exit__(self, type(leaf), leaf, tb)
        _core.CancelScope.__exit__(self, type(rest), rest, tb)
        context = exc.__context__
        try:
            raise rest
        finally:
            rest.__context__ = context
            del rest, exc, matched

    @property  # type: ignore[override]
    def deadline(self) -> float:
        return _native_deadline.__get__(self)

    @deadline.setter
    def deadline(self, value: float) -> None:
        _native_deadline.__set__(self, value)
        if self.active:
            self._expire_if_past(_native_deadline.__get__(self))


# -- task groups ------------------------------------------------------------------------------
_NOT_ACTIVE = "This task group is not active; no new tasks can be started."


_SPAWNING: Any = object()


class _TaskStatus(anyio.abc.TaskStatus):
    """``task_status`` handed to a task started with ``TaskGroup.start()``."""

    __slots__ = ("_future", "_parent_id", "_task")

    def __init__(self, future: asyncio.Future[Any], parent_id: int | None) -> None:
        self._future = future
        self._parent_id = parent_id
        self._task: Any = None

    def started(self, value: Any = None) -> None:
        if self._future.done():
            if self._future.cancelled():
                return  # the caller of start() was cancelled: nothing is waiting
            raise RuntimeError("called 'started' twice on the same task status")
        task = self._task
        if task is _SPAWNING:  # started() during the child's eager first step: it is running
            task = asyncio.current_task()
        if task is not None:
            core = getattr(task, "_core", None)
            if core is not None:
                core.starting = False  # from now on, an ordinary member of the group
            state = _task_states.get(task)
            if state is not None:
                state.parent_id = self._parent_id
        self._future.set_result(value)


def _start_child_done(future: asyncio.Future[Any], task: asyncio.Future[Any]) -> None:
    """A child of ``start()`` finished: report to the starter if it never called started()."""
    if future.done():
        return
    if task.cancelled():
        future.cancel()
    elif (exc := task.exception()) is not None:
        future.set_exception(exc)
    else:
        future.set_exception(RuntimeError("Child exited without calling task_status.started()"))


class TaskGroup(_core.TaskGroup, _AnyIOTaskGroup):
    """``anyio.create_task_group()`` on the backend "asyncbis": the native asyncbis task group.

    A failing child cancels the group; the group raises a ``BaseExceptionGroup`` holding every
    child failure and the body's own exception (AnyIO's contract: a body exception is grouped
    too). A lone cancellation from outside leaves as ``CancelledError``.
    """

    _host_id: int | None = None
    _entered = False

    def __aenter__(self) -> Any:
        if self._entered:
            raise RuntimeError("TaskGroup cannot be entered more than once")
        self._entered = True
        host = asyncio.current_task()
        self._host_id = id(host) if host is not None else None
        return _core.TaskGroup.__aenter__(self)

    def cancel(self, reason: str | None = None) -> None:
        if not self.cancel_scope.cancel_called:
            self.cancel_scope.cancel(_cancel_message(self.cancel_scope, reason))

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            return await self._exit(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            group.__suppress_context__ = True  # AnyIO raises its groups "from None"
            raise
        finally:
            del exc, tb

    async def _exit(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        waited = self.live_tasks > 0
        if exc is None or isinstance(exc, asyncio.CancelledError):
            caught = await _core.TaskGroup.__aexit__(self, exc_type, exc, tb)
            if waited and exc is None:
                # AnyIO (and Trio): waiting for the children is a cancel point, so a
                # cancellation of an enclosing scope that arrived meanwhile is raised here.
                await _core.checkpoint_if_cancelled()
            return caught
        try:
            if await _core.TaskGroup.__aexit__(self, exc_type, exc, tb):
                return True
        except BaseException as raised:
            if raised is not exc:
                raise
            del raised
        # The body's own exception, with no child failure: AnyIO raises it grouped.
        try:
            raise BaseExceptionGroup("unhandled errors in a TaskGroup", [exc])
        finally:
            del exc, tb  # no frame keeps the exception alive (reference cycles)

    def create_task(
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: object = None,
        context: Context | None = None,
    ) -> TaskHandle[Any]:
        if not isinstance(coro, Coroutine):
            raise TypeError(f"expected a coroutine, got {coro.__class__.__qualname__}")
        if not self.accepts_tasks:
            coro.close()
            raise RuntimeError(_NOT_ACTIVE)
        handle: TaskHandle[Any] = TaskHandle(coro, get_coro_name(coro, name))
        wrapper = handle._run_coro()
        try:
            task = _core.TaskGroup.create_task(self, wrapper, name=handle.name, context=context)
        except BaseException:
            wrapper.close()
            coro.close()
            raise
        _task_states[task] = _TaskState(self._host_id, None)
        return handle

    async def start(
        self,
        func: Callable[..., Coroutine[Any, Any, Any]],
        *args: object,
        name: object = None,
        return_handle: bool = False,
    ) -> Any:
        if not self.accepts_tasks:
            raise RuntimeError(_NOT_ACTIVE)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        caller = asyncio.current_task()
        status = _TaskStatus(future, self._host_id)
        coro = call_for_coroutine(func, args, task_status=status)
        handle: TaskHandle[Any] = TaskHandle(coro, get_callable_name(func, name))
        wrapper = handle._run_coro()
        status._task = _SPAWNING
        try:
            task = self._spawn_starting(wrapper, handle.name)
        except BaseException:
            wrapper.close()
            coro.close()
            raise
        status._task = task
        _task_states[task] = _TaskState(id(caller) if caller is not None else None, None)
        if future.done() and not future.cancelled() and future.exception() is None:
            task._core.starting = False  # started() ran during an eager first step
        task.add_done_callback(partial(_start_child_done, future))
        try:
            try:
                value = await future
            except asyncio.CancelledError:
                # started() already delivered the value: return it. The cancellation came from
                # a scope (level-triggered) and is raised again at the caller's next yield.
                core = _core.current_task_core()
                if not (
                    future.done()
                    and not future.cancelled()
                    and future.exception() is None
                    and core is not None
                    and core.effectively_cancelled
                ):
                    raise
                value = future.result()
        except BaseException:
            if handle.status is TaskHandle.Status.PENDING:
                # The child has not started: it goes too, and start() returns once it is gone.
                handle.cancel()
                with _core.CancelScope(shield=True):
                    await handle.wait()
            raise
        if return_handle:
            handle._start_value = value
            return handle
        return value


# -- worker threads ---------------------------------------------------------------------------
class _ThreadCancelled(asyncio.CancelledError):
    """Raised by ``from_thread.check_cancelled()`` in a worker whose caller is cancelled."""


class _CallerState:
    """What a worker thread sees of the task that called ``to_thread.run_sync()``: a native
    task group opened around the call, so ``from_thread.run()`` tasks join the caller's scope
    tree (and are cancelled with it), and whose scope tells the worker whether the caller is
    cancelled (from outside the shield that keeps a non-abandoning call waiting)."""

    __slots__ = ("abandoned", "group", "spawn_here")

    def __init__(self, group: _core.TaskGroup, spawn_here: bool) -> None:
        self.group = group
        self.abandoned = False
        # An abandoning call does not wait for from_thread.run() tasks (AnyIO lets them run on)
        self.spawn_here = spawn_here

    @property
    def cancelled(self) -> bool:
        return self.abandoned or self.group.cancel_scope.effectively_cancelled


class _TaskInfo(_base.AsyncIOTaskInfo):
    def has_pending_cancellation(self) -> bool:
        task = self._task()
        core = getattr(task, "_core", None)
        if core is None:
            return False
        return bool(core.effectively_cancelled or core.must_cancel)


# -- the backend --------------------------------------------------------------------------------
_RUN_OPTIONS = ("debug", "loop_factory", "use_uvloop")


class AsyncbisBackend(_base.AsyncIOBackend):
    """AnyIO's backend class for "asyncbis" (AnyIO's asyncio backend with native scopes)."""

    @classmethod
    def run(
        cls,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> Any:
        unknown = sorted(set(options) - set(_RUN_OPTIONS))
        if unknown:
            raise TypeError(
                f"unknown backend option(s) for the asyncbis backend: {', '.join(unknown)}; "
                f"valid options are: {', '.join(_RUN_OPTIONS)}"
            )
        loop_factory = options.get("loop_factory")
        if loop_factory is None and options.get("use_uvloop", False):
            import uvloop

            loop_factory = uvloop.new_event_loop

        async def main() -> Any:
            task = asyncio.current_task()
            if task is not None:
                task.set_name(get_callable_name(func))
                _task_states[task] = _TaskState(None, None)
            return await func(*args, **kwargs)

        with Runner(debug=options.get("debug"), loop_factory=loop_factory) as runner:
            return runner.run(main())

    # -- cancellation ------------------------------------------------------------------------
    @classmethod
    async def checkpoint(cls) -> None:
        await _core.checkpoint()

    @classmethod
    async def checkpoint_if_cancelled(cls) -> None:
        await _core.checkpoint_if_cancelled()

    @classmethod
    async def cancel_shielded_checkpoint(cls) -> None:
        with _core.CancelScope(shield=True):
            await asyncio.sleep(0)

    @classmethod
    def create_cancel_scope(cls, *, deadline: float = math.inf, shield: bool = False) -> Any:
        return CancelScope(deadline=deadline, shield=shield)

    @classmethod
    def current_effective_deadline(cls) -> float:
        return _core.current_effective_deadline()

    @classmethod
    def create_task_group(cls) -> Any:
        return TaskGroup()

    # -- threads ---------------------------------------------------------------------------
    @classmethod
    def _worker(cls) -> Any:
        try:
            idle = _base._threadpool_idle_workers.get()
            workers = _base._threadpool_workers.get()
        except LookupError:
            idle, workers = deque(), set()
            _base._threadpool_idle_workers.set(idle)
            _base._threadpool_workers.set(workers)
        if not idle:
            root = _base.find_root_task()
            worker = _base.WorkerThread(root, workers, idle)
            worker.start()
            workers.add(worker)
            root.add_done_callback(worker.stop, context=Context())
            return worker
        worker = idle.pop()
        # Stop the workers that have been idle for too long (the oldest are at the left).
        now = cls.current_time()
        while idle and now - idle[0].idle_since >= _base.WorkerThread.MAX_IDLE_TIME:
            expired = idle.popleft()
            expired.root_task.remove_done_callback(expired.stop)
            expired.stop()
        return worker

    @classmethod
    async def run_sync_in_worker_thread(
        cls,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        abandon_on_cancel: bool = False,
        limiter: Any = None,
    ) -> Any:
        await cls.checkpoint()
        async with limiter or cls.current_default_thread_limiter():
            group = _core.TaskGroup()
            failure: BaseException | None = None
            value: Any = None
            async with group:
                caller = _CallerState(group, spawn_here=not abandon_on_cancel)
                try:
                    value = await cls._call_in_worker(func, args, abandon_on_cancel, caller)
                except (_ThreadCancelled, concurrent.futures.CancelledError) as exc:
                    # The thread noticed that we are cancelled (check_cancelled(), or a
                    # from_thread.run() call cancelled with us): raise that cancellation here,
                    # where the scope that caused it will catch it.
                    if group.cancel_scope.effectively_cancelled:
                        await _core.checkpoint()
                    failure = exc
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:
                    failure = exc  # raised below, not grouped by this internal task group
            if failure is not None:
                try:
                    raise failure
                finally:
                    failure = None
            return value

    @classmethod
    async def _call_in_worker(
        cls, func: Callable[..., Any], args: tuple[Any, ...], abandon: bool, caller: _CallerState
    ) -> Any:
        with _core.CancelScope(shield=not abandon):
            future = asyncio.get_running_loop().create_future()
            worker = cls._worker()
            context = copy_context()
            context.run(set_current_async_library, None)
            worker.queue.put_nowait((context, func, args, future, caller))
            try:
                return await future
            except _ThreadCancelled:
                raise
            except asyncio.CancelledError:
                caller.abandoned = True
                raise

    @classmethod
    def check_cancelled(cls) -> None:
        caller = getattr(threadlocals, "current_cancel_scope", None)
        if caller is not None and caller.cancelled:
            raise _ThreadCancelled("the task that started this worker thread was cancelled")

    @classmethod
    def run_async_from_thread(
        cls,
        func: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
        token: object,
    ) -> Any:
        loop = token or threadlocals.current_token.native_token
        if loop.is_closed():
            raise RunFinishedError
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        caller = getattr(threadlocals, "current_cancel_scope", None)

        async def call() -> None:
            if not result.set_running_or_notify_cancel():
                return
            try:
                value = await func(*args)
            except asyncio.CancelledError as exc:
                result.set_exception(concurrent.futures.CancelledError(str(exc)))
            except BaseException as exc:
                result.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                result.set_result(value)

        def spawn() -> None:
            # The task reports to the calling thread only: it never fails, so it cannot cancel
            # the root task group it joins.
            # In the calling task's scope tree when called from a to_thread worker (so the
            # caller's cancellation reaches it), else a task of the loop.
            if caller is not None and caller.spawn_here and caller.group.accepts_tasks:
                task = caller.group.create_task(call(), context=context)
            else:
                task = loop.create_task(call(), context=context)

            def never_ran(t: asyncio.Future[Any]) -> None:
                if not result.done():
                    result.set_exception(
                        concurrent.futures.CancelledError("the event loop cancelled the call")
                    )

            task.add_done_callback(never_ran)

        context = copy_context()
        context.run(set_current_async_library, NAME)
        try:
            loop.call_soon_threadsafe(spawn, context=context)
        except RuntimeError:
            if loop.is_closed():
                raise RunFinishedError from None
            raise
        return result.result()

    @classmethod
    def run_sync_from_thread(
        cls, func: Callable[..., Any], args: tuple[Any, ...], token: object
    ) -> Any:
        loop = token or threadlocals.current_token.native_token
        if loop.is_closed():
            raise RunFinishedError
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call() -> None:
            try:
                result.set_result(func(*args))
            except BaseException as exc:
                result.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise

        context = copy_context()
        context.run(set_current_async_library, NAME)
        loop.call_soon_threadsafe(call, context=context)
        return result.result()

    @classmethod
    def run_sync_soon(cls, func: Callable[..., Any], args: tuple[Any, ...], token: object) -> None:
        loop = token
        context = copy_context()
        context.run(set_current_async_library, NAME)
        try:
            loop.call_soon_threadsafe(partial(func, *args), context=context)  # type: ignore[attr-defined]
        except RuntimeError:
            if loop.is_closed():  # type: ignore[attr-defined]
                raise RunFinishedError from None
            raise

    # -- introspection -------------------------------------------------------------------------
    @classmethod
    def get_current_task(cls) -> Any:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("There is no task currently running")
        return _TaskInfo(task)

    @classmethod
    def get_running_tasks(cls) -> Any:
        return [_TaskInfo(task) for task in asyncio.all_tasks() if not task.done()]


# Rebind the private module's names, so its own code (streams, sockets, subprocesses, locks,
# the worker threads, the pytest runner) uses asyncbis's scopes, checkpoints and runner.
_base.CancelScope = CancelScope
_base.TaskGroup = TaskGroup
_base.AsyncIOBackend = AsyncbisBackend
_base.Runner = Runner
_base.backend_class = AsyncbisBackend

#: What AnyIO looks up in a backend module.
backend_class = AsyncbisBackend
