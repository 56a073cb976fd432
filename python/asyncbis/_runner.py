"""run() and Runner: a real event loop whose tasks are asyncbis tasks in a root task group.

The loop is never wrapped: asyncbis puts its task machinery on the loop object itself (a task
factory, or the patched ``BaseEventLoop.create_task`` after patch_asyncio()), so every future
(sockets, executors, subprocesses, async-generator finalisers) belongs to the one loop, and any
asyncio loop works (stock, uvloop).

Shutdown (switch ``graceful-signals``, on by default): the first SIGINT or SIGTERM cancels the
root task group, so every task sees CancelledError at its next yield point and shielded
finalisers run to completion; the second SIGINT or SIGTERM is a hard shutdown (KeyboardInterrupt
raised wherever the loop is, or death by SIGTERM). After a graceful SIGINT, run() raises
KeyboardInterrupt; after a graceful SIGTERM the runner closes its loop and the process ends the
way a SIGTERM-killed process does (the default handler is restored and the signal re-raised:
exit status -15 / 143; atexit handlers do not run, exactly as for a plain SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from . import _core, _stats, _stock, _timeouts, switches
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


def _patched_active() -> bool:
    from . import _patch

    return _patch.is_patched()


def init_direct_task(
    task: asyncio.Future,
    coro: Any,
    loop: asyncio.AbstractEventLoop,
    *,
    name=None,
    context=None,
    eager_start: bool = False,
) -> None:
    """Initialise a directly constructed Task (``asyncbis.Task(coro)``, and after
    patch_asyncio() ``asyncio.Task(coro)``): it joins the loop's root group like the tasks of
    create_task(), so that its failure is not lost (switch root-task-group). ``eager_start``
    (3.12+) runs the first step at once when the loop is running."""
    if _stats.counting:
        _stats.count_task(loop)
    group = root_group(loop)
    if group is None or not group.accepts_tasks or not switches.enabled("root-task-group"):
        group = None
    _core._init_task(task, coro, loop, name, context, eager_start=eager_start, group=group)


def new_task(
    loop: asyncio.AbstractEventLoop,
    coro: Any,
    name: Any = None,
    context: Any = None,
    eager_start: bool | None = None,
):
    """An asyncbis task on ``loop``: in the loop's root group when there is one (and the
    root-task-group switch is on), else ungrouped. ``eager_start`` None: eager when the loop's
    task factory is the eager one."""
    if _stats.counting:
        _stats.count_task(loop)
    group = root_group(loop)
    if group is not None and group.accepts_tasks and switches.enabled("root-task-group"):
        return group.create_task(coro, name=name, context=context, eager_start=eager_start)
    return _core.spawn(loop, coro, name=name, context=context, eager_start=eager_start)


def task_factory(
    loop: asyncio.AbstractEventLoop, coro: Any, *, name=None, context=None, eager_start=None
) -> asyncio.Future:
    """The loop's task factory: tasks created outside a group join the root group."""
    return new_task(loop, coro, name, context)


def _task_constructor(
    coro: Any,
    *,
    loop: asyncio.AbstractEventLoop,
    name: Any = None,
    context: Any = None,
    eager_start: bool = False,
) -> asyncio.Future:
    """A task constructor in the shape ``asyncio.create_eager_task_factory()`` expects: makes
    the task the loop's ``create_task()`` would (root group when there is one)."""
    return new_task(loop, coro, name, context, eager_start=eager_start)


if sys.version_info >= (3, 12):
    # The loop's task factory for eager tasks (what loop.set_task_factory(asyncio.
    # eager_task_factory) installs): every task of the loop, TaskGroup children included, runs
    # its first step at once, inside create_task(), when the loop is running (stock eager-task
    # semantics); a task spawned into a cancelled group still runs to its first yield point and
    # is cancelled there. Made by stock's create_eager_task_factory(), so code that recognises
    # an eager factory by its shape sees the same one: AnyIO (4.x) spawns its own tasks through
    # the factory's task constructor, lazily, to set up their task state first.
    eager_task_factory: Any = asyncio.create_eager_task_factory(_task_constructor)  # type: ignore[arg-type]
