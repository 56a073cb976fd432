"""Regression tests for the runtime core defects of the reliability review (issue 13: async
generators holding a scope, deep await chains, Task.cancel() before the first step, eager
children of start(), and AnyIO's two former core differences)."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref

import pytest

import asyncbis
from asyncbis import CancelScope, _core, switches

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def patched():
    state = switches.snapshot()
    asyncbis.patch_asyncio()
    yield
    asyncbis.unpatch_asyncio()
    switches.restore(state)


def no_stray_scope_nodes(before):
    gc.collect()
    assert _core._tree_stats() == before


# -- 1. async generators that hold a scope around `yield` -------------------------------------


def _timeout_gen(log, kind):
    async def gen():
        try:
            for i in range(10):
                if kind == "asyncio.timeout":  # asyncbis's scoped timeout after patch_asyncio()
                    async with asyncio.timeout(5):
                        yield i
                elif kind == "timeout":
                    async with asyncbis.timeout(5):
                        yield i
                else:
                    with asyncbis.move_on_after(5):
                        yield i
        finally:
            log.append(("closed", asyncio.current_task()))

    return gen


@pytest.mark.parametrize("kind", ["asyncio.timeout", "move_on_after"])
def test_break_out_of_generator_holding_a_scope(patched, kind):
    log = []
    gen = _timeout_gen(log, kind)

    async def main():
        async for x in gen():
            if x == 2:
                break
        await asyncio.sleep(0.01)
        return "ok"

    before = _core._tree_stats()
    assert asyncio.run(main()) == "ok"
    # Finalised by the loop's asyncgen finalizer, in a task of its own, not the consumer.
    assert len(log) == 1
    no_stray_scope_nodes(before)


@pytest.mark.parametrize("kind", ["timeout", "move_on_after"])
def test_consumer_exits_its_own_scopes_before_the_generator_is_finalized(kind):
    """The consumer's outer scope exits while the generator's scope is still on its stack."""
    log = []
    gen = _timeout_gen(log, kind)

    async def main():
        with CancelScope() as outer:
            async with asyncbis.timeout(10):
                async for x in gen():
                    if x == 1:
                        break
            # The consumer's scopes still work after the generator left its scope open.
            with asyncbis.move_on_after(0.01) as inner:
                await asyncio.sleep(5)
            assert inner.cancelled_caught
            outer.cancel()
            await asyncio.sleep(5)
        assert outer.cancelled_caught
        await asyncio.sleep(0)
        return "ok"

    before = _core._tree_stats()
    assert asyncbis.run(main()) == "ok"
    assert len(log) == 1
    no_stray_scope_nodes(before)


def test_generator_finalized_by_gc_while_consumer_holds_scopes():
    """GC-driven finalisation (the loop's finalizer hook) while the consumer sits in scopes
    it opened after leaving the generator: the consumer's stack stays intact."""
    log = []
    gen = _timeout_gen(log, "move_on_after")

    async def main():
        agen = gen()
        async for _x in agen:
            break
        with CancelScope() as mine:
            del agen
            gc.collect()
            # The finalizer's aclose() runs in another task while we wait here.
            for _ in range(5):
                await asyncio.sleep(0)
            assert len(log) == 1 and log[0][1] is not asyncio.current_task()
            mine.cancel()
            await asyncio.sleep(5)
        assert mine.cancelled_caught
        return "ok"

    before = _core._tree_stats()
    assert asyncbis.run(main()) == "ok"
    no_stray_scope_nodes(before)


def test_generator_finalized_by_shutdown_asyncgens(patched):
    """A generator kept alive until the loop closes: shutdown_asyncgens() closes it."""
    log = []
    gen = _timeout_gen(log, "asyncio.timeout")
    keep = []

    async def main():
        agen = gen()
        keep.append(agen)
        async for _x in agen:
            break
        return "ok"

    assert asyncio.run(main()) == "ok"
    assert len(log) == 1


def test_generator_closed_explicitly_inside_a_newer_scope():
    """`await agen.aclose()` inside a scope the consumer opened after leaving the generator:
    the generator's scope exits while not innermost (it was left open by the yield)."""
    log = []
    gen = _timeout_gen(log, "move_on_after")

    async def main():
        agen = gen()
        async for _x in agen:
            break
        with CancelScope() as mine:
            await agen.aclose()
            mine.cancel()
            await asyncio.sleep(5)
        assert mine.cancelled_caught
        return "ok"

    assert asyncbis.run(main()) == "ok"
    assert len(log) == 1


@pytest.mark.parametrize("how", ["expired", "cancelled"])
def test_consumer_that_left_a_generator_is_not_cancelled_by_its_scope(patched, how):
    """Once the consumer let go of the generator (break, the generator collected), the
    generator's scopes no longer apply to it, even before the finalizer's aclose() ran."""
    log = []

    async def gen():
        try:
            async with asyncio.timeout(0 if how == "expired" else 60) as t:
                yield t
                yield t
        finally:
            log.append("closed")

    async def main():
        async for t in gen():
            if how == "cancelled":
                t.reschedule(asyncio.get_running_loop().time())
            break
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return "done"

    assert asyncio.run(main()) == "done"
    assert log == ["closed"]


def test_generator_scope_resumed_inside_a_newer_consumer_scope_catches_its_cancellation():
    """The generator is resumed (not closed) after its consumer opened a scope: its own
    scope expires and exits while the consumer's is still active above it."""

    async def gen():
        with asyncbis.move_on_after(0.01) as s:
            yield 1
            await asyncio.sleep(5)
        yield s.cancelled_caught

    async def main():
        agen = gen()
        assert await agen.__anext__() == 1
        with CancelScope() as mine:
            assert await agen.__anext__() is True
            await asyncio.sleep(0)  # not cancelled: the generator's scope is gone
        assert not mine.cancelled_caught
        await agen.aclose()
        return "ok"

    before = _core._tree_stats()
    assert asyncbis.run(main()) == "ok"
    no_stray_scope_nodes(before)


def test_generator_timeout_expiring_inside_the_generator_still_works():
    """The generator's own timeout keeps working for the generator's own code."""

    async def gen():
        async with asyncbis.timeout(0.01):
            yield 1
            await asyncio.sleep(5)
            yield 2

    async def main():
        got = []
        with pytest.raises(TimeoutError):
            async for x in gen():
                got.append(x)
        assert got == [1]
        return "ok"

    assert asyncbis.run(main()) == "ok"


def test_misnested_exit_recovers_with_one_error():
    """Trio's recovery: exiting an outer scope while an inner one is open closes the outer one,
    marks the inner ones abandoned, and raises one clear error; the rest of the task is fine."""

    async def main():
        outer = CancelScope()
        inner = CancelScope()
        innermost = CancelScope()
        outer.__enter__()
        inner.__enter__()
        innermost.__enter__()
        with pytest.raises(RuntimeError, match="cancel scope stack corrupted") as info:
            outer.__exit__(None, None, None)
        assert "reverse order" in str(info.value)
        # The abandoned scopes exit quietly: one error, not a cascade.
        assert innermost.__exit__(None, None, None) is False
        assert inner.__exit__(None, None, None) is False
        # The task's scope stack is usable again.
        with asyncbis.move_on_after(0.01) as s:
            await asyncio.sleep(5)
        assert s.cancelled_caught
        return "ok"

    before = _core._tree_stats()
    assert asyncbis.run(main()) == "ok"
    no_stray_scope_nodes(before)


def test_misnested_exit_keeps_the_exception_as_context():
    async def main():
        outer = CancelScope()
        inner = CancelScope()
        outer.__enter__()
        inner.__enter__()
        err = ValueError("body")
        with pytest.raises(RuntimeError, match="cancel scope stack corrupted") as info:
            outer.__exit__(ValueError, err, None)
        assert info.value.__context__ is err
        inner.__exit__(None, None, None)

    asyncbis.run(main())


# -- 5. deep await chains -----------------------------------------------------------------


@pytest.mark.parametrize("task_cancel", ["on", "off"])
@pytest.mark.parametrize("links", [1_000, 10_000])
def test_cancel_reaches_the_end_of_a_deep_await_chain(links, task_cancel):
    """Level (`task-cancel-level` on) and stock edge `Task.cancel()` alike."""
    tasks = []

    async def link(n):
        if n == 0:
            await asyncio.sleep(3600)
            return "not cancelled"
        t = asyncio.get_running_loop().create_task(link(n - 1))
        tasks.append(t)
        return await t

    async def main():
        head = asyncio.get_running_loop().create_task(link(links))
        while len(tasks) < links:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert head.cancel()
        with pytest.raises(asyncio.CancelledError):
            await head
        assert all(t.cancelled() for t in tasks)

    unraisable = []
    old = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    state = switches.snapshot()
    switches.set("task-cancel-level", task_cancel)
    try:
        asyncbis.run(main())
    finally:
        sys.unraisablehook = old
        switches.restore(state)
    assert unraisable == []


# -- 10. Task.cancel() before the first step ----------------------------------------------


def test_cancel_before_first_step_never_runs_the_body():
    ran = []

    async def no_yield():
        ran.append("no_yield")
        return 1

    async def with_yield():
        ran.append("with_yield")
        await asyncio.sleep(0)
        ran.append("after")

    async def main():
        for fn in (no_yield, with_yield):
            t = asyncio.get_running_loop().create_task(fn())
            assert t.cancel("early") is True
            with pytest.raises(asyncio.CancelledError) as info:
                await t
            assert t.cancelled()
            assert info.value.args == ("early",)
        assert ran == []

    asyncbis.run(main())


def test_cancel_before_first_step_in_a_group():
    ran = []

    async def child():
        ran.append("child")

    async def main():
        async with asyncbis.TaskGroup() as tg:
            t = tg.create_task(child())
            t.cancel()
        assert t.cancelled()
        assert ran == []

    asyncbis.run(main())


def test_spawn_into_cancelled_group_still_runs_to_first_yield():
    """The other contract, by design (Trio): a child spawned into a cancelled group starts and
    is cancelled at its first yield point."""
    ran = []

    async def child():
        ran.append("start")
        await asyncio.sleep(0)
        ran.append("after")

    async def main():
        async with asyncbis.TaskGroup() as tg:
            tg.cancel()
            t = tg.create_task(child())
        assert t.cancelled()
        assert ran == ["start"]

    asyncbis.run(main())


def test_cancel_then_uncancel_before_first_step_runs_the_body_with_uncancel_mode():
    """task-cancel-level=uncancel: uncancel() back to zero lifts the cancellation (as stock's
    3.13 uncancel() resets a pending cancel), so the body runs."""
    state = switches.snapshot()
    switches.set("task-cancel-level", "uncancel")
    ran = []

    async def body():
        ran.append("body")
        await asyncio.sleep(0)
        return 1

    async def main():
        t = asyncio.get_running_loop().create_task(body())
        t.cancel()
        assert t.uncancel() == 0
        assert await t == 1
        assert ran == ["body"]

    try:
        asyncbis.run(main())
    finally:
        switches.restore(state)


def test_cancel_before_first_step_with_stock_task_cancel():
    state = switches.snapshot()
    switches.disable("task-cancel-level")
    ran = []

    async def body():
        ran.append("body")

    async def main():
        t = asyncio.get_running_loop().create_task(body())
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert ran == []

    try:
        asyncbis.run(main())
    finally:
        switches.restore(state)


# -- 9. eager children of start() --------------------------------------------------------


needs_eager = pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")


@needs_eager
@pytest.mark.parametrize("yield_before_failing", [True, False])
def test_eager_start_child_failure_after_started_reaches_the_group(yield_before_failing):
    async def child(task_status):
        task_status.started(1)
        if yield_before_failing:
            await asyncio.sleep(0)
        raise ValueError("boom")

    async def main():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        with pytest.raises(ExceptionGroup) as info:
            async with asyncbis.TaskGroup() as tg:
                assert await tg.start(child) == 1
                await asyncio.sleep(5)
        assert [type(e) for e in info.value.exceptions] == [ValueError]

    asyncbis.run(main())


@needs_eager
def test_eager_start_child_failure_before_started_goes_to_the_caller():
    async def child(task_status):
        raise ValueError("early")

    async def main():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        async with asyncbis.TaskGroup() as tg:
            with pytest.raises(ValueError, match="early"):
                await tg.start(child)
        return "ok"

    assert asyncbis.run(main()) == "ok"


# -- 11a. a completed wait is not lost to a cancellation arriving before the task resumes ---


def test_completed_wait_wins_over_a_later_cancellation():
    async def main():
        fut = asyncio.get_running_loop().create_future()
        got = []

        async def waiter():
            got.append(await fut)
            await asyncio.sleep(0)  # the cancellation is delivered here
            got.append("not reached")

        async with asyncbis.TaskGroup() as tg:
            tg.create_task(waiter())
            await asyncio.sleep(0)
            fut.set_result("item")  # the waiter's wake-up is scheduled ...
            tg.cancel()  # ... and its scope cancelled before it resumes
        assert got == ["item"]

    asyncbis.run(main())


def test_completed_wait_wins_over_task_cancel():
    async def main():
        fut = asyncio.get_running_loop().create_future()
        got = []

        async def waiter():
            got.append(await fut)
            await asyncio.sleep(0)
            got.append("not reached")

        t = asyncio.get_running_loop().create_task(waiter())
        await asyncio.sleep(0)
        fut.set_result("item")
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert got == ["item"]

    asyncbis.run(main())


# -- 11b. a start() child runs under the caller's scope until started() ------------------


def test_start_child_not_cancelled_by_target_group_before_started():
    """AnyIO's test_start_not_cancelled_before_started_by_tg: the caller is outside the target
    group; cancelling the target before started() does not reach the child, after it does."""
    reached = []
    box = {}

    async def child(task_status):
        await box["ev"].wait()
        await asyncio.sleep(0)  # not cancelled here: still under the caller's scope
        reached.append("before started")
        task_status.started("started")
        await asyncio.sleep(0)  # cancelled here: now in the (cancelled) target group
        reached.append("after started")

    async def outside(target):
        return await target.start(child)

    async def main():
        box["ev"] = ev = asyncio.Event()
        async with asyncbis.TaskGroup() as tg:
            async with asyncbis.TaskGroup() as target:
                t = tg.create_task(outside(target))
                for _ in range(5):
                    await asyncio.sleep(0)
                target.cancel()
                ev.set()
        assert t.result() == "started"
        assert reached == ["before started"]

    asyncbis.run(main())


def test_start_child_is_cancelled_with_the_caller_before_started():
    cancelled = []

    async def child(task_status):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        task_status.started()

    async def main():
        async with asyncbis.TaskGroup() as target:
            with asyncbis.move_on_after(0.01) as caller_scope:
                await target.start(child)
        assert caller_scope.cancelled_caught
        assert cancelled == [True]

    asyncbis.run(main())


def test_start_child_moves_under_the_target_group_after_started():
    async def child(task_status):
        task_status.started()
        await asyncio.sleep(3600)

    async def main():
        async with asyncbis.TaskGroup() as target:
            with CancelScope() as caller_scope:
                await target.start(child)
                caller_scope.cancel()  # no longer reaches the child
            await asyncio.sleep(0.01)
            assert target.live_tasks == 1
            target.cancel()  # does reach it
        return "ok"

    assert asyncbis.run(main()) == "ok"


# -- debug. a finished task is not kept alive until a GC pass in debug mode ---------------


def test_debug_mode_releases_a_finished_task_without_the_gc():
    """AnyIO's TestRefcycles (debug=True): the finished task, and so its exception and the
    frames of its traceback, went only with a cyclic GC pass."""

    async def fails():
        raise ValueError("x")

    async def main():
        assert asyncio.get_running_loop().get_debug()
        t = _core.spawn(asyncio.get_running_loop(), fails())
        await asyncio.sleep(0)
        assert t.done()
        exc = t.exception()
        ref = weakref.ref(t)
        del t
        await asyncio.sleep(0)  # the step's loop iteration is over: the task goes
        assert ref() is None
        # This coroutine holds `exc` as a local: 3.14 reports the coroutine itself among the
        # referrers (its frame lives inside it), 3.11-3.13 did not; anything else is a leak.
        here = sys._getframe()
        holders = [r for r in gc.get_referrers(exc) if r is not here]
        assert [r for r in holders if getattr(r, "cr_frame", None) is not here] == []

    gc.disable()
    try:
        asyncbis.run(main(), debug=True)
    finally:
        gc.enable()
