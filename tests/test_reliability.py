"""Regression tests for defects an independent review of the runtime found (issue 13).

Each test names the defect it covers; each failed before its fix. Items of the same review
that live elsewhere: scopes held by async generators, wake-up depth, eager tasks and
``start()`` (tests/test_scopes.py, tests/test_taskgroups.py, tests/test_eager_tasks.py), the
no-task-factory switch on other loops (tests/test_loops.py), the signal tests
(tests/test_signals.py).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import asyncbis
from asyncbis import switches


@pytest.fixture(autouse=True)
def _stock_asyncio():
    """These tests are about asyncbis.run() without patch_asyncio()."""
    assert not asyncbis._patch.is_patched()
    state = switches.snapshot()
    yield
    switches.restore(state)
    assert not asyncbis._patch.is_patched()


def _python(
    code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


class _ExceptionLog:
    """Collects what reaches the loop's exception handler ("never retrieved", "destroyed")."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def install(self) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: self.contexts.append(ctx))

    @property
    def messages(self) -> list[str]:
        return [str(c.get("message")) for c in self.contexts]


# -- defect 7: patched loop.run_until_complete(coro) refuses before scheduling ---------------


def test_patched_run_until_complete_refused_while_another_loop_runs_never_runs_it_later():
    ran: list[str] = []

    async def refused() -> None:
        ran.append("refused coroutine ran")

    async def main() -> tuple[Any, Any]:
        other = asyncio.new_event_loop()
        coro = refused()
        with pytest.raises(RuntimeError, match="another loop is running"):
            other.run_until_complete(coro)
        return other, coro

    asyncbis.patch_asyncio()
    try:
        other, coro = asyncio.run(main())
        try:
            # as with stock: the coroutine was not touched, and the loop has nothing pending
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
            other.run_until_complete(asyncio.sleep(0))
            assert ran == []
            assert asyncio.all_tasks(other) == set()
        finally:
            coro.close()
            other.close()
    finally:
        asyncbis.unpatch_asyncio()


def test_patched_run_until_complete_on_a_closed_loop_refuses_before_scheduling():
    async def never() -> None:  # pragma: no cover - must not run
        raise AssertionError("ran")

    asyncbis.patch_asyncio()
    try:
        loop = asyncio.new_event_loop()
        loop.close()
        coro = never()
        with pytest.raises(RuntimeError, match="closed"):
            loop.run_until_complete(coro)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
        coro.close()
    finally:
        asyncbis.unpatch_asyncio()


def test_patched_run_until_complete_refused_on_a_running_loop():
    async def main() -> None:
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            asyncio.get_running_loop().run_until_complete(coro)
        coro.close()

    asyncbis.patch_asyncio()
    try:
        asyncio.run(main())
    finally:
        asyncbis.unpatch_asyncio()
