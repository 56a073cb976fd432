"""timeout()/timeout_at()/wait_for() as level-cancelling cancel scopes, and the inline shield().

Switches: ``scoped-timeouts`` (off: stock asyncio.timeout/timeout_at/wait_for) and
``inline-shield`` (off: stock asyncio.shield; ``coroutines``: stock for tasks and futures,
inline for the rest). Both are read when the object is used, so
turning a switch off affects later calls. Inside a task that is not an asyncbis task (a
foreign task factory, with no-task-factory off) the stock versions are used too: cancel
scopes need an asyncbis task.
"""

from __future__ import annotations

import abc
import asyncio
import asyncio.timeouts
import contextlib
import inspect
import math
import threading
from collections.abc import Awaitable, Coroutine, Generator, Iterator
from typing import Any, TypeVar

from . import _core, _stock, switches

T = TypeVar("T")


def _to_deadline(when: float | None) -> float:
    if when is None:
        return math.inf
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise TypeError(f"the deadline must be a number or None, got {type(when).__name__}")
    if math.isnan(when):
        raise ValueError("the deadline must not be NaN")
    return float(when)


def _scopes_usable() -> bool:
    return _core.current_task_core() is not None


class Timeout(_stock.Timeout, metaclass=abc.ABCMeta):  # type: ignore[misc,valid-type]
    """``asyncio.Timeout`` built on a cancel scope.

    Once the deadline has passed, every yield point inside raises CancelledError (level
    cancellation); on exit that becomes TimeoutError — only in the timeout whose own deadline
    expired. ``shield=True`` also blocks cancellation from outside. ``None`` means no deadline.

    A subclass of the stock class: with scoped-timeouts off, or outside an asyncbis task, it
    runs the stock code on the stock attributes, so what patch_asyncio() installs as
    ``asyncio.Timeout`` is stock then, and libraries subclassing ``asyncio.Timeout`` after the
    patch (async-timeout) keep the private state they read. Scoped, it drives the native
    timeout (``_core.Timeout``) and forwards to it.
    """

    def __init__(self, when: float | None, *, shield: bool = False) -> None:
        _to_deadline(when)  # validate early
        super().__init__(when)
        self._shield = bool(shield)
        self._scoped: Any = None

    @property
    def cancel_scope(self) -> _core.CancelScope | None:
        """The underlying cancel scope (None before entering, or when running stock)."""
        return self._scoped.cancel_scope if self._scoped is not None else None

    async def __aenter__(self) -> Timeout:
        if self._scoped is not None:
            raise RuntimeError("Timeout has already been entered")
        if (
            self._state is _stock_state_created()
            and switches.enabled("scoped-timeouts")
            and _scopes_usable()
        ):
            scoped = _core.Timeout(self._when, shield=self._shield)
            await scoped.__aenter__()
            self._scoped = scoped
            return self
        if self._shield:
            raise RuntimeError(
                "Timeout(shield=True) needs the scoped-timeouts switch and an asyncbis task"
            )
        await super().__aenter__()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        if self._scoped is not None:
            return await self._scoped.__aexit__(exc_type, exc, tb)
        return await super().__aexit__(exc_type, exc, tb)

    def when(self) -> float | None:
        """The deadline (loop.time() clock), or None for no deadline."""
        return self._scoped.when() if self._scoped is not None else super().when()

    def reschedule(self, when: float | None) -> None:
        """Move the deadline (earlier cancels at once if passed; later re-arms the timer)."""
        if self._scoped is not None:
            self._scoped.reschedule(when)
        elif self._state is _stock_state_created() and switches.enabled("scoped-timeouts"):
            # 3.11's stock class only asserts this
            raise RuntimeError("Timeout has not been entered")
        else:
            super().reschedule(when)

    def expired(self) -> bool:
        """Whether the deadline passed while the block ran (stock meaning)."""
        return self._scoped.expired() if self._scoped is not None else super().expired()

    def __repr__(self) -> str:
        if self._scoped is not None:
            return repr(self._scoped)
        text = super().__repr__()
        return text[:-1] + " shield=True>" if self._shield else text


