"""Task-group and cancel-scope scenarios, one per behaviour AnyIO's own test suite covers
(anyio tests/test_taskgroups.py), written for asyncbis and run against it directly.

Each test runs on the conformance suite's virtual-clock loop, so sleeps and deadlines cost no
real time and "let the other tasks block" is simply a short sleep.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from conformance.virtual_clock import VirtualClockLoop

import asyncbis
from asyncbis import (
    CancelScope,
    TaskGroup,
    checkpoint,
    current_effective_deadline,
    fail_after,
    move_on_after,
)


class Boom(Exception):
    pass


def run(main):
    return asyncbis.run(main(), loop_factory=VirtualClockLoop)


async def let_others_block():
    """Give every other task time to reach its blocking wait (virtual time: instant)."""
    await asyncio.sleep(0.001)


async def fail_later(message, delay=0.1):
    try:
        if delay:
            await asyncio.sleep(delay)
    finally:
        raise Boom(message)


def now():
    return asyncio.get_running_loop().time()


# -- spawning ------------------------------------------------------------------------------


def test_spawning_into_an_exited_group_is_refused():
    async def main():
        async with TaskGroup() as tg:
            pass
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            tg.create_task(coro)

    run(main)


def test_spawning_into_a_group_that_exited_with_an_error_is_refused():
    async def main():
        with pytest.raises(BaseExceptionGroup):
            async with TaskGroup() as tg:
                raise ZeroDivisionError
        with pytest.raises(RuntimeError):
            tg.create_task(asyncio.sleep(0))

    run(main)


def test_children_all_run_and_the_group_waits_for_them():
    results = set()

    async def add(value):
        await asyncio.sleep(0.5)
        results.add(value)

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(add("a"))
            tg.create_task(add("b"))
        assert results == {"a", "b"}

    run(main)


def test_a_child_can_spawn_a_sibling_while_the_group_runs():
    spawned = []

    async def main():
        async def spawner():
            tg.create_task(sibling())

        async def sibling():
            spawned.append("sibling ran")

        async with TaskGroup() as tg:
            tg.create_task(spawner())

    run(main)
    assert spawned == ["sibling ran"]


# -- start() and task_status ----------------------------------------------------------------


def test_start_without_a_value_returns_none():
    async def child(*, task_status):
        task_status.started()

    async def main():
        async with TaskGroup() as tg:
            assert await tg.start(child) is None

    run(main)


def test_start_returns_the_value_given_to_started():
    async def child(*, task_status):
        task_status.started("ready")

    async def main():
        async with TaskGroup() as tg:
            assert await tg.start(child) == "ready"

    run(main)


def test_calling_started_twice_raises_runtime_error():
    errors = []

    async def child(*, task_status):
        task_status.started()
        try:
            task_status.started()
        except RuntimeError as exc:
            errors.append(exc)

    async def main():
        async with TaskGroup() as tg:
            await tg.start(child)

    run(main)
    assert len(errors) == 1


def test_start_then_cancelling_the_group_before_awaiting_is_fine():
    async def child(*, task_status):
        task_status.started()

    async def main():
        async with TaskGroup() as tg:
            pending = tg.start(child)
            tg.cancel_scope.cancel()
            await pending

    run(main)


def test_error_before_started_is_raised_unwrapped_from_start():
    async def child(*, task_status):
        raise Boom("before started")

    async def main():
        async with TaskGroup() as tg:
            with pytest.raises(Boom, match="before started"):
                await tg.start(child)

    run(main)


def test_error_after_started_goes_to_the_group():
    async def child(*, task_status):
        task_status.started(2)
        raise Boom("after started")

    async def main():
        value = None
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                value = await tg.start(child)
        assert value == 2
        assert [str(e) for e in info.value.exceptions] == ["after started"]

    run(main)


def test_child_returning_without_started_makes_start_raise_runtime_error():
    async def child(*, task_status):
        pass

    async def main():
        async with TaskGroup() as tg:
            with pytest.raises(RuntimeError):
                await tg.start(child)

    run(main)


def test_start_into_a_cancelled_group_runs_the_child_to_its_first_yield_only():
    log = []

    async def child(*, task_status):
        log.append("started running")
        await asyncio.sleep(2)
        log.append("finished")

    async def main():
        async with TaskGroup() as tg:
            tg.cancel_scope.cancel()
            await tg.start(child)

    run(main)
    assert log == ["started running"]


def test_stock_cancel_of_a_task_waiting_in_start_cancels_the_child():
    log = []

    async def child(*, task_status):
        log.append("child running")
        await asyncio.sleep(2)
        log.append("child finished")

    async def starter():
        async with TaskGroup() as tg:
            await tg.start(child)

    async def main():
        task = asyncio.get_running_loop().create_task(starter())
        await let_others_block()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)
    assert log == ["child running"]


def test_stock_cancel_of_a_started_child_task_ends_only_that_child():
    log = []
    child_task = None

    async def child(*, task_status):
        nonlocal child_task
        child_task = asyncio.current_task()
        task_status.started()
        await asyncio.sleep(2)
        log.append("child finished")

    async def main():
        async with TaskGroup() as tg:
            await tg.start(child)
            await let_others_block()
            child_task.cancel()
        log.append("group done")

    run(main)
    assert log == ["group done"]


def test_start_whose_group_fails_meanwhile_is_cancelled():
    log = []

    async def fail_soon():
        await let_others_block()
        raise Boom("cancels the other start")

    async def slow_to_start(*, task_status):
        await asyncio.sleep(1)
        log.append("slow child got to started()")
        task_status.started()

    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as outer:
                async with TaskGroup() as inner:
                    inner.create_task(fail_soon())
                    await outer.start(slow_to_start)
        inner_group = info.value.exceptions[0]
        assert isinstance(inner_group, BaseExceptionGroup)
        assert [type(e) for e in inner_group.exceptions] == [Boom]

    run(main)
    assert log == []


def test_start_with_a_non_coroutine_function_raises_type_error():
    def not_async(*, task_status):
        task_status.started("hello")

    async def main():
        async with TaskGroup() as tg:
            with pytest.raises(TypeError):
                await tg.start(not_async)

    run(main)


# -- failures ------------------------------------------------------------------------------


def test_body_error_cancels_children_and_is_grouped():
    log = []

    async def child():
        await asyncio.sleep(3)
        log.append("child finished")

    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                tg.create_task(child())
                raise Boom("body")
        assert [str(e) for e in info.value.exceptions] == ["body"]

    run(main)
    assert log == []


def test_body_error_after_a_yield_cancels_children():
    log = []

    async def child():
        await asyncio.sleep(3)
        log.append("child finished")

    async def main():
        with pytest.raises(BaseExceptionGroup):
            async with TaskGroup() as tg:
                tg.create_task(child())
                await let_others_block()
                raise Boom("body")

    run(main)
    assert log == []


def test_failing_child_cancels_the_body():
    log = []

    async def child():
        await let_others_block()
        raise Boom("child")

    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                tg.create_task(child())
                await asyncio.sleep(0.5)
                log.append("body slept on")
        assert [str(e) for e in info.value.exceptions] == ["child"]

    run(main)
    assert log == []


def test_failing_child_cancels_its_siblings():
    log = []

    async def child(fail):
        if fail:
            raise Boom("child")
        await asyncio.sleep(1)
        log.append("sibling finished")

    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                tg.create_task(child(False))
                await let_others_block()
                tg.create_task(child(True))
        assert [str(e) for e in info.value.exceptions] == ["child"]

    run(main)
    assert log == []


def test_errors_of_several_children_are_grouped():
    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                tg.create_task(fail_later("task1"))
                tg.create_task(fail_later("task2", 0.15))
        assert sorted(str(e) for e in info.value.exceptions) == ["task1", "task2"]

    run(main)


def test_body_and_child_errors_are_grouped_together():
    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                tg.create_task(fail_later("child", 2))
                await let_others_block()
                raise Boom("host")
        assert sorted(str(e) for e in info.value.exceptions) == ["child", "host"]

    run(main)


def test_cancellations_are_filtered_out_of_nested_groups():
    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as outer:
                outer.create_task(fail_later("parent"))
                async with TaskGroup() as inner:
                    inner.create_task(fail_later("child"))
                    await asyncio.sleep(1)
        leaves = info.value.exceptions
        assert len(leaves) == 2
        plain = [e for e in leaves if not isinstance(e, BaseExceptionGroup)]
        nested = [e for e in leaves if isinstance(e, BaseExceptionGroup)]
        assert [str(e) for e in plain] == ["parent"]
        assert [str(e) for e in nested[0].exceptions] == ["child"]

    run(main)


def test_error_raised_after_a_nested_group_still_cancels_on_outer_cancel():
    async def failing_after_subgroup():
        async with TaskGroup() as inner:
            inner.create_task(asyncio.sleep(1))
        raise Boom("after the inner group")

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(failing_after_subgroup())
            await let_others_block()
            tg.cancel_scope.cancel()

    run(main)


# -- group cancellation ----------------------------------------------------------------------


def test_cancelled_group_cancels_a_new_child_at_its_first_yield():
    marks = []

    async def child():
        marks.append(1)
        await asyncio.sleep(0)
        marks.append(2)

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(child())
            assert marks == []
            tg.cancel_scope.cancel()

    run(main)
    assert marks == [1]


def test_cancelling_the_group_reaches_a_grandchild_group():
    async def nested():
        async with TaskGroup():
            await asyncio.sleep(1)
        raise AssertionError("not reached")

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(nested())
            await asyncio.sleep(0)
            tg.cancel_scope.cancel()

    run(main)


def test_the_same_task_can_be_cancelled_by_two_groups_in_turn():
    async def cancel_group(tg):
        await let_others_block()
        tg.cancel_scope.cancel()

    async def main():
        for _ in range(2):
            async with TaskGroup() as tg:
                tg.create_task(cancel_group(tg))
                await asyncio.sleep(1)
                raise AssertionError("not reached")

    run(main)


def test_cancelling_a_group_that_is_waiting_for_children_cancels_them():
    log = []

    async def waiter():
        try:
            await asyncio.sleep(5)
        finally:
            log.append("waiter cancelled")

    async def subgroup():
        async with TaskGroup() as tg2:
            tg2.create_task(waiter())

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(subgroup())
            await let_others_block()
            tg.cancel_scope.cancel()

    run(main)
    assert log == ["waiter cancelled"]


def test_cancelled_error_from_the_group_does_not_escape_it():
    async def main():
        async with TaskGroup() as tg:
            tg.cancel_scope.cancel()
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # not cancelled any more

    run(main)


def test_child_spawned_by_a_sibling_into_a_cancelled_group_is_cancelled():
    async def child():
        with CancelScope():
            await asyncio.sleep(1)
        raise Boom("should not get here")

    async def parent(tg):
        await let_others_block()
        tg.create_task(child())

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(parent(tg))
            tg.cancel_scope.cancel()

    run(main)


def test_cancelling_children_waiting_on_plain_futures():
    async def wait_on_future(with_scope):
        future = asyncio.get_running_loop().create_future()
        if with_scope:
            with CancelScope():
                await future
        else:
            await future

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(wait_on_future(False))
            tg.create_task(wait_on_future(True))
            tg.cancel_scope.cancel()

    run(main)


def test_cancelling_a_group_whose_child_already_finished_reports_nothing():
    reported = []

    async def noop():
        pass

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        async with TaskGroup() as tg:
            tg.create_task(noop())
            tg.cancel_scope.cancel()

    run(main)
    assert reported == []


def test_stock_cancel_of_a_task_running_a_group_propagates_as_cancelled_error():
    async def runs_a_group():
        async with TaskGroup() as tg:
            tg.create_task(asyncio.sleep(2))

    async def main():
        task = asyncio.get_running_loop().create_task(runs_a_group())
        await let_others_block()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)


# -- cancel scopes -----------------------------------------------------------------------------


def test_scope_cancelled_from_another_task():
    log = []
    scope = None

    async def child():
        nonlocal scope
        with CancelScope() as scope:
            await asyncio.sleep(2)
            log.append("not cancelled")

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(child())
            while scope is None:
                await asyncio.sleep(0)
            scope.cancel()

    run(main)
    assert log == []


def test_cancelling_a_childs_own_scope_leaves_the_group_alone():
    scope = None

    async def child():
        nonlocal scope
        with CancelScope() as scope:
            await asyncio.sleep(2)

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(child())
            await let_others_block()
            scope.cancel()
            await asyncio.sleep(0.1)  # the host is not cancelled
        assert not tg.cancel_scope.cancel_called

    run(main)


def test_cancel_before_entering_is_honoured():
    async def main():
        scope = CancelScope()
        scope.cancel()
        with scope:
            await asyncio.sleep(1)
            raise AssertionError("not reached")
        assert scope.cancelled_caught

    run(main)


def test_nested_scopes_leave_no_cancel_request_on_the_task():
    async def main():
        with CancelScope() as outer:
            with CancelScope():
                outer.cancel()
                await asyncio.sleep(0.5)
        assert asyncio.current_task().cancelling() == 0

    run(main)


def test_cancelled_scope_without_a_yield_point_catches_nothing():
    async def main():
        with CancelScope() as scope:
            scope.cancel()
        assert scope.cancel_called
        assert not scope.cancelled_caught

    run(main)


def test_cancelled_error_of_an_inner_timeout_does_not_escape_an_outer_scope():
    async def main():
        with CancelScope() as scope:
            with move_on_after(0.1):
                await asyncio.sleep(1)
            scope.cancel()
        assert not scope.cancelled_caught  # no yield point after cancel()

    run(main)


# -- shields ---------------------------------------------------------------------------------


def test_shielded_scope_finishes_its_work_while_the_group_is_cancelled():
    log = []

    async def cancel_group(tg):
        await let_others_block()
        tg.cancel_scope.cancel()

    async def main():
        async with TaskGroup() as tg:
            tg.create_task(cancel_group(tg))
            with move_on_after(10, shield=True) as inner:
                assert inner.shield
                await asyncio.sleep(0.1)
                log.append("inner sleep done")
            await asyncio.sleep(1)
            log.append("outer sleep done")
        assert tg.cancel_scope.cancel_called
        assert not inner.cancel_called

    run(main)
    assert log == ["inner sleep done"]


def test_cancelling_the_group_from_inside_a_shield_shows_after_it():
    async def main():
        async with TaskGroup() as tg:
            with CancelScope(shield=True):
                tg.cancel_scope.cancel()
                assert current_effective_deadline() == math.inf
            assert current_effective_deadline() == -math.inf
            for _ in range(2):
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.sleep(0.01)

    run(main)


def test_a_shielded_scope_is_still_cancelled_by_its_own_cancel():
    async def main():
        with CancelScope(shield=True) as scope:
            scope.cancel()
            assert current_effective_deadline() == -math.inf
            with pytest.raises(asyncio.CancelledError):
                await asyncio.sleep(0)

    run(main)


def test_a_shielded_scope_cancelled_from_another_task():
    log = []

    async def cancel_scope(scope):
        await let_others_block()
        scope.cancel()

    async def main():
        async with TaskGroup() as tg:
            with CancelScope(shield=True) as scope:
                tg.create_task(cancel_scope(scope))
                await asyncio.sleep(0.5)
                log.append("slept")

    run(main)
    assert log == []


def test_toggling_the_shield_while_the_group_is_cancelled():
    log = []

    async def child(*, task_status):
        with CancelScope() as scope:
            await asyncio.sleep(0.1)
            scope.shield = True
            task_status.started()
            await asyncio.sleep(0.1)
            log.append("shielded sleep done")
            scope.shield = False
            await asyncio.sleep(1)
            log.append("not reached")

    async def main():
        async with TaskGroup() as tg:
            await tg.start(child)
            tg.cancel_scope.cancel()

    run(main)
    assert log == ["shielded sleep done"]


def test_shield_hides_outer_deadlines_from_current_effective_deadline():
    async def main():
        with move_on_after(10):
            with CancelScope(shield=True):
                with move_on_after(1000):
                    assert current_effective_deadline() - now() > 900

    run(main)


def test_cancelled_outer_scopes_are_seen_after_leaving_an_inner_shield():
    async def cancel_outer_then_checkpoint(which):
        log = []
        with CancelScope() as scope1:
            with CancelScope() as scope2:
                with CancelScope(shield=True):
                    scope1.cancel()
                    if which == "both":
                        scope2.cancel()
                if which == "outer only":
                    await checkpoint()
                    log.append("past the checkpoint in the middle scope")
            await checkpoint()
            log.append("past the checkpoint in the outer scope")
        return log

    async def main():
        async with TaskGroup() as tg:
            both = tg.create_task(cancel_outer_then_checkpoint("both"))
            outer = tg.create_task(cancel_outer_then_checkpoint("outer only"))
        assert both.result() == []
        assert outer.result() == []

    run(main)


# -- deadlines -------------------------------------------------------------------------------


def test_move_on_after_expiry_is_absorbed_and_leaves_nothing_behind():
    async def main():
        with move_on_after(0.1):
            await asyncio.sleep(1)
        await asyncio.sleep(0)

    run(main)


@pytest.mark.parametrize("delay", [0, 0.1], ids=["instant", "delayed"])
def test_move_on_after_expires(delay):
    async def main():
        reached = False
        with move_on_after(delay) as scope:
            await asyncio.sleep(1)
            reached = True
        assert not reached
        assert scope.cancel_called and scope.cancelled_caught

    run(main)


def test_move_on_after_none_never_expires():
    async def main():
        with move_on_after(None) as scope:
            assert scope.deadline == math.inf
            await asyncio.sleep(0.1)
        assert not scope.cancel_called

    run(main)


@pytest.mark.parametrize("delay", [0, 0.1], ids=["instant", "delayed"])
def test_fail_after_raises_timeout_error(delay):
    async def main():
        with pytest.raises(TimeoutError):
            with fail_after(delay) as scope:
                await asyncio.sleep(1)
        assert scope.cancel_called and scope.cancelled_caught

    run(main)


def test_fail_after_none_never_expires():
    async def main():
        with fail_after(None) as scope:
            assert scope.deadline == math.inf
            await asyncio.sleep(0.1)
        assert not scope.cancel_called and not scope.cancelled_caught

    run(main)


def test_fail_after_works_after_an_earlier_group_cancellation():
    async def main():
        async with TaskGroup() as tg:
            tg.cancel_scope.cancel()
            await asyncio.get_running_loop().create_future()
        reached = False
        with pytest.raises(TimeoutError):
            with fail_after(0.1):
                await asyncio.sleep(0.5)
                reached = True
        assert not reached

    run(main)


def test_fail_after_cancelled_before_its_deadline_raises_nothing():
    async def main():
        with fail_after(1) as scope:
            scope.cancel()
            await checkpoint()
        assert scope.cancelled_caught

    run(main)


def test_nested_move_on_after_the_outer_deadline_wins():
    async def main():
        reached = []
        with move_on_after(0.1) as outer:
            assert current_effective_deadline() == outer.deadline
            with move_on_after(1) as inner:
                assert current_effective_deadline() == outer.deadline
                await asyncio.sleep(2)
                reached.append("sleep")
            reached.append("after inner")
        assert reached == []
        assert outer.cancel_called and outer.cancelled_caught
        assert not inner.cancel_called and not inner.cancelled_caught

    run(main)


def test_deadline_in_the_past_at_entry_cancels_at_the_first_yield():
    async def main():
        with move_on_after(0):
            await asyncio.sleep(0)
            raise AssertionError("not reached")

    run(main)


def test_deadline_moved_later_extends_the_scope():
    async def main():
        with fail_after(0.1) as scope:
            scope.deadline += 0.3
            await asyncio.sleep(0.2)

    run(main)


def test_timeout_error_when_the_group_inside_is_cancelled_by_the_deadline():
    async def main():
        with pytest.raises(TimeoutError):
            with fail_after(0.1):
                async with TaskGroup() as tg:
                    tg.create_task(asyncio.sleep(2))
                    await asyncio.sleep(2)

    run(main)


def test_inner_fail_after_is_not_a_timeout_when_an_outer_scope_was_cancelled():
    async def killer(scope):
        await let_others_block()
        scope.cancel()

    async def main():
        async with TaskGroup() as tg:
            with CancelScope() as scope:
                with CancelScope():
                    tg.create_task(killer(scope))
                    with fail_after(1):
                        await asyncio.sleep(2)
                        raise AssertionError("not reached")
                    raise AssertionError("not reached either")
                raise AssertionError("nor this")
        assert scope.cancel_called

    run(main)


def test_fail_after_inside_a_shield_times_out_although_an_outer_scope_was_cancelled():
    async def killer(scope):
        await let_others_block()
        scope.cancel()

    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                with CancelScope() as scope:
                    with CancelScope(shield=True):
                        tg.create_task(killer(scope))
                        with fail_after(0.2):
                            await asyncio.sleep(2)
        assert [type(e) for e in info.value.exceptions] == [TimeoutError]

    run(main)
