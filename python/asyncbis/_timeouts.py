"""timeout()/timeout_at() as level-cancelling cancel scopes, and the inline shield()."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Generator
from typing import Any, TypeVar

from . import _core

T = TypeVar("T")


def _to_deadline(when: float | None) -> float:
    if when is None:
        return math.inf
    if not isinstance(when, (int, float)):
        raise TypeError(f"the deadline must be a number or None, got {type(when).__name__}")
    if math.isnan(when):
        raise ValueError("the deadline must not be NaN")
    return float(when)


class Timeout:
    """An asynchronous context manager like ``asyncio.Timeout``, built on a cancel scope.

    While the deadline has passed, every yield point inside raises CancelledError (level
    cancellation); on exit that becomes TimeoutError. ``shield=True`` also blocks
    cancellation from outside.
    """

    __slots__ = ("_scope",)

    def __init__(self, when: float | None, *, shield: bool = False) -> None:
        self._scope = _core.fail_at(_to_deadline(when), shield=shield)

    @property
    def cancel_scope(self) -> _core.CancelScope:
        return self._scope

    def when(self) -> float | None:
        deadline = self._scope.deadline
        return None if deadline == math.inf else deadline

    def reschedule(self, when: float | None) -> None:
        if not self._scope.active:
            state = "expired" if self._scope.cancel_called else "not entered or exited"
            raise RuntimeError(f"Timeout is {state}; only an active timeout can be rescheduled")
        self._scope.deadline = _to_deadline(when)

    def expired(self) -> bool:
        return self._scope.deadline_expired

    def __repr__(self) -> str:
        scope = self._scope
        if scope.active:
            state = "expiring" if scope.cancel_called else "active"
        elif scope.cancel_called or scope.cancelled_caught:
            state = "expired" if scope.deadline_expired else "cancelled"
        else:
            state = "created" if not scope.deadline_expired else "expired"
        when = self.when()
        extra = f" when={when}" if when is not None else " when=None"
        return f"<Timeout [{state}]{extra}>"

    async def __aenter__(self) -> Timeout:
        self._scope.__enter__()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        return self._scope.__exit__(exc_type, exc, tb)


def timeout(delay: float | None, *, shield: bool = False) -> Timeout:
    """``async with timeout(5):`` — TimeoutError if the block is still running after 5 s."""
    if delay is None:
        return Timeout(None, shield=shield)
    import asyncio

    loop = asyncio.get_running_loop()
    if not isinstance(delay, (int, float)):
        raise TypeError(f"the delay must be a number or None, got {type(delay).__name__}")
    return Timeout(loop.time() + delay, shield=shield)


def timeout_at(when: float | None, *, shield: bool = False) -> Timeout:
    """``async with timeout_at(loop.time() + 5):`` — like timeout() with an absolute deadline."""
    return Timeout(when, shield=shield)


class _Shielded:
    """What shield() returns: awaiting it runs the awaitable in the awaiting task, inside a
    shielded cancel scope. wait(), gather() and wait_for() accept it (it is awaitable)."""

    __slots__ = ("_aw",)

    def __init__(self, aw: Awaitable[Any]) -> None:
        self._aw = aw

    def __await__(self) -> Generator[Any, None, Any]:
        return self._run().__await__()

    async def _run(self) -> Any:
        with _core.CancelScope(shield=True):
            return await self._aw

    def __repr__(self) -> str:
        return f"<shielded {self._aw!r}>"


def shield(aw: Awaitable[T]) -> Awaitable[T]:
    """Protect ``aw`` and the awaiting task from cancellation from outside while it runs."""
    if not hasattr(aw, "__await__"):
        raise TypeError(f"shield() needs an awaitable, got {type(aw).__name__}")
    return _Shielded(aw)
