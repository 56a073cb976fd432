"""asyncio.graph (3.14+) on asyncbis tasks: a task waiting on a future records itself in the
future's ``_asyncio_awaited_by``, as stock's C task does in its step, so that
``capture_call_graph()`` shows who awaits whom; and after patch_asyncio(), code that installs
another task class as ``asyncio.tasks.Task`` gets that class from ``loop.create_task()``, as
with stock asyncio (CPython's test_graph and test_free_threading do)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

import asyncbis
from asyncbis import switches

needs_graph = pytest.mark.skipif(
    sys.version_info < (3, 14), reason="asyncio.graph and awaited-by tracking are new in 3.14"
)


@needs_graph
def test_a_task_awaiting_a_task_shows_in_the_call_graph():
    async def inner() -> Any:
        await asyncio.sleep(0)
        return asyncio.capture_call_graph()

    async def main() -> None:
        t = asyncio.create_task(inner(), name="inner")
        graph = await t
        assert graph.future is t
        parents = [g.future for g in graph.awaited_by]
        assert parents == [asyncio.current_task()]
        # The wake-up took the waiter off again: nothing keeps a finished wait recorded.
        assert not t._asyncio_awaited_by

    asyncbis.run(main())


@needs_graph
def test_a_future_shows_the_tasks_waiting_on_it():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        async def waiter() -> None:
            await fut

        a = asyncio.create_task(waiter(), name="a")
        b = asyncio.create_task(waiter(), name="b")
        await asyncio.sleep(0)
        assert isinstance(a, asyncbis.Task)
        assert fut._asyncio_awaited_by == {a, b}
        graph = asyncio.capture_call_graph(fut)
        assert {g.future.get_name() for g in graph.awaited_by} == {"a", "b"}
        fut.set_result(None)
        await asyncio.gather(a, b)
        assert not fut._asyncio_awaited_by

    asyncbis.run(main())


@needs_graph
def test_a_cancelled_wait_is_taken_off_the_future():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        async def waiter() -> None:
            await fut

        t = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        assert fut._asyncio_awaited_by == {t}
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert not fut._asyncio_awaited_by

    asyncbis.run(main())


@pytest.fixture
def _patched_all_off():
    state = switches.snapshot()
    switches.disable(*switches.NAMES)
    asyncbis.patch_asyncio()
    yield
    asyncbis.unpatch_asyncio()
    switches.restore(state)


@pytest.mark.usefixtures("_patched_all_off")
@pytest.mark.parametrize("which", ["_PyTask", "_CTask"])
def test_create_task_makes_the_class_installed_as_asyncio_tasks_task(which: str):
    cls = getattr(asyncio.tasks, which)
    made: list[Any] = []

    async def main() -> None:
        made.append(asyncio.get_running_loop().create_task(asyncio.sleep(0)))
        await made[0]

    saved = asyncio.tasks.Task
    asyncio.tasks.Task = cls
    try:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
    finally:
        asyncio.tasks.Task = saved
    assert type(made[0]) is cls


@pytest.mark.usefixtures("_patched_all_off")
def test_create_task_makes_asyncbis_tasks_while_asyncio_task_is_asyncbis():
    made: list[Any] = []

    async def main() -> None:
        made.append(asyncio.get_running_loop().create_task(asyncio.sleep(0)))
        await made[0]

    asyncio.run(main())
    assert type(made[0]) is asyncbis.Task


@pytest.mark.usefixtures("_patched_all_off")
def test_wait_for_with_scoped_timeouts_off_is_stocks_own_coroutine():
    # No wrapper coroutine around stock's: call stacks (asyncio.graph, tracebacks) are stock's.
    inner = asyncio.sleep(0)
    coro = asyncio.wait_for(inner, 1)
    try:
        assert coro.cr_code is asyncbis._stock.wait_for.__code__
    finally:
        coro.close()
        inner.close()
    assert asyncio.iscoroutinefunction(asyncio.wait_for)


@needs_graph
def test_a_task_group_child_is_awaited_by_the_task_that_opened_the_group():
    graphs: dict[str, Any] = {}

    async def child(name: str) -> None:
        await asyncio.sleep(0)
        graphs[name] = asyncio.capture_call_graph()

    async def main() -> None:
        host = asyncio.current_task()
        async with asyncbis.TaskGroup() as tg:
            a = tg.create_task(child("a"))
        assert [g.future for g in graphs["a"].awaited_by] == [host]
        # Ended: taken off again.
        assert not a._asyncio_awaited_by

    asyncbis.run(main())


@needs_graph
def test_loose_tasks_of_a_run_are_awaited_by_nobody():
    # The root group holds them so that their failures are not lost, but nobody awaits them,
    # as with stock's loop.create_task().
    graphs: list[Any] = []

    async def loose() -> None:
        await asyncio.sleep(0)
        graphs.append(asyncio.capture_call_graph())

    async def main() -> None:
        await asyncio.create_task(loose())
        t = asyncio.create_task(loose())
        while not t.done():
            await asyncio.sleep(0)

    asyncbis.run(main())
    assert [len(g.awaited_by) for g in graphs] == [1, 0]
