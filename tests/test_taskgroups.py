"""Task-group semantics (strict, as Trio's nurseries and AnyIO's task groups)."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref

import pytest

import asyncbis
from asyncbis import CancelScope, TaskGroup


def run(coro):
    return asyncbis.run(coro)


async def sleep_forever():
    await asyncio.sleep(3600)


def test_group_waits_for_children_and_returns_their_results():
    async def child(n):
        await asyncio.sleep(0.001 * n)
        return n * 2

    async def main():
        async with TaskGroup() as tg:
            tasks = [tg.create_task(child(i)) for i in range(10)]
        assert [t.result() for t in tasks] == [i * 2 for i in range(10)]
        assert tg.live_tasks == 0

    run(main())


def test_child_failure_cancels_the_group_at_once_and_all_failures_are_grouped():
    log = []

    async def fail(exc):
        raise exc  # before any yield point, so the group's cancellation cannot pre-empt it

    async def survivor():
        try:
            await sleep_forever()
        except asyncio.CancelledError:
            log.append("sibling cancelled")
            raise

    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                tg.create_task(survivor())
                tg.create_task(fail(ValueError("a")))
                tg.create_task(fail(KeyError("b")))
                try:
                    await sleep_forever()
                except asyncio.CancelledError:
                    log.append("body cancelled")
                    raise
        excs = info.value.exceptions
        assert sorted(type(e).__name__ for e in excs) == ["KeyError", "ValueError"]
        assert "body cancelled" in log and "sibling cancelled" in log

    run(main())


def test_body_exception_and_child_failures_reported_together():
    async def fail():
        raise ValueError("child")

    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                tg.create_task(fail())
                await asyncio.sleep(0.01)  # the child fails; the body is cancelled here
        assert [type(e) for e in info.value.exceptions] == [ValueError]

        with pytest.raises(BaseExceptionGroup) as info2:
            async with TaskGroup() as tg:
                tg.create_task(fail())
                try:
                    await asyncio.sleep(0)  # the child fails first and the body is cancelled
                except asyncio.CancelledError:
                    raise KeyError("body")  # the body's own error joins the child's
        kinds = sorted(type(e).__name__ for e in info2.value.exceptions)
        assert kinds == ["KeyError", "ValueError"]

    run(main())


def test_lone_outside_cancellation_leaves_as_cancelled_error_not_a_group():
    async def main():
        with CancelScope() as outer:
            try:
                async with TaskGroup() as tg:
                    tg.create_task(sleep_forever())
                    outer.cancel()
                    await sleep_forever()
            except BaseException as e:
                assert type(e) is asyncio.CancelledError
                raise
        assert outer.cancelled_caught

    run(main())


def test_group_cancel_is_absorbed_by_the_group():
    async def main():
        async with TaskGroup() as tg:
            tg.create_task(sleep_forever())
            tg.cancel()
            await sleep_forever()
        assert tg.cancel_scope.cancelled_caught

    run(main())


def test_spawning_into_a_cancelled_group_runs_to_the_first_yield_then_cancels():
    log = []

    async def child():
        log.append("started")
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            log.append("cancelled at first yield")
            raise
        log.append("not reached")

    async def main():
        async with TaskGroup() as tg:
            tg.cancel()
            t = tg.create_task(child())
        assert t.cancelled()

    run(main())
    assert log == ["started", "cancelled at first yield"]


def test_spawned_task_stays_cancelled_at_every_yield():
    counts = []

    async def stubborn():
        n = 0
        for _ in range(5):
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                n += 1
        counts.append(n)

    async def main():
        async with TaskGroup() as tg:
            tg.cancel()
            tg.create_task(stubborn())

    run(main())
    assert counts == [5]


def test_shielded_finaliser_in_a_cancelled_group_completes():
    log = []

    async def child():
        try:
            await sleep_forever()
        finally:
            with CancelScope(shield=True):
                await asyncio.sleep(0.01)
                log.append("finaliser done")

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(child())
            await asyncio.sleep(0)
            tg.cancel()

    run(main())
    assert log == ["finaliser done"]


def test_spawning_into_unentered_or_exited_group_is_a_runtime_error():
    async def main():
        tg = TaskGroup()
        coro = sleep_forever()
        with pytest.raises(RuntimeError, match="not been entered"):
            tg.create_task(coro)
        async with tg:
            pass
        with pytest.raises(RuntimeError, match="exited"):
            tg.create_task(sleep_forever())

    run(main())


def test_create_task_needs_a_coroutine():
    async def main():
        async with TaskGroup() as tg:
            with pytest.raises(TypeError, match="coroutine"):
                tg.create_task(lambda: None)

    run(main())


def test_group_cannot_be_entered_twice():
    async def main():
        tg = TaskGroup()
        async with tg:
            pass
        with pytest.raises(RuntimeError, match="already been entered"):
            async with tg:
                pass

    run(main())


def test_exiting_an_empty_group_is_a_schedule_point_not_a_cancel_point():
    async def main():
        order = []

        async def other():
            order.append("other ran")

        asyncio.create_task(other())
        with CancelScope() as scope:
            scope.cancel()
            async with TaskGroup():
                pass  # exit yields once but does not raise
            order.append("after group")
            await asyncio.sleep(0)
        assert order == ["other ran", "after group"]
        assert scope.cancelled_caught

    run(main())


def test_children_can_spawn_siblings_while_the_group_exits():
    async def main():
        results = []

        async def spawner(tg):
            await asyncio.sleep(0.01)
            tg.create_task(leaf())

        async def leaf():
            await asyncio.sleep(0.01)
            results.append("leaf")

        async with TaskGroup() as tg:
            tg.create_task(spawner(tg))
        assert results == ["leaf"]

    run(main())


def test_nested_groups_propagate_cancellation():
    async def main():
        inner_tasks = []
        async with TaskGroup() as outer:

            async def middle():
                async with TaskGroup() as inner:
                    inner_tasks.append(inner.create_task(sleep_forever()))
                    await sleep_forever()

            outer.create_task(middle())
            await asyncio.sleep(0.01)
            outer.cancel()
        assert inner_tasks[0].cancelled()

    run(main())


def test_keyboard_interrupt_in_a_child_propagates_unwrapped():
    async def child():
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(child())
            await sleep_forever()

    with pytest.raises(KeyboardInterrupt):
        run(main())


# -- start() ------------------------------------------------------------------------------


def test_start_returns_the_started_value_and_the_task_keeps_running():
    async def server(port, *, task_status):
        await asyncio.sleep(0)
        task_status.started(port + 1)
        await asyncio.sleep(0.01)

    async def main():
        async with TaskGroup() as tg:
            value = await tg.start(server, 8000)
            assert value == 8001
            assert tg.live_tasks == 1

    run(main())


def test_start_error_before_started_goes_to_the_caller_unwrapped():
    async def broken(*, task_status):
        await asyncio.sleep(0)
        raise ValueError("boom")

    async def main():
        async with TaskGroup() as tg:
            with pytest.raises(ValueError, match="boom"):
                await tg.start(broken)
            # the group was not cancelled by that failure
            assert not tg.cancel_scope.cancel_called

    run(main())


def test_start_without_started_or_twice_is_a_runtime_error():
    async def silent(*, task_status):
        await asyncio.sleep(0)

    async def twice(*, task_status):
        task_status.started()
        task_status.started()

    async def main():
        async with TaskGroup() as tg:
            with pytest.raises(RuntimeError, match="without calling"):
                await tg.start(silent)

        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                await tg.start(twice)
                await asyncio.sleep(0.01)
        assert "twice" in str(info.value.exceptions[0])

    run(main())


def test_error_after_started_goes_to_the_group():
    async def later(*, task_status):
        task_status.started()
        await asyncio.sleep(0)
        raise KeyError("later")

    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                await tg.start(later)
                await sleep_forever()
        assert type(info.value.exceptions[0]) is KeyError

    run(main())


# -- root group (run) ---------------------------------------------------------------------


def test_failing_background_task_cancels_main_and_reaches_the_caller():
    log = []

    async def background():
        await asyncio.sleep(0.01)
        raise ValueError("background failed")

    async def main():
        asyncio.create_task(background())
        try:
            await sleep_forever()
        except asyncio.CancelledError:
            log.append("main cancelled")
            raise

    with pytest.raises(BaseExceptionGroup) as info:
        run(main())
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert log == ["main cancelled"]


def test_mains_own_exception_propagates_unchanged():
    async def main():
        await asyncio.sleep(0)
        raise LookupError("main")

    with pytest.raises(LookupError, match="main"):
        run(main())


def test_run_waits_for_background_tasks():
    done = []

    async def background():
        await asyncio.sleep(0.02)
        done.append(True)

    async def main():
        asyncio.create_task(background())
        return "main result"

    assert run(main()) == "main result"
    assert done == [True]


def test_group_children_do_not_leak():
    async def main():
        async with TaskGroup() as tg:
            for _ in range(100):
                tg.create_task(asyncio.sleep(0))

    before = asyncbis._core._tree_stats()
    run(main())
    gc.collect()
    assert asyncbis._core._tree_stats() == before


def test_outer_scope_reports_a_cancellation_carried_by_an_inner_groups_error():
    """Trio: the inner nursery's exception group holds its cancelled child's Cancelled; the
    outer (cancelled) scope strips it and reports cancelled_caught while the error goes on."""

    async def main():
        with pytest.raises(BaseExceptionGroup):
            async with TaskGroup() as outer:
                async with TaskGroup() as inner:
                    outer.cancel()
                    inner.create_task(sleep_forever())
                    raise ValueError("body")
        assert outer.cancel_scope.cancelled_caught
        assert not inner.cancel_scope.cancelled_caught

    run(main())


@pytest.mark.timeout(15)
def test_group_keeps_alive_a_child_that_only_its_future_references():
    # Found on uvloop: a client task awaiting a connect future that nothing else referenced was
    # collected ("Task was destroyed but it is pending!") and its group waited forever.
    async def child() -> None:
        await asyncio.get_running_loop().create_future()  # held by nobody but the child

    async def main() -> bool:
        async with TaskGroup() as tg:
            ref = weakref.ref(tg.create_task(child()))
            await asyncio.sleep(0)
            gc.collect()
            alive = ref() is not None
            tg.cancel()
        return alive

    assert asyncbis.run(main()) is True


@pytest.mark.timeout(15)
def test_root_group_keeps_alive_a_background_task_nobody_references():
    async def child() -> None:
        await asyncio.get_running_loop().create_future()

    async def main() -> bool:
        ref = weakref.ref(asyncio.get_running_loop().create_task(child()))
        await asyncio.sleep(0)
        gc.collect()
        task = ref()
        if task is None:
            return False
        task.cancel()
        return True

    assert asyncbis.run(main()) is True


def test_garbage_group_with_a_pending_child_in_a_cycle_is_collected(monkeypatch):
    # A running child's core is kept out of the cyclic GC while its group holds it (the group
    # keeps it alive anyway); a group that itself becomes garbage must hand its children back
    # to the GC, or a child that references itself would leak forever.
    loop = asyncio.new_event_loop()
    asyncbis._task_factory.install_on_loop(loop)
    destroyed: list[str] = []
    loop.set_exception_handler(lambda _, ctx: destroyed.append(ctx["task"].get_name()))
    # Closing the abandoned parent's coroutine runs the group's __aexit__, which cannot wait for
    # its child any more: "coroutine ignored GeneratorExit", exactly as with asyncio.TaskGroup.
    # Only the message is kept: pytest's own hook keeps the exception, whose traceback holds
    # the coroutine's frame (and so the tasks) alive until the test ends (3.15).
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(str(u.exc_value)))
    refs: list[weakref.ref[asyncio.Future]] = []

    async def child() -> None:
        me = asyncio.current_task()  # task -> core -> coroutine -> frame -> task
        await loop.create_future()  # never resolved, held by nobody else
        del me

    async def parent() -> None:
        async with TaskGroup() as tg:
            refs.append(weakref.ref(tg.create_task(child(), name="child")))
            await loop.create_future()

    async def main() -> None:
        refs.append(weakref.ref(loop.create_task(parent(), name="parent")))
        await asyncio.sleep(0.01)  # both are waiting on futures nobody else holds

    try:
        loop.run_until_complete(main())
        for _ in range(3):  # the parent's cycle first, then the child's
            gc.collect()
        if sys.version_info >= (3, 15) and any(r() is not None for r in refs):
            # 3.15's collector finalises the parent's coroutine first: the group's exit cancels
            # the child, which schedules the child's next step on the stopped loop, and that
            # handle keeps both tasks alive (rightly: they would run) until the loop is closed.
            assert len(loop._ready) == 1  # type: ignore[attr-defined]
            loop.close()
            for _ in range(3):
                gc.collect()
        assert [r() for r in refs] == [None, None]
        assert sorted(destroyed) == ["child", "parent"]  # "destroyed but it is pending", as stock
        assert unraisable == ["coroutine ignored GeneratorExit"]
    finally:
        loop.close()


def test_finished_children_of_a_cancelled_group_in_cycles_are_collected_after_its_exit():
    """A cancelled group keeps its finished children out of the cyclic GC until it exits
    (TaskGroup::keeps_finished_child, group.rs); its exit puts them back, so children that
    reference themselves (task -> CancelledError -> traceback -> frame -> task) are collected."""
    refs: list[weakref.ref[asyncio.Future]] = []

    async def child() -> None:
        me = asyncio.current_task()  # the frame, kept by the traceback, references the task
        await asyncio.sleep(3600)
        del me

    async def main() -> tuple[list[bool], list[bool]]:
        async with TaskGroup() as tg:
            tasks = [tg.create_task(child()) for _ in range(5)]  # what keeps them: the list
            refs.extend(weakref.ref(t) for t in tasks)
            await asyncio.sleep(0)
            tg.cancel()
            with CancelScope(shield=True):
                await asyncio.sleep(0)  # the children finish before the exit
            kept = [t.cancelled() and not gc.is_tracked(t) for t in tasks]
        del tasks
        gc.collect()
        return kept, [r() is None for r in refs]

    assert run(main()) == ([True] * 5, [True] * 5)


def test_cancelled_group_keeps_no_more_finished_children_than_it_had_running():
    """The bound on what a cancelled group keeps out of the GC (untracked) until its exit: at
    most as many finished children as it had live when it kept the first one; children that
    finish beyond that go back under the GC at once. The exit puts back the kept ones."""

    async def main() -> tuple[list[bool], list[bool], list[bool]]:
        gate = asyncio.get_running_loop().create_future()

        async def shielded() -> None:
            with CancelScope(shield=True):
                await gate

        async with TaskGroup() as tg:
            tg.create_task(shielded())
            first = [tg.create_task(sleep_forever()) for _ in range(2)]
            await asyncio.sleep(0)
            tg.cancel()  # 3 live children: the two sleepers finish and are kept
            with CancelScope(shield=True):
                await asyncio.sleep(0)
                # Spawned into the cancelled group: each runs to its first yield and ends
                # cancelled; one more fits the bound, the others are put back at once.
                later = [tg.create_task(asyncio.sleep(0)) for _ in range(10)]
                for _ in range(3):
                    await asyncio.sleep(0)
                kept = [not gc.is_tracked(t) for t in first + later]
                gate.set_result(None)
        done = [t.cancelled() for t in first + later]
        return kept, done, [gc.is_tracked(t) for t in first + later]

    kept, done, tracked_after_exit = run(main())
    assert kept == [True, True, True] + [False] * 9
    assert done == [True] * 12
    assert tracked_after_exit == [True] * 12


def test_finished_child_of_a_cancelled_group_that_nobody_holds_is_freed_at_once():
    """A cancelled group keeps only the finished children somebody else keeps alive: one that
    nobody references is freed when it finishes, with its CancelledError and frames."""

    async def main() -> tuple[bool, bool]:
        gate = asyncio.get_running_loop().create_future()

        async def shielded() -> None:
            with CancelScope(shield=True):
                await gate

        async with TaskGroup() as tg:
            tg.create_task(shielded())
            held = tg.create_task(sleep_forever())
            unheld = weakref.ref(tg.create_task(sleep_forever()))
            await asyncio.sleep(0)
            tg.cancel()
            with CancelScope(shield=True):
                await asyncio.sleep(0)
                freed = unheld() is None
                kept = held.cancelled() and not gc.is_tracked(held)
                gate.set_result(None)
        return freed, kept

    assert run(main()) == (True, True)


def test_garbage_cancelled_group_with_kept_children_in_cycles_is_collected(monkeypatch):
    """A cancelled group whose host was abandoned (its exit waits for ever on a shielded child,
    the loop stopped) is collected with the finished children it kept out of the GC."""
    loop = asyncio.new_event_loop()
    asyncbis._task_factory.install_on_loop(loop)
    loop.set_exception_handler(lambda _, ctx: None)  # "destroyed but it is pending", as stock
    monkeypatch.setattr(sys, "unraisablehook", lambda u: None)  # "ignored GeneratorExit"
    refs: list[weakref.ref[asyncio.Future]] = []

    async def finished_child() -> None:
        me = asyncio.current_task()  # task -> CancelledError -> traceback -> frame -> task
        await asyncio.sleep(3600)
        del me

    async def stuck_child() -> None:
        with CancelScope(shield=True):
            await loop.create_future()  # never resolved, held by nobody else

    async def parent() -> None:
        async with TaskGroup() as tg:
            kids = [tg.create_task(finished_child()) for _ in range(3)]  # kept: held here
            refs.extend(weakref.ref(t) for t in kids)
            tg.create_task(stuck_child())
            await asyncio.sleep(0)
            tg.cancel()

    async def main() -> None:
        refs.append(weakref.ref(loop.create_task(parent())))
        await asyncio.sleep(0.01)  # the three are finished and kept; the exit waits

    try:
        loop.run_until_complete(main())
        assert all(r() is not None for r in refs)
        kids = [r() for r in refs[1:]]
        assert [t.cancelled() and not gc.is_tracked(t) for t in kids] == [True] * 3  # type: ignore[union-attr]
        del kids
        loop.close()  # no handle of theirs left on the loop to keep them alive
        for _ in range(3):
            gc.collect()
        assert [r() for r in refs] == [None] * 4
    finally:
        loop.close()


def test_many_live_children_stay_reachable_through_a_full_collection():
    async def child(n: int) -> int:
        await asyncio.sleep(0.01)
        return n

    async def main() -> list[int]:
        async with TaskGroup() as tg:
            tasks = [tg.create_task(child(n)) for n in range(1000)]
            refs = [weakref.ref(t) for t in tasks]
            del tasks
            await asyncio.sleep(0)
            gc.collect()
            assert all(r() is not None for r in refs)
            tasks = [r() for r in refs]
        return [t.result() for t in tasks]  # type: ignore[union-attr]

    assert asyncbis.run(main()) == list(range(1000))


def test_full_collections_still_run_by_themselves():
    # The gc.callbacks hook that hands abandoned groups' children back to the collector acts
    # on generation-2 collections (group.rs): it relies on the interpreter running them without
    # an explicit gc.collect(). 3.14 was planned to ship an incremental collector without them;
    # the 3.14/3.15 builds tested here still run them, as 3.11-3.13 do.
    if not gc.isenabled():
        pytest.skip("the cyclic GC is disabled")
    seen: list[int] = []

    def hook(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append(info["generation"])

    class Node:
        pass

    kept: list[Node] = []
    gc.callbacks.append(hook)
    try:
        for i in range(1_500_000):
            a, b = Node(), Node()
            a.other, b.other = b, a
            if i % 4 == 0:
                kept.append(a)  # survivors, so that full collections become due
            if 2 in seen:
                break
    finally:
        gc.callbacks.remove(hook)
    assert 2 in seen


# -- closing the exit awaitable (what a coroutine's close() does to an `async with` it is in) --


def _exit_waiting(tg):
    """Starts ``tg``'s exit and returns its iterator, suspended while the children run."""
    it = tg.__aexit__(None, None, None).__await__()
    waiter = next(it)
    assert isinstance(waiter, asyncio.Future) and not waiter.done()
    return it


