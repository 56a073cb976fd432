"""Runner.run()/run() as 3.14 changed them: any awaitable runs (stock wraps it in a
coroutine), anything else is a TypeError; 3.11-3.13 take coroutines only (ValueError).
CPython's test_runners checks both."""

from __future__ import annotations

import asyncio
import sys

import pytest

import asyncbis


class _Awaitable:
    def __await__(self):
        yield from asyncio.sleep(0).__await__()
        return "done"


@pytest.mark.skipif(sys.version_info < (3, 14), reason="3.14 accepts awaitables")
def test_runner_runs_any_awaitable_like_stock():
    with asyncbis.Runner() as runner:
        assert runner.run(_Awaitable()) == "done"
    assert asyncbis.run(_Awaitable()) == "done"


@pytest.mark.skipif(sys.version_info < (3, 14), reason="3.14 raises TypeError")
def test_a_non_awaitable_is_a_type_error_like_stock():
    with pytest.raises(TypeError, match="awaitable is required"):
        asyncbis.run(lambda: None)  # type: ignore[arg-type]


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="3.11-3.13 take coroutines only")
def test_before_314_only_coroutines_run_like_stock():
    with pytest.raises(ValueError, match="a coroutine was expected"):
        asyncbis.run(_Awaitable())  # type: ignore[arg-type]
