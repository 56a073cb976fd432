"""Eager task factories (3.12+): ``loop.set_task_factory(asyncio.eager_task_factory)`` is
accepted with the no-task-factory switch on and makes eager *asyncbis* tasks: every task of the
loop, TaskGroup children included, runs its first step inside ``create_task()``, and the cancel
scope semantics are unchanged (a child spawned into a cancelled group still runs to its first
yield point and is cancelled there). Any other foreign factory is still refused.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import sys
from collections.abc import Callable
from typing import Any

import pytest

import asyncbis
from asyncbis import _core, switches

pytestmark = pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")


def _uvloop() -> Any:
    try:
        return importlib.import_module("uvloop").new_event_loop
    except ImportError:
        return None


def _stock_eager_fails(new_loop: Any) -> str | None:
    """Why stock eager tasks do not work on this loop, or None. (uvloop 0.23 on 3.13 passes
    ``eager_start=`` to the task factory, which 3.13's ``eager_task_factory`` does not take.)"""
    if new_loop is None:
        return "not installed"
    loop = new_loop()
    stock_set_task_factory = getattr(type(loop), "set_task_factory", None)
    probe = asyncio.sleep(0)
    try:
        stock_set_task_factory(loop, asyncio.eager_task_factory)
        loop.run_until_complete(probe)
    except TypeError as exc:
        return f"stock eager tasks fail on it too: {exc}"
    finally:
        probe.close()  # not run if the factory failed: no "never awaited" warning
        loop.close()
    return None


def _loop_param(new_loop: Any, name: str) -> Any:
    reason = None if sys.version_info < (3, 12) else _stock_eager_fails(new_loop)
    marks = [pytest.mark.skip(reason=f"{name}: {reason}")] if reason else []
    return pytest.param(new_loop, id=name, marks=marks)


LOOPS = [_loop_param(asyncio.new_event_loop, "asyncio"), _loop_param(_uvloop(), "uvloop")]


@pytest.fixture(params=[False, True], ids=["asyncbis.run", "patched"])
def patched(request: pytest.FixtureRequest) -> Any:
    state = switches.snapshot()
    if request.param:
        asyncbis.patch_asyncio()
    yield request.param
    if request.param:
        asyncbis.unpatch_asyncio()
    switches.restore(state)


def eager_loop(new_loop: Callable[[], asyncio.AbstractEventLoop], factory: Any) -> Any:
    def make() -> asyncio.AbstractEventLoop:
        loop = new_loop()
        loop.set_task_factory(factory)  # as AnyIO's asyncio+eager test backend does
        return loop

    return make


def run(main: Any, loop_factory: Any) -> Any:
    return asyncbis.run(main, loop_factory=loop_factory)


FACTORIES = [
    pytest.param(lambda: asyncio.eager_task_factory, id="asyncio.eager_task_factory"),
    pytest.param(lambda: asyncbis.eager_task_factory, id="asyncbis.eager_task_factory"),
]


@pytest.mark.parametrize("new_loop", LOOPS)
@pytest.mark.parametrize("factory", FACTORIES)
def test_tasks_start_eagerly_and_are_asyncbis_tasks(patched, new_loop, factory) -> None:
    log: list[Any] = []

    async def child(tag: str) -> str:
        log.append(("started", tag))
        await asyncio.sleep(0)
        log.append(("finished", tag))
        return tag

    async def instant() -> int:
        return 42

    async def main() -> None:
        parent = asyncio.current_task()
        t = asyncio.create_task(child("root-group"))
        log.append("create_task returned")
        assert asyncio.current_task() is parent  # restored after the eager step
        assert isinstance(t, asyncbis.Task) and not t.done()
        quick = asyncio.create_task(instant())
        assert quick.done() and quick.result() == 42  # finished inside create_task()
        async with asyncbis.TaskGroup() as tg:
            g = tg.create_task(child("group"))
            log.append("tg.create_task returned")
            assert isinstance(g, asyncbis.Task)
        assert await t == "root-group"
        assert g.result() == "group"

    run(main(), eager_loop(new_loop, factory()))
    assert log[:4] == [
        ("started", "root-group"),
        "create_task returned",
        ("started", "group"),
        "tg.create_task returned",
    ]
    assert sorted(log[4:]) == [("finished", "group"), ("finished", "root-group")]


@pytest.mark.parametrize("new_loop", LOOPS)
def test_child_spawned_into_cancelled_group_runs_to_first_yield(patched, new_loop) -> None:
    reached: list[str] = []

    async def child() -> None:
        reached.append("first step")  # runs inside create_task(), cancelled group or not
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            reached.append("cancelled at first yield")
            await asyncio.sleep(0)  # level cancellation: again at every later yield point
            reached.append("never")
            raise
        reached.append("never")

    async def main() -> None:
        async with asyncbis.TaskGroup() as tg:
            tg.cancel()
            t = tg.create_task(child())
            assert reached == ["first step"]
        assert t.cancelled()

    run(main(), eager_loop(new_loop, asyncio.eager_task_factory))
    assert reached == ["first step", "cancelled at first yield"]


@pytest.mark.parametrize("new_loop", LOOPS)
def test_child_failing_in_its_eager_step_cancels_the_group(patched, new_loop) -> None:
    sibling_cancelled: list[bool] = []

    async def sibling() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            sibling_cancelled.append(True)
            raise

    async def boom() -> None:
        raise ValueError("failed in the first step")

    async def main() -> None:
        async with asyncbis.TaskGroup() as tg:
            tg.create_task(sibling())
            failed = tg.create_task(boom())
            assert failed.done()  # the eager step raised inside create_task()
            await asyncio.sleep(3600)  # the group's cancellation reaches the body here

    with pytest.raises(ExceptionGroup) as info:
        run(main(), eager_loop(new_loop, asyncio.eager_task_factory))
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert str(info.value.exceptions[0]) == "failed in the first step"
    assert sibling_cancelled == [True]


@pytest.mark.parametrize("new_loop", LOOPS)
def test_background_task_failing_eagerly_reaches_run(patched, new_loop) -> None:
    async def background() -> None:
        raise KeyError("background")

    async def main() -> None:
        asyncio.create_task(background())  # root task group
        await asyncio.sleep(3600)

    with pytest.raises(BaseExceptionGroup) as info:
        run(main(), eager_loop(new_loop, asyncio.eager_task_factory))
    assert [type(e) for e in info.value.exceptions] == [KeyError]


def test_cancel_scopes_work_inside_eager_tasks(patched) -> None:
    async def child() -> str:
        with asyncbis.move_on_after(0.01) as scope:
            await asyncio.sleep(3600)
        assert scope.cancelled_caught
        return "moved on"

    async def main() -> str:
        async with asyncbis.TaskGroup() as tg:
            t = tg.create_task(child())
        return t.result()

    assert run(main(), eager_loop(asyncio.new_event_loop, asyncio.eager_task_factory)) == (
        "moved on"
    )


def test_foreign_factories_are_still_refused(patched) -> None:
    def foreign(loop: Any, coro: Any, **kwargs: Any) -> Any:
        return asyncio.tasks._PyTask(coro, loop=loop, **kwargs)

    stock_eager_of_py_task = asyncio.create_eager_task_factory(asyncio.tasks._PyTask)
    loop = asyncio.new_event_loop()
    try:
        if not patched:
            asyncbis.Runner(loop_factory=lambda: loop).__enter__()
        for factory in (foreign, stock_eager_of_py_task):
            with pytest.raises(RuntimeError, match="asyncio.eager_task_factory is accepted"):
                loop.set_task_factory(factory)
            assert loop.get_task_factory() in (None, asyncbis._task_factory.task_factory)
    finally:
        loop.close()


def test_switch_off_gives_stock_eager_tasks(patched) -> None:
    if not patched:
        pytest.skip("with the switch off an unpatched stock loop simply keeps its factory")
    switches.disable("no-task-factory")
    kinds: list[type] = []

    async def main() -> None:
        t = asyncio.create_task(asyncio.sleep(0))
        kinds.append(type(t))
        await t

    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    assert loop.get_task_factory() is asyncio.eager_task_factory
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert kinds and not issubclass(kinds[0], asyncbis.Task)


def test_no_task_leaked_after_eager_runs(patched) -> None:
    async def child(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def main() -> int:
        async with asyncbis.TaskGroup() as tg:
            tasks = [tg.create_task(child(i)) for i in range(200)]
            tg.cancel()
            tasks += [tg.create_task(child(i)) for i in range(200)]
        return sum(1 for t in tasks if t.cancelled())

    gc.collect()
    before = _core._tree_stats()
    assert run(main(), eager_loop(asyncio.new_event_loop, asyncio.eager_task_factory)) == 400
    gc.collect()
    assert _core._tree_stats() == before  # no scope node or task left behind


def test_anyio_on_an_eager_loop_keeps_its_scopes(patched) -> None:
    """AnyIO recognises an eager factory by its shape and spawns its own tasks lazily through
    the factory's task constructor (to set their task state first); asyncbis's eager factory
    has that shape, so AnyIO's scopes in spawned tasks work (AnyIO's suite: 'Attempted to exit a
    cancel scope that isn't the current tasks's current cancel scope' otherwise)."""
    anyio = pytest.importorskip("anyio")
    results: list[str] = []

    async def child(i: int) -> None:
        with anyio.CancelScope() as scope:
            await anyio.sleep(0)
            scope.cancel()
            await anyio.sleep(3600)
        results.append(f"child {i}: {scope.cancelled_caught}")
        assert isinstance(asyncio.current_task(), asyncbis.Task)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(child, i)
        # plain asyncio.create_task stays eager on this loop
        t = asyncio.create_task(asyncio.sleep(0))
        results.append(f"eager task is asyncbis: {isinstance(t, asyncbis.Task)}")
        await t

    loop_factory = eager_loop(asyncio.new_event_loop, asyncio.eager_task_factory)
    if patched:
        anyio.run(main, backend="asyncio", backend_options={"loop_factory": loop_factory})
    else:
        anyio.run(main, backend="asyncbis", backend_options={"loop_factory": loop_factory})
    assert sorted(results) == [
        "child 0: True",
        "child 1: True",
        "child 2: True",
        "eager task is asyncbis: True",
    ]