else:  # no eager tasks before 3.12

    def eager_task_factory(
        loop: asyncio.AbstractEventLoop, coro: Any, *, name=None, context=None
    ) -> asyncio.Future:
        return new_task(loop, coro, name, context)


_core._register_eager_factory(eager_task_factory)

# Factories a loop may be given while no-task-factory is on: asyncbis's own, and stock's eager
# factory (3.12+), which becomes asyncbis's eager one. Any other makes foreign tasks: refused.
_OWN_FACTORIES = (task_factory, eager_task_factory)


def _eager_factories() -> tuple[Any, ...]:
    stock_eager = getattr(asyncio, "eager_task_factory", None)
    return (eager_task_factory,) if stock_eager is None else (eager_task_factory, stock_eager)


def is_own_factory(factory: Any) -> bool:
    return any(factory is own for own in _OWN_FACTORIES)


def create_task(coro: Any, *, name: Any = None, context: Any = None) -> asyncio.Future:
    """``asyncio.create_task()`` that always makes an asyncbis task (root group if any)."""
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    if factory is not None and not is_own_factory(factory):
        # A foreign factory the user installed (no-task-factory off): stock behaviour.
        return _stock.create_task(coro, name=name, context=context)
    return new_task(loop, coro, name, context)


def accepted_task_factory(loop: Any, factory: Any) -> Any:
    """The factory to install when ``factory`` is set on ``loop`` with no-task-factory on:
    None and asyncbis's own unchanged, an eager factory becomes asyncbis's eager one; any other
    is refused (its tasks would not be asyncbis tasks)."""
    if factory is None or factory is task_factory:
        return factory
    if any(factory is eager for eager in _eager_factories()):
        return eager_task_factory
    raise RuntimeError(
        f"asyncbis refuses the task factory {factory!r}: every task must be an asyncbis task "
        "for cancel scopes and task groups to work (switch no-task-factory). Create tasks "
        "with TaskGroup.create_task() or asyncio.create_task() (asyncio.eager_task_factory is "
        "accepted: it makes eager asyncbis tasks); or turn the switch off with "
        "asyncbis.switches.disable('no-task-factory') or ASYNCBIS_DISABLE=no-task-factory."
    )


# loops driven by a Runner: their run_until_complete() calls are not root-group wrapped
_runner_loops: weakref.WeakSet[Any] = weakref.WeakSet()


def runner_managed(loop: Any) -> bool:
    try:
        return loop in _runner_loops
    except TypeError:
        return False


def install_on_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Give ``loop`` the asyncbis task machinery (idempotent)."""
    _stats.count_loop(loop)
    with contextlib.suppress(TypeError):
        _runner_loops.add(loop)
    if _patched_active() and isinstance(loop, _stock.BaseEventLoop):
        # The patched BaseEventLoop.create_task already makes asyncbis tasks, and the loop's
        # get_task_factory() keeps answering None like a stock loop.
        return
    current = loop.get_task_factory()
    if not is_own_factory(current):
        # A loop a loop_factory set up with stock's eager factory keeps eager tasks.
        eager = current is not None and any(current is e for e in _eager_factories())
        factory = eager_task_factory if eager else task_factory
        if isinstance(loop, _stock.BaseEventLoop):
            _stock.loop_set_task_factory(loop, factory)
        else:
            loop.set_task_factory(factory)
    # Not vars(loop): on 3.11/3.12 that materialises the instance dict, and every later
    # attribute access of the loop's own code (call_soon, _run_once) loses its fast path.
    own_method = getattr(loop.set_task_factory, "__self__", None) is loop
    if own_method:
        # An unpatched stock loop, or any other loop (uvloop, rloop): guard its
        # set_task_factory with an instance attribute that calls the class's method.
        original = (
            _stock.loop_set_task_factory
            if isinstance(loop, _stock.BaseEventLoop)
            else type(loop).set_task_factory
        )

        def set_task_factory(factory: Any, _loop: Any = loop, _original: Any = original) -> None:
            if switches.enabled("no-task-factory"):
                factory = accepted_task_factory(_loop, factory) or task_factory
            _original(_loop, factory)

        try:
            loop.set_task_factory = set_task_factory  # type: ignore[method-assign]
        except AttributeError:
            # A loop type whose instances take no attributes (no __dict__): the switch cannot
            # be enforced on it (docs/loops.md).
            pass


async def _root_main(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """The root task's body: main inside the root task group."""
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