def _stock_state_created() -> Any:
    return asyncio.timeouts._State.CREATED


def _fallback_timeout(delay: float | None, *, shield: bool = False) -> Timeout:
    """timeout() where the native scope does not apply (scoped-timeouts off, or not in an
    asyncbis task): the Timeout class below, which runs stock asyncio.Timeout then."""
    loop = asyncio.get_running_loop()
    if delay is None:
        return Timeout(None, shield=shield)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise TypeError(f"the delay must be a number or None, got {type(delay).__name__}")
    return Timeout(loop.time() + delay, shield=shield)


def _fallback_timeout_at(when: float | None, *, shield: bool = False) -> Timeout:
    return Timeout(when, shield=shield)


# ``async with timeout(5):`` — TimeoutError if the block is still running after 5 s; ``None``
# means no deadline (set one later with ``reschedule()``). ``timeout_at(loop.time() + 5)`` takes
# an absolute deadline. Both are native (Rust) on the fast path, and call the fallbacks above
# when the scoped-timeouts switch is off or the caller is not an asyncbis task.
timeout = _core.timeout
timeout_at = _core.timeout_at
_core._set_timeout_fallback(_fallback_timeout, _fallback_timeout_at)


# timeout()/timeout_at() return the native class on the fast path; it is a Timeout too.
Timeout.register(_core.Timeout)


class RoutedTimeout(Timeout):  # type: ignore[misc]  (stock marks its Timeout final)
    """The stock ``asyncio.Timeout`` while an asyncbis run is active without patch_asyncio().

    Stock timeouts are built on ``Task.cancel()``/``uncancel()``; on an asyncbis task with
    task-cancel-level on, ``Task.cancel()`` is permanent, so a stock timeout that fired would
    leave its task cancelled for good. Inside an asyncbis task with scoped-timeouts on, this
    class is the scoped timeout instead (a cancel scope with a deadline: what patch_asyncio()
    makes of ``asyncio.timeout``); anywhere else (another thread's stock loop, a foreign task
    factory's task, scoped-timeouts off) it is exactly the stock class. Being a subclass, it
    passes ``isinstance(t, asyncio.Timeout)`` checks made with the stock class. A class of its
    own (not ``Timeout``) so that ending the routing never removes what patch_asyncio()
    installed.
    """

    def __init__(self, when: float | None) -> None:  # stock's signature, no early validation
        _stock.Timeout.__init__(self, when)
        self._shield = False
        self._scoped = None


# How many asyncbis runs are active (in any thread): while there is one, the stock Timeout
# class is RoutedTimeout where stock code looks it up (see stock_timeouts_routed()).
_routes_lock = threading.Lock()
_routed_runs = 0
_ROUTED_OWNERS = (asyncio, asyncio.timeouts)


@contextlib.contextmanager
def stock_timeouts_routed() -> Iterator[None]:
    """For the duration of an asyncbis run: stock ``asyncio.timeout()``, ``timeout_at()``,
    ``Timeout`` and (3.12+, built on them) ``wait_for()`` become scoped timeouts inside asyncbis
    tasks. ``asyncio.timeouts.Timeout`` is the name all of them look up when called (also
    through ``from asyncio import timeout`` made earlier), so it is the one replaced, and only
    while it is the stock class (patch_asyncio() installs asyncbis's own). 3.11's ``wait_for()``
    does not use a timeout: it runs the awaitable in a task of its own and cancels that one,
    which leaves the caller uncancelled already."""
    global _routed_runs
    with _routes_lock:
        _routed_runs += 1
        if _routed_runs == 1:
            for owner in _ROUTED_OWNERS:
                if owner.__dict__.get("Timeout") is _stock.Timeout:
                    owner.Timeout = RoutedTimeout  # type: ignore[attr-defined,misc]
    try:
        yield
    finally:
        with _routes_lock:
            _routed_runs -= 1
            if _routed_runs == 0:
                for owner in _ROUTED_OWNERS:
                    if owner.__dict__.get("Timeout") is RoutedTimeout:
                        owner.Timeout = _stock.Timeout  # type: ignore[attr-defined,misc]


