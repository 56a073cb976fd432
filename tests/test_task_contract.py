"""The native Task keeps the stock asyncio.Task contracts."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import io
import sys

import pytest

import asyncbis
from asyncbis import CancelScope, Task


def run(coro):
    return asyncbis.run(coro)


async def sleep_forever():
    await asyncio.sleep(3600)


def ungrouped(coro):
    """A task outside any group: its failure is only its own (root groups would propagate it)."""
    return asyncbis._core.spawn(asyncio.get_running_loop(), coro)


def test_tasks_are_asyncbis_tasks_and_futures():
    async def main():
        t = asyncio.create_task(asyncio.sleep(0))
        assert type(t) is Task
        assert isinstance(t, asyncio.Future)
        assert asyncio.isfuture(t)
        assert isinstance(asyncio.current_task(), Task)
        await t

    run(main())


def test_future_protocol():
    async def value():
        await asyncio.sleep(0)
        return 7

    async def boom():
        await asyncio.sleep(0)
        raise ValueError("x")

    async def main():
        t = asyncio.create_task(value())
        assert not t.done()
        with pytest.raises(asyncio.InvalidStateError):
            t.result()
        assert await t == 7
        assert t.done() and not t.cancelled() and t.result() == 7 and t.exception() is None

        e = ungrouped(boom())
        await asyncio.wait([e])
        assert isinstance(e.exception(), ValueError)
        with pytest.raises(ValueError):
            e.result()

        with pytest.raises(RuntimeError, match="set_result"):
            t.set_result(1)
        with pytest.raises(RuntimeError, match="set_exception"):
            t.set_exception(ValueError())

    run(main())


def test_done_callbacks_with_context_and_removal():
    var = contextvars.ContextVar("var", default="unset")

    async def main():
        seen = []
        ctx = contextvars.copy_context()
        ctx.run(var.set, "in ctx")
        t = asyncio.create_task(asyncio.sleep(0))
        t.add_done_callback(lambda _: seen.append(var.get()), context=ctx)

        def removed(_):
            seen.append("removed callback ran")

        t.add_done_callback(removed)
        assert t.remove_done_callback(removed) == 1
        await t
        await asyncio.sleep(0)
        assert seen == ["in ctx"]

    run(main())


def test_task_runs_in_its_context():
    var = contextvars.ContextVar("var", default="default")

    async def reader():
        return var.get()

    async def main():
        var.set("parent")
        assert await asyncio.create_task(reader()) == "parent"
        ctx = contextvars.Context()
        ctx.run(var.set, "explicit")
        t = asyncio.create_task(reader(), context=ctx)
        assert t.get_context() is ctx
        assert await t == "explicit"

    run(main())


def test_cancel_returns_false_on_a_done_task_and_does_nothing_else():
    async def main():
        t = asyncio.create_task(asyncio.sleep(0))
        await t
        assert t.cancel() is False
        assert t.cancelling() == 0
        assert not t.cancelled()
        await asyncio.sleep(0)  # nothing was cancelled around us

    run(main())


def test_cancel_cancelling_uncancel():
    async def main():
        t = asyncio.create_task(sleep_forever())
        await asyncio.sleep(0)
        assert t.cancel("why") is True
        assert t.cancelling() == 1
        t.cancel()
        assert t.cancelling() == 2
        assert t.uncancel() == 1
        with pytest.raises(asyncio.CancelledError) as info:
            await t
        assert info.value.args == ("why",)
        assert t.cancelled()

    run(main())


def test_task_cancelled_before_its_first_step_never_runs():
    """Stock's contract (docs/switches.md); a task spawned into a cancelled group is the other
    case: it runs to its first yield (tests/test_reliability_core.py)."""
    log = []

    async def child():
        log.append("ran")
        await asyncio.sleep(0)
        log.append("not reached")

    async def main():
        t = asyncio.create_task(child())
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    run(main())
    assert log == []


def test_task_cancel_is_level_the_task_stays_cancelled():
    counts = []

    async def stubborn():
        n = 0
        for _ in range(4):
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                n += 1
        counts.append(n)
        return "done"

    async def main():
        t = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        t.cancel()
        assert await t == "done"

    run(main())
    assert counts == [4]


def test_names():
    async def main():
        t = asyncio.create_task(asyncio.sleep(0), name="worker")
        assert t.get_name() == "worker"
        t.set_name(42)
        assert t.get_name() == "42"
        anon = asyncio.create_task(asyncio.sleep(0))
        assert anon.get_name().startswith("Task-")
        assert "name='42'" in repr(t)
        await asyncio.gather(t, anon)

    run(main())


def test_get_coro_and_stack():
    async def inner():
        await asyncio.sleep(3600)

    async def main():
        coro = inner()
        t = asyncio.create_task(coro)
        await asyncio.sleep(0)
        assert t.get_coro() is coro
        frames = t.get_stack()
        assert frames and frames[0].f_code.co_name == "inner"
        buf = io.StringIO()
        t.print_stack(file=buf)
        assert "inner" in buf.getvalue()
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    run(main())


def test_current_task_and_all_tasks_see_asyncbis_tasks():
    async def child(box):
        box.append(asyncio.current_task())
        await asyncio.sleep(0)

    async def main():
        box = []
        t = asyncio.create_task(child(box))
        assert t in asyncio.all_tasks()
        assert asyncio.current_task() in asyncio.all_tasks()
        await t
        assert box == [t]
        assert t not in asyncio.all_tasks()

    run(main())


def test_repr_shows_state_and_wait_for():
    async def main():
        fut = asyncio.get_running_loop().create_future()

        async def waiter():
            await fut

        t = asyncio.create_task(waiter(), name="w")
        await asyncio.sleep(0)
        r = repr(t)
        assert r.startswith("<Task pending name='w'") and "wait_for=" in r
        fut.set_result(None)
        await t
        assert "finished" in repr(t)

    run(main())


def test_await_on_itself_is_an_error():
    async def main():
        async def self_await():
            await asyncio.current_task()

        t = ungrouped(self_await())
        with pytest.raises(RuntimeError, match="await on itself"):
            await t

    run(main())


def test_bad_yield_is_an_error():
    class BadAwaitable:
        def __await__(self):
            yield 42

    async def main():
        async def bad():
            await BadAwaitable()

        with pytest.raises(RuntimeError, match="bad yield"):
            await ungrouped(bad())

    run(main())


def test_future_from_another_loop_is_an_error():
    other = asyncio.new_event_loop()
    try:

        async def main():
            fut = other.create_future()
            with pytest.raises(RuntimeError, match="different loop"):
                await fut

        run(main())
    finally:
        other.close()


def test_pending_task_destroyed_is_reported_like_stock():
    reports = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: reports.append(ctx["message"]))

        async def waits_forever():
            await loop.create_future()  # a future nobody else holds: the task is unreachable

        asyncbis._core.spawn(loop, waits_forever())
        await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)

    run(main())
    assert "Task was destroyed but it is pending!" in reports


def test_task_constructor_and_coroutine_check():
    async def main():
        t = Task(asyncio.sleep(0, result="direct"))
        assert await t == "direct"
        with pytest.raises(TypeError, match="coroutine"):
            asyncbis._core.spawn(asyncio.get_running_loop(), 42)

    run(main())


def test_generic_alias():
    assert Task[int] is not None


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
def test_eager_start_runs_the_first_step_synchronously():
    async def main():
        log = []

        async def child():
            log.append(("child", asyncio.current_task() is t_box[0] if t_box else None))
            await asyncio.sleep(0)
            log.append("child resumed")
            return "value"

        async def instant():
            return "done at once"

        t_box = []
        parent = asyncio.current_task()
        t = Task(child(), eager_start=True)
        t_box.append(t)
        log.append("after constructor")
        assert asyncio.current_task() is parent  # restored after the eager step
        assert await t == "value"
        quick = Task(instant(), eager_start=True)
        assert quick.done() and quick.result() == "done at once"
        assert log == [("child", None), "after constructor", "child resumed"]

    run(main())


# -- behaviour switches of the core ------------------------------------------------------


@pytest.fixture
def core_switches():
    saved = asyncbis._core._core_switches()
    yield asyncbis._core._set_core_switch
    level, mode = saved
    asyncbis._core._set_core_switch("level-cancellation", level)
    asyncbis._core._set_core_switch("task-cancel-level", {0: "off", 1: "on", 2: "uncancel"}[mode])


def test_switch_level_cancellation_off_delivers_once(core_switches):
    core_switches("level-cancellation", False)
    seen = []

    async def main():
        with CancelScope() as scope:
            scope.cancel()
            for _ in range(3):
                try:
                    await asyncio.sleep(0)
                    seen.append("ok")
                except asyncio.CancelledError:
                    seen.append("cancelled")

    run(main())
    assert seen == ["cancelled", "ok", "ok"]


def test_switch_task_cancel_level_off_is_stock_edge(core_switches):
    core_switches("task-cancel-level", "off")
    log = []

    async def swallow_once():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            log.append("cancelled once")
        await asyncio.sleep(0)
        log.append("continued")
        return "survived"

    async def never_started():
        log.append("never runs")

    async def main():
        t = asyncio.create_task(swallow_once())
        await asyncio.sleep(0)
        t.cancel()
        assert await t == "survived"
        t2 = asyncio.create_task(never_started())
        t2.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t2  # stock: cancelled before its first step, the body never runs

    run(main())
    assert log == ["cancelled once", "continued"]


def test_switch_task_cancel_uncancel_lifts_at_zero(core_switches):
    core_switches("task-cancel-level", "uncancel")

    async def worker():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()
        await asyncio.sleep(0)  # lifted: no second delivery
        return "recovered"

    async def main():
        t = asyncio.create_task(worker())
        await asyncio.sleep(0)
        t.cancel()
        assert await t == "recovered"

    run(main())


def test_bad_switch_values_are_refused():
    with pytest.raises(ValueError, match="no switch"):
        asyncbis._core._set_core_switch("nope", True)
    with pytest.raises(ValueError, match="'off', 'on' or 'uncancel'"):
        asyncbis._core._set_core_switch("task-cancel-level", "sometimes")


# -- how the loop calls a task's core (vectorcall, crates/py/src/task.rs) -------------------


def test_core_is_called_by_vectorcall_and_other_call_shapes_still_work():
    """The loop and futures call a task's core with zero or one positional argument through the
    vectorcall slot asyncbis sets on TaskCore's type; any other call shape is handed to the
    PyO3 `__call__` with its argument checks."""
    py_tpflags_have_vectorcall = 1 << 11

    async def main():
        t = asyncio.create_task(asyncio.sleep(0))
        await t
        core = t._core
        assert type(core) is asyncbis._core.TaskCore
        # Set when the first core was made (the offset is read from a live instance).
        assert type(core).__flags__ & py_tpflags_have_vectorcall
        for call in (lambda: core(), lambda: core(None), lambda: core(arg=None)):
            with pytest.raises(asyncio.InvalidStateError, match="already finished"):
                call()
        with pytest.raises(TypeError, match="takes from 0 to 1 positional arguments"):
            core(1, 2)
        with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
            core(nope=1)

    run(main())


def test_slow_callback_log_names_the_task(caplog):
    """Debug mode logs a slow step as `Executing <Task ...> took ...`: asyncio finds the task
    in the handle's callback (`__self__` of the core the loop calls) when it is an
    `asyncio.Task`, which asyncbis's Task is once `patch_asyncio()` installed it."""

    async def slow_child():
        await asyncio.sleep(0)

    async def main():
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.0
        await asyncio.create_task(slow_child(), name="slow-child")

    asyncbis.patch_asyncio()
    try:
        with caplog.at_level("WARNING", logger="asyncio"):
            asyncbis.run(main(), debug=True)
    finally:
        asyncbis.unpatch_asyncio()
    executing = [r.getMessage() for r in caplog.records if "Executing" in r.getMessage()]
    assert any("<Task" in m and "slow-child" in m for m in executing), executing