# sniffio, imported once for every thread (None: not installed). Under a lock, and by an
# import statement rather than sys.modules: while a first run imports it, sys.modules already
# holds the half-initialised module, and another thread's first run would read its
# thread_local before it exists.
_sniffio_lock = threading.Lock()
_sniffio_module: Any = None
_sniffio_loaded = False


def _load_sniffio() -> Any:
    global _sniffio_module, _sniffio_loaded
    if not _sniffio_loaded:
        with _sniffio_lock:
            if not _sniffio_loaded:
                try:
                    import sniffio
                except ImportError:
                    sniffio = None
                _sniffio_module = sniffio
                _sniffio_loaded = True
    return _sniffio_module


@contextlib.contextmanager
def _sniffio_name() -> Iterator[None]:
    """sniffio reports "asyncbis" on this thread while the loop runs (switch sniffio-name)."""
    # Never yield inside an except block: the run's exceptions would get its ImportError as
    # their context.
    sniffio = _load_sniffio()
    if sniffio is None or not switches.enabled("sniffio-name"):
        yield
        return
    from . import _anyio_alias

    _anyio_alias.install()
    local = sniffio.thread_local
    previous = getattr(local, "name", None)
    local.name = "asyncbis"
    try:
        yield
    finally:
        local.name = previous


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _SignalWakeup:
    """A wakeup fd (``signal.set_wakeup_fd``) that wakes the loop when a signal arrives.

    A Python-level signal handler runs in the main thread at its next bytecode. If the main
    thread is blocked in the loop's select() when the signal comes, that is at once only if the
    syscall is interrupted, which it is not when the signal is delivered to another thread (a
    process-directed signal may go to any thread: an executor's, for instance) or arrives just
    before the main thread enters select(): then the handler waits for the select() timeout,
    which is as long as the longest sleep (the first or second Ctrl+C seemed ignored). The C
    handler writes the signal number to the wakeup fd; the loop reads it and the handler runs.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, rsock: Any, wsock: Any) -> None:
        self._loop = loop
        self._rsock = rsock
        self._wsock = wsock

    @classmethod
    def start(cls, loop: asyncio.AbstractEventLoop) -> _SignalWakeup | None:
        """Install one, unless a wakeup fd is set already (loop.add_signal_handler() sets the
        loop's own, which wakes it as well) or the loop cannot watch a socket."""
        import socket

        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setblocking(False)
        try:
            loop.add_reader(rsock.fileno(), cls._drain, rsock)
        except (NotImplementedError, RuntimeError, ValueError):
            rsock.close()
            wsock.close()
            return None
        try:
            previous = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
        except ValueError:  # not the main thread of the main interpreter
            previous = -1
            ours = False
        else:
            ours = previous == -1
            if not ours:
                signal.set_wakeup_fd(previous)
        if not ours:
            loop.remove_reader(rsock.fileno())
            rsock.close()
            wsock.close()
            return None
        return cls(loop, rsock, wsock)

    @staticmethod
    def _drain(rsock: Any) -> None:
        with contextlib.suppress(OSError):
            while rsock.recv(4096):
                pass

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            current = signal.set_wakeup_fd(-1)
            if current != self._wsock.fileno():  # someone replaced ours meanwhile: keep theirs
                signal.set_wakeup_fd(current)
        if not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._rsock.fileno())
        self._rsock.close()
        self._wsock.close()


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
        self._signal_received: int | None = None
        self._root_task: asyncio.Future | None = None
        self._hard_shutdown = False
        self._wakeup: _SignalWakeup | None = None

    def close(self) -> None:
        """Shut down and close the loop (stock); after a hard shutdown (second signal), close
        it without waiting for tasks that are still finalising."""
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
        install_on_loop(self._loop)  # type: ignore[attr-defined]

    def run(self, coro: Coroutine[Any, Any, T], *, context: Any = None) -> T:
        """Run ``coro`` in the embedded loop, inside a fresh root task group; return its result."""
        if not asyncio.iscoroutine(coro):
            raise ValueError(f"a coroutine was expected, got {coro!r}")
        if asyncio.events._get_running_loop() is not None:
            raise RuntimeError("Runner.run() cannot be called from a running event loop")
        self._lazy_init()
        main: Coroutine[Any, Any, T] = coro
        if switches.enabled("root-task-group"):
            main = _root_main(self._loop, coro)  # type: ignore[attr-defined]
        with _sniffio_name(), _timeouts.stock_timeouts_routed():
            if not switches.enabled("graceful-signals"):
                return super().run(main, context=context)
            return self._run_graceful(main, context)

    # -- graceful shutdown -------------------------------------------------------------------
    def _run_graceful(self, main: Coroutine[Any, Any, T], context: Any) -> T:
        loop: asyncio.AbstractEventLoop = self._loop  # type: ignore[attr-defined]
        if context is None:
            context = self._context  # type: ignore[attr-defined]
        task = loop.create_task(main, context=context)
        self._root_task = task
        self._signal_received = None
        installed = self._install_handlers()
        try:
            try:
                result = loop.run_until_complete(task)
            except BaseException as exc:
                if self._signal_received == signal.SIGINT and isinstance(
                    exc, asyncio.CancelledError
                ):
                    raise KeyboardInterrupt() from None
                raise
            if self._signal_received == signal.SIGINT:
                raise KeyboardInterrupt()
            return result
        finally:
            self._restore_handlers(installed)
            self._root_task = None
            if self._signal_received == signal.SIGTERM:
                self._die_by_sigterm()

    def _install_handlers(self) -> dict[int, Any]:
        installed: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return installed
        for sig in _SIGNALS:
            current = signal.getsignal(sig)
            # Like the stock Runner: only take over signals nobody else handles.
            if sig == signal.SIGINT and current is not signal.default_int_handler:
                continue
            if sig == signal.SIGTERM and current != signal.SIG_DFL:
                continue
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:  # embedded interpreter without signal support
                continue
            installed[sig] = current
        if installed:
            self._wakeup = _SignalWakeup.start(self._loop)  # type: ignore[attr-defined]
        return installed

    def _restore_handlers(self, installed: dict[int, Any]) -> None:
        for sig, previous in installed.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        if self._wakeup is not None:
            self._wakeup.stop()
            self._wakeup = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        loop = self._loop  # type: ignore[attr-defined]
        if self._signal_received is None and self._root_task is not None:
            self._signal_received = signum
            # Cancel from the loop (never from inside a signal handler), and wake the loop if
            # it is idle in select(): call_soon_threadsafe writes to its self-pipe.
            loop.call_soon_threadsafe(self._cancel_root, signum)
            return
        # The second signal: hard shutdown.
        self._hard_shutdown = True
        if signum == signal.SIGTERM:
            self._die_by_sigterm()
        raise KeyboardInterrupt()

    def _cancel_root(self, signum: int) -> None:
        reason = f"{signal.Signals(signum).name} received"
        group = _root_groups.get(self._loop)  # type: ignore[attr-defined]
        if group is not None:
            group.cancel(reason)
        elif self._root_task is not None:
            self._root_task.cancel(reason)

    def _die_by_sigterm(self) -> None:
        try:
            self.close()
        finally:
            _stats.write()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
            os._exit(128 + signal.SIGTERM)  # not reached unless SIGTERM is blocked


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