def unrouted(value: Any) -> Any:
    """What unpatch_asyncio() puts back for a name saved while a run routed it: the stock
    class once no run is active any more."""
    if value is RoutedTimeout:
        with _routes_lock:
            if _routed_runs == 0:
                return _stock.Timeout
    return value


def wait_for(fut: Awaitable[T], timeout: float | None) -> Coroutine[Any, Any, T]:
    """Wait for ``fut`` with a time limit (stock signature); TimeoutError when it expires.

    Built on the scoped timeout: the awaitable runs in the calling task (a future or task is
    cancelled on timeout, as in stock asyncio 3.12+). ``None`` waits without a limit.
    """
    if not switches.enabled("scoped-timeouts"):
        # Stock's own coroutine, not one awaiting it: no extra frame in the awaiting task's
        # stack (3.14's asyncio.graph call stacks, tracebacks).
        return _stock.wait_for(fut, timeout)
    return _scoped_wait_for(fut, timeout)


# Still a coroutine function to introspection, as stock's `async def wait_for` is.
if hasattr(inspect, "markcoroutinefunction"):  # 3.12+
    wait_for = inspect.markcoroutinefunction(wait_for)
else:  # 3.11: asyncio.iscoroutinefunction() reads this marker
    wait_for._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]


async def _scoped_wait_for(fut: Awaitable[T], timeout: float | None) -> T:
    # Decided when awaited: the coroutine may be made outside the task that awaits it.
    if not _scopes_usable():
        return await _stock.wait_for(fut, timeout)
    if timeout is not None and timeout <= 0:
        # Like stock: no time at all; a done future still gives its result.
        task = asyncio.ensure_future(fut)
        if task.done():
            return task.result()
        await _cancel_and_wait(task)
        try:
            return task.result()
        except asyncio.CancelledError as exc:
            raise TimeoutError from exc
    async with timeout_at(None if timeout is None else asyncio.get_running_loop().time() + timeout):
        return await fut
    raise AssertionError("unreachable")  # pragma: no cover


async def _cancel_and_wait(fut: asyncio.Future[Any]) -> None:
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def done(_: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)

    fut.add_done_callback(done)
    try:
        fut.cancel()
        await waiter
    finally:
        fut.remove_done_callback(done)


class _Shielded:
    """What shield() returns: awaiting it runs the awaitable in the awaiting task, inside a
    shielded cancel scope. ``await``, wait_for(), wait() and gather() accept it."""

    __slots__ = ("_aw",)

    def __init__(self, aw: Awaitable[Any]) -> None:
        self._aw = aw

    def __await__(self) -> Generator[Any, None, Any]:
        return self._run().__await__()

    async def _run(self) -> Any:
        if not _scopes_usable():
            return await _stock.shield(self._aw)
        with _core.CancelScope(shield=True):
            return await self._aw

    def __repr__(self) -> str:
        return f"<shielded {self._aw!r}>"


def shield(aw: Awaitable[T]) -> Awaitable[T]:
    """Protect ``aw`` and the awaiting task from cancellation from outside while it runs.

    With the inline-shield switch on (default), ``aw`` runs in the awaiting task under a
    shielded cancel scope; off, this is stock ``asyncio.shield()``. ``coroutines``: a task or
    future is shielded the stock way (an outer future that can be cancelled, timed out and
    passed to ``asyncio.wait()`` while ``aw`` goes on), any other awaitable runs inline.
    """
    mode = switches.value("inline-shield")
    if mode == "off" or (mode == "coroutines" and asyncio.isfuture(aw)):
        return _stock.shield(aw)
    if not hasattr(aw, "__await__"):
        raise TypeError(f"shield() needs an awaitable, got {type(aw).__name__}")
    return _Shielded(aw)