def test_closing_a_waiting_group_exit_abandons_the_group_and_cancels_its_children():
    async def main():
        tg = TaskGroup()
        await tg.__aenter__()
        child = tg.create_task(sleep_forever())
        await asyncio.sleep(0)
        it = _exit_waiting(tg)
        assert "exiting" in repr(tg)
        it.close()
        # Not left exiting: exited, refusing new tasks, its children cancelled.
        assert "exited" in repr(tg) and not tg.accepts_tasks
        stray = sleep_forever()
        with pytest.raises(RuntimeError, match="exited"):
            tg.create_task(stray)
        assert tg.cancel_scope.cancel_called and not tg.cancel_scope.active
        await asyncio.sleep(0)
        assert child.cancelled()
        # The host task's own scopes work again: its cancellation is no longer held back.
        with CancelScope() as scope:
            scope.cancel()
            await asyncio.sleep(0)
        assert scope.cancelled_caught
        it.close()  # closing twice is harmless, like a coroutine's close()
        with pytest.raises(RuntimeError, match="closed"):
            next(it)

    run(main())


def test_closing_a_group_exit_reports_the_errors_the_group_held():
    reported = []
    release = asyncio.Event()

    async def fail():
        await asyncio.sleep(0)
        raise ValueError("not lost")

    async def lingers():
        with CancelScope(shield=True):
            await release.wait()

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        tg = TaskGroup()
        await tg.__aenter__()
        tg.create_task(fail())
        tg.create_task(lingers())
        it = _exit_waiting(tg)
        for _ in range(3):  # the exit holds back the host's cancellation meanwhile
            await asyncio.sleep(0)
        assert tg.live_tasks == 1 and "errors=1" in repr(tg)
        it.close()
        release.set()
        for _ in range(3):
            await asyncio.sleep(0)

    run(main())
    (ctx,) = reported
    assert "TaskGroup" in ctx["message"] and "closed" in ctx["message"]
    group = ctx["exception"]
    assert isinstance(group, BaseExceptionGroup)
    assert [type(e) for e in group.exceptions] == [ValueError]


def test_a_child_failing_after_its_group_exit_was_closed_is_not_swallowed():
    reported = []

    async def fails_when_cancelled():
        try:
            await sleep_forever()
        finally:
            raise KeyError("raised while cancelled")

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        tg = TaskGroup()
        await tg.__aenter__()
        child = tg.create_task(fails_when_cancelled())
        await asyncio.sleep(0)
        _exit_waiting(tg).close()
        await asyncio.sleep(0)
        assert child.done()
        # Nobody collects it for the abandoned group: it stays the task's unretrieved error,
        # which asyncio reports when the task is freed.
        del child
        gc.collect()

    run(main())
    assert any(isinstance(ctx.get("exception"), KeyError) for ctx in reported), reported
