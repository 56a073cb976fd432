"""Cancel-scope semantics (Trio/AnyIO's), observed through the public API."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

import asyncbis
from asyncbis import CancelScope


def run(coro):
    return asyncbis.run(coro)


# -- delivery only at yield points, at every later one ------------------------------------


def test_cancel_is_delivered_at_the_next_yield_point_not_before():
    log = []

    async def main():
        with CancelScope() as scope:
            scope.cancel()
            log.append("still running after cancel()")  # no yield yet
            await asyncio.sleep(0)
            log.append("not reached")
        log.append(("caught", scope.cancelled_caught))

    run(main())
    assert log == ["still running after cancel()", ("caught", True)]


def test_level_cancellation_redelivers_at_every_yield_point():
    seen = []

    async def main():
        with CancelScope() as scope:
            scope.cancel()
            for _ in range(3):
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    seen.append("cancelled")
        # every delivery was swallowed in the body: nothing reached the scope
        assert scope.cancel_called and not scope.cancelled_caught

    run(main())
    assert seen == ["cancelled"] * 3


def test_cancel_wakes_a_blocked_wait():
    async def main():
        loop = asyncio.get_running_loop()
        with CancelScope() as scope:
            loop.call_later(0.01, scope.cancel)
            t0 = loop.time()
            await asyncio.sleep(10)
        assert scope.cancelled_caught
        assert loop.time() - t0 < 5

    run(main())


def test_cancelled_future_of_the_waiter_is_cancelled_like_stock():
    async def main():
        fut = asyncio.get_running_loop().create_future()
        with CancelScope() as scope:
            asyncio.get_running_loop().call_soon(scope.cancel)
            await fut
        assert fut.cancelled()

    run(main())


def test_scope_catches_only_its_own_cancellation():
    async def main():
        with pytest.raises(asyncio.CancelledError):
            with CancelScope() as scope:
                scope.cancel()
                raise asyncio.CancelledError()  # raised by hand: not this scope's
        assert not scope.cancelled_caught

    run(main())


def test_foreign_cancellation_from_a_future_passes_through():
    async def main():
        fut = asyncio.get_running_loop().create_future()
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            with CancelScope() as scope:
                await fut
        assert not scope.cancelled_caught

    run(main())


def test_outermost_cancelled_scope_catches():
    async def main():
        with CancelScope() as outer:
            with CancelScope() as inner:
                inner.cancel()
                outer.cancel()
                await asyncio.sleep(0)
            pytest.fail("the outer scope is cancelled too: nothing after inner runs")
        assert outer.cancelled_caught
        assert not inner.cancelled_caught

    run(main())


def test_new_scope_inside_a_cancelled_scope_is_cancelled_too():
    async def main():
        with CancelScope() as outer:
            outer.cancel()
            with CancelScope() as inner:
                assert inner.effectively_cancelled
                assert not inner.cancel_called
                await asyncio.sleep(0)
        assert outer.cancelled_caught and not inner.cancelled_caught

    run(main())


# -- shields ------------------------------------------------------------------------------


def test_shield_blocks_outer_cancellation_but_not_its_own():
    log = []

    async def main():
        with CancelScope() as outer:
            outer.cancel()
            with CancelScope(shield=True) as shielded:
                await asyncio.sleep(0)
                log.append("shielded body ran")
                with CancelScope() as own:
                    own.cancel()
                    await asyncio.sleep(0)
                log.append(("own caught", own.cancelled_caught))
                shielded.cancel()
                await asyncio.sleep(0)
                log.append("not reached")
            log.append(("shield caught", shielded.cancelled_caught))
            await asyncio.sleep(0)
            log.append("not reached either")
        log.append(("outer caught", outer.cancelled_caught))

    run(main())
    assert log == [
        "shielded body ran",
        ("own caught", True),
        ("shield caught", True),
        ("outer caught", True),
    ]


def test_lifting_the_shield_while_the_parent_is_cancelled_wakes_the_wait():
    async def main():
        loop = asyncio.get_running_loop()
        with CancelScope() as outer:
            with CancelScope(shield=True) as shielded:
                outer.cancel()
                loop.call_later(0.01, setattr, shielded, "shield", False)
                t0 = loop.time()
                await asyncio.sleep(10)
        assert outer.cancelled_caught
        assert not shielded.cancelled_caught
        assert loop.time() - t0 < 5

    run(main())


def test_shield_protects_against_task_cancel():
    async def worker(log):
        with CancelScope(shield=True):
            await asyncio.sleep(0.02)
            log.append("finished shielded work")
        await asyncio.sleep(0)
        log.append("not reached")

    async def main():
        log = []
        t = asyncio.create_task(worker(log))
        await asyncio.sleep(0.005)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert log == ["finished shielded work"]

    run(main())


# -- cancel() contract --------------------------------------------------------------------


def test_cancel_is_idempotent_and_cancel_called_never_reverts():
    async def main():
        with CancelScope() as scope:
            scope.cancel("first")
            scope.cancel("second")
            assert scope.cancel_called
            await asyncio.sleep(0)
        assert scope.cancel_called and scope.cancelled_caught
        assert scope.cancel_message == "first"

    run(main())


def test_cancel_before_entering_cancels_at_the_first_yield():
    async def main():
        scope = CancelScope()
        scope.cancel()
        reached = False
        with scope:
            reached = True
            await asyncio.sleep(0)
            pytest.fail("not reached")
        assert reached and scope.cancelled_caught

    run(main())


def test_cancel_after_exit_is_a_noop():
    async def main():
        with CancelScope() as scope:
            await asyncio.sleep(0)
        scope.cancel()
        await asyncio.sleep(0)  # no cancellation leaks into the task
        assert scope.cancel_called and not scope.cancelled_caught

    run(main())


def test_cancel_from_another_task():
    async def main():
        scope_box = []

        async def victim():
            with CancelScope() as s:
                scope_box.append(s)
                await asyncio.sleep(10)
            return s.cancelled_caught

        t = asyncio.create_task(victim())
        await asyncio.sleep(0.01)
        scope_box[0].cancel()
        assert await t is True

    run(main())


def test_cancel_from_another_thread_is_refused_with_advice():
    async def main():
        loop = asyncio.get_running_loop()
        with CancelScope() as scope:
            errors = []

            def other_thread():
                try:
                    scope.cancel()
                except RuntimeError as e:
                    errors.append(str(e))
                loop.call_soon_threadsafe(scope.cancel)

            th = threading.Thread(target=other_thread)
            th.start()
            await asyncio.sleep(5)
            th.join()
        assert scope.cancelled_caught
        assert errors and "call_soon_threadsafe" in errors[0]

    run(main())


def test_cancel_reason_becomes_the_message():
    async def main():
        msgs = []
        with CancelScope() as scope:
            scope.cancel("shutting down")
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError as e:
                msgs.append(e.args)
                raise
        assert msgs == [("shutting down",)]

    run(main())


# -- deadlines ----------------------------------------------------------------------------


def test_deadline_in_the_past_cancels_at_the_first_yield():
    async def main():
        loop = asyncio.get_running_loop()
        ran = False
        with CancelScope(deadline=loop.time() - 1) as scope:
            ran = True
            await asyncio.sleep(0)
        assert ran and scope.cancelled_caught and scope.deadline_expired

    run(main())


def test_moving_the_deadline_earlier_cancels_and_later_extends():
    async def main():
        loop = asyncio.get_running_loop()
        with CancelScope(deadline=loop.time() + 10) as scope:
            scope.deadline = loop.time() + 0.01
            await asyncio.sleep(5)
        assert scope.cancelled_caught and scope.deadline_expired

        with CancelScope(deadline=loop.time() + 0.01) as scope2:
            scope2.deadline = loop.time() + 0.05  # later: timer re-armed, not dropped
            await asyncio.sleep(0.03)  # survives the old deadline
            await asyncio.sleep(5)
        assert scope2.cancelled_caught
        assert loop.time() >= scope2.deadline

        with CancelScope(deadline=loop.time() + 10) as scope3:
            scope3.deadline = loop.time() - 1  # in the past while active
            await asyncio.sleep(0)
        assert scope3.cancelled_caught

    run(main())


def test_none_deadline_means_no_deadline():
    async def main():
        with CancelScope(deadline=None) as scope:
            assert scope.deadline == math.inf
            scope.deadline = asyncio.get_running_loop().time() + 10
            scope.deadline = None
            await asyncio.sleep(0.01)
        assert not scope.cancel_called

    run(main())


def test_nan_deadline_is_a_value_error():
    with pytest.raises(ValueError, match="NaN"):
        CancelScope(deadline=math.nan)
    scope = CancelScope()
    with pytest.raises(ValueError, match="NaN"):
        scope.deadline = math.nan
    with pytest.raises(TypeError, match="number"):
        CancelScope(deadline="soon")


def test_relative_deadline_counts_from_entry():
    async def main():
        loop = asyncio.get_running_loop()
        scope = CancelScope(relative_deadline=0.02)
        assert scope.relative_deadline == 0.02
        await asyncio.sleep(0.03)  # not running yet: the clock starts at entry
        t0 = loop.time()
        with scope:
            await asyncio.sleep(5)
        assert scope.cancelled_caught
        assert 0.015 <= loop.time() - t0 < 2

    run(main())


def test_move_on_after_absorbs_and_fail_after_raises_timeout_error():
    async def main():
        with asyncbis.move_on_after(0.01) as s:
            await asyncio.sleep(5)
        assert s.cancelled_caught

        with pytest.raises(TimeoutError):
            with asyncbis.fail_after(0.01):
                await asyncio.sleep(5)

        loop = asyncio.get_running_loop()
        with asyncbis.move_on_at(loop.time() + 0.01) as s2:
            await asyncio.sleep(5)
        assert s2.cancelled_caught
        with pytest.raises(TimeoutError):
            with asyncbis.fail_at(loop.time() + 0.01):
                await asyncio.sleep(5)

    run(main())


def test_fail_after_cancelled_otherwise_does_not_raise_timeout_error():
    async def main():
        with asyncbis.fail_after(10) as s:
            s.cancel()
            await asyncio.sleep(0)
        assert s.cancelled_caught and not s.deadline_expired

        # An outer cancellation passes through a fail_after as CancelledError, not TimeoutError.
        with CancelScope() as outer:
            with asyncbis.fail_after(10):
                outer.cancel()
                await asyncio.sleep(0)
        assert outer.cancelled_caught

    run(main())


def test_nested_timeouts_only_the_expired_one_raises():
    async def main():
        with asyncbis.fail_after(10) as outer:
            with pytest.raises(TimeoutError):
                with asyncbis.fail_after(0.01):
                    await asyncio.sleep(5)
        assert not outer.cancel_called

    run(main())


# -- an inner deadline no earlier than the outer one shares the outer's loop timer ----------
# (scope.rs, `find_cover`): its own deadline must still fire when the outer timer cannot
# stand in any more.


def test_inner_deadline_still_fires_when_the_outer_one_moves_later():
    async def main():
        loop = asyncio.get_running_loop()
        with CancelScope(deadline=loop.time() + 0.02) as outer:
            with asyncbis.move_on_after(0.05) as inner:
                outer.deadline = loop.time() + 10
                await asyncio.sleep(5)
            assert inner.cancelled_caught and inner.deadline_expired
        assert not outer.cancel_called

    run(main())


def test_inner_deadline_still_fires_after_the_outer_scope_is_cancelled_by_hand():
    async def main():
        with asyncbis.move_on_after(0.02) as outer:
            with asyncbis.move_on_after(0.05, shield=True) as inner:
                outer.cancel()
                await asyncio.sleep(5)  # shielded from outer: only its own deadline ends it
            assert inner.cancelled_caught and inner.deadline_expired
        assert outer.cancel_called and not outer.deadline_expired

    run(main())


def test_shielded_inner_deadline_fires_after_the_outer_deadline_passed():
    async def main():
        with asyncbis.move_on_after(0.01) as outer:
            with pytest.raises(TimeoutError):
                with asyncbis.fail_after(0.05, shield=True) as inner:
                    await asyncio.sleep(5)
            assert inner.deadline_expired
        assert outer.deadline_expired

    run(main())


def test_equal_deadlines_expire_together():
    async def main():
        loop = asyncio.get_running_loop()
        when = loop.time() + 0.01
        with CancelScope(deadline=when) as outer:
            with CancelScope(deadline=when) as inner:
                await asyncio.sleep(5)
        assert outer.deadline_expired and inner.deadline_expired
        assert outer.cancelled_caught and not inner.cancelled_caught

    run(main())


def test_current_effective_deadline():
    async def main():
        loop = asyncio.get_running_loop()
        assert asyncbis.current_effective_deadline() == math.inf
        with CancelScope(deadline=loop.time() + 10) as a:
            with CancelScope(deadline=loop.time() + 20):
                assert asyncbis.current_effective_deadline() == a.deadline
                with CancelScope(deadline=loop.time() + 30, shield=True) as c:
                    assert asyncbis.current_effective_deadline() == c.deadline
            a.cancel()
            assert asyncbis.current_effective_deadline() == -math.inf
            await asyncio.sleep(0)

    run(main())


def test_negative_delay_is_refused():
    async def main():
        with pytest.raises(ValueError):
            asyncbis.move_on_after(-1)

    run(main())


# -- checkpoints --------------------------------------------------------------------------


def test_checkpoint_is_a_schedule_and_cancel_point():
    async def main():
        order = []

        async def other():
            order.append("other")

        asyncio.create_task(other())
        await asyncbis.checkpoint()
        assert order == ["other"]
        with CancelScope() as s:
            s.cancel()
            await asyncbis.checkpoint()
        assert s.cancelled_caught

    run(main())


def test_checkpoint_if_cancelled_only_yields_when_cancelled():
    async def main():
        order = []

        async def other():
            order.append("other")

        asyncio.create_task(other())
        await asyncbis.checkpoint_if_cancelled()
        assert order == []  # did not yield
        with CancelScope() as s:
            s.cancel()
            await asyncbis.checkpoint_if_cancelled()
        assert s.cancelled_caught
        await asyncio.sleep(0)

    run(main())


# -- misuse -------------------------------------------------------------------------------


def test_reentering_a_scope_is_refused():
    async def main():
        scope = CancelScope()
        with scope:
            with pytest.raises(RuntimeError, match="already active"):
                scope.__enter__()
        with pytest.raises(RuntimeError, match="already been used"):
            with scope:
                pass

    run(main())


def test_exiting_out_of_order_recovers_as_trio():
    """The outer scope closes, the inner one is abandoned (its exit does nothing), one error."""

    async def main():
        a = CancelScope()
        b = CancelScope()
        a.__enter__()
        b.__enter__()
        with pytest.raises(RuntimeError, match="reverse order"):
            a.__exit__(None, None, None)
        assert b.__exit__(None, None, None) is False
        with pytest.raises(RuntimeError, match="not active"):
            a.__exit__(None, None, None)

    run(main())


def test_exiting_in_another_task_is_refused():
    async def main():
        scope = CancelScope()
        scope.__enter__()

        async def other():
            with pytest.raises(RuntimeError, match="task that entered"):
                scope.__exit__(None, None, None)

        await asyncio.create_task(other())
        scope.__exit__(None, None, None)

    run(main())


def test_entering_in_two_tasks_is_refused():
    async def main():
        scope = CancelScope()
        entered = asyncio.Event()
        release = asyncio.Event()

        async def holder():
            with scope:
                entered.set()
                await release.wait()

        t = asyncio.create_task(holder())
        await entered.wait()
        with pytest.raises(RuntimeError, match="already active"):
            scope.__enter__()
        release.set()
        await t

    run(main())


def test_scope_outside_a_task_is_a_clear_error():
    with pytest.raises(RuntimeError, match="asyncbis task"):
        with CancelScope():
            pass


def test_shield_must_be_a_bool_and_reason_a_string():
    scope = CancelScope()
    with pytest.raises(TypeError, match="bool"):
        scope.shield = 1
    with pytest.raises(TypeError, match="str"):
        scope.cancel(42)


def test_no_scope_nodes_or_tasks_leak():
    before = asyncbis._core._tree_stats()

    async def main():
        async def child():
            with CancelScope() as s:
                s.cancel()
                await asyncio.sleep(0)

        async with asyncbis.TaskGroup() as tg:
            for _ in range(50):
                tg.create_task(child())
        for _ in range(100):
            with asyncbis.move_on_after(10):
                pass

    run(main())
    assert asyncbis._core._tree_stats() == before


def test_repr_is_truthful():
    async def main():
        scope = CancelScope(deadline=asyncio.get_running_loop().time() + 5)
        assert "unentered" in repr(scope)
        with scope:
            assert "active" in repr(scope) and "deadline in" in repr(scope)
            scope.cancel()
            assert "cancelled" in repr(scope)
            await asyncio.sleep(0)
        assert "exited" in repr(scope)

    run(main())


def test_a_result_that_arrived_before_the_cancellation_is_not_lost():
    """Trio/AnyIO: an operation that completed is delivered; the cancellation follows at the
    next yield point (a memory stream must not lose an item)."""

    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        got = []

        async def receiver(scope_box):
            with CancelScope() as scope:
                scope_box.append(scope)
                got.append(await fut)
                await asyncio.sleep(0)
                got.append("not reached")
            got.append(("caught", scope.cancelled_caught))

        box = []
        t = asyncio.create_task(receiver(box))
        await asyncio.sleep(0)
        fut.set_result("item")
        box[0].cancel()
        await t
        assert got == ["item", ("caught", True)]

    run(main())


def test_a_wakeup_by_a_scope_shielded_again_before_the_step_is_still_caught():
    """The scope cancelled the awaited future to wake the task; a shield set before the task
    ran must not turn that wake-up into a stray, uncatchable CancelledError."""

    async def main():
        async with asyncbis.TaskGroup() as outer:
            with CancelScope() as middle:

                async def shield_middle():
                    middle.shield = True

                outer.create_task(shield_middle())
                outer.cancel()
                await asyncio.sleep(0.25)  # woken by the cancel; then the shield goes up
        assert outer.cancel_scope.cancelled_caught

    run(main())
