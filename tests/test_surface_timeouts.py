"""timeout()/timeout_at()/Timeout/wait_for()/shield() of the asyncbis surface."""

from __future__ import annotations

import asyncio
import math

import pytest

import asyncbis
from asyncbis import switches


@pytest.fixture(autouse=True)
def _restore_switches():
    state = switches.snapshot()
    yield
    switches.restore(state)


def run(coro):
    return asyncbis.run(coro)


def test_timeout_raises_timeout_error_and_level_cancels_inside():
    seen = []

    async def main():
        async with asyncbis.timeout(0.01) as t:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                seen.append("first")
            try:
                await asyncio.sleep(0)  # level: cancelled again at the next yield point
            except asyncio.CancelledError:
                seen.append("again")
                raise
        return t

    with pytest.raises(TimeoutError):
        run(main())
    assert seen == ["first", "again"]


def test_timeout_none_means_no_deadline_and_can_be_rescheduled():
    async def main():
        async with asyncbis.timeout(None) as t:
            assert t.when() is None
            await asyncio.sleep(0.01)
            t.reschedule(asyncio.get_running_loop().time() + 0.01)
            await asyncio.sleep(1)

    with pytest.raises(TimeoutError):
        run(main())


def test_reschedule_later_extends_and_earlier_cancels():
    async def main():
        loop = asyncio.get_running_loop()
        async with asyncbis.timeout(0.02) as t:
            t.reschedule(loop.time() + 0.2)  # extended: the timer is re-armed, not dropped
            await asyncio.sleep(0.05)
            assert not t.expired()
            t.reschedule(loop.time() + 0.01)
            await asyncio.sleep(1)

    with pytest.raises(TimeoutError):
        run(main())


def test_reschedule_outside_the_block_is_refused():
    async def main():
        t = asyncbis.timeout(1)
        with pytest.raises(RuntimeError, match="not been entered"):
            t.reschedule(None)
        async with t:
            pass
        with pytest.raises(RuntimeError, match="finished"):
            t.reschedule(None)
        with pytest.raises(RuntimeError, match="already been entered"):
            async with t:
                pass

    run(main())


def test_timeout_repr_tells_the_state():
    async def main():
        t = asyncbis.timeout_at(None)
        assert repr(t) == "<Timeout [created]>"
        async with t:
            assert repr(t) == "<Timeout [active] when=None>"
        assert repr(t) == "<Timeout [finished]>"
        t2 = asyncbis.timeout(0)
        with pytest.raises(TimeoutError):
            async with t2:
                await asyncio.sleep(1)
        assert repr(t2) == "<Timeout [expired]>" and t2.expired()

    run(main())


def test_timeout_bad_values():
    async def main():
        with pytest.raises(TypeError):
            asyncbis.timeout("1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="NaN"):
            asyncbis.timeout_at(math.nan)

    run(main())


def test_nested_timeouts_only_the_expired_one_raises():
    async def main():
        async with asyncbis.timeout(10) as outer:
            with pytest.raises(TimeoutError):
                async with asyncbis.timeout(0.01) as inner:
                    await asyncio.sleep(1)
            await asyncio.sleep(0)  # the outer one is untouched
        return outer.expired(), inner.expired()

    assert run(main()) == (False, True)

    async def main2():
        with pytest.raises(TimeoutError):
            async with asyncbis.timeout(0.01) as outer:
                async with asyncbis.timeout(10) as inner:
                    await asyncio.sleep(1)
        return outer.expired(), inner.expired()

    assert run(main2()) == (True, False)


def test_shielded_timeout_blocks_outer_cancellation():
    async def main():
        done = []
        async with asyncbis.timeout(0.01):
            async with asyncbis.timeout(1, shield=True):
                await asyncio.sleep(0.05)
                done.append("shielded part finished")
            await asyncio.sleep(1)
        return done

    with pytest.raises(TimeoutError):
        run(main())


def test_wait_for_times_out_and_cancels_the_inner_awaitable():
    async def main():
        inner = asyncio.create_task(asyncio.sleep(10))
        with pytest.raises(TimeoutError):
            await asyncbis.wait_for(inner, 0.01)
        assert inner.cancelled()

        cancelled = []

        async def coro():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        with pytest.raises(TimeoutError):
            await asyncbis.wait_for(coro(), 0.01)
        assert cancelled == [True]
        assert await asyncbis.wait_for(asyncio.sleep(0, "ok"), 1) == "ok"
        assert await asyncbis.wait_for(asyncio.sleep(0, "none"), None) == "none"
        with pytest.raises(TimeoutError):
            await asyncbis.wait_for(asyncio.sleep(1), 0)
        done = asyncio.get_running_loop().create_future()
        done.set_result(5)
        assert await asyncbis.wait_for(done, 0) == 5

    run(main())


def test_shield_runs_inline_and_protects_the_caller():
    events = []

    async def work():
        events.append(asyncio.current_task())
        await asyncio.sleep(0.05)
        return "finished"

    async def main():
        task = asyncio.current_task()
        with asyncbis.move_on_after(0.01) as scope:
            result = await asyncbis.shield(work())
            events.append(result)
            await asyncio.sleep(1)
        assert scope.cancelled_caught
        assert events == [task, "finished"]

    run(main())


def test_shield_result_is_not_a_bare_coroutine_and_works_everywhere():
    async def value(v):
        await asyncio.sleep(0)
        return v

    async def main():
        s = asyncbis.shield(value(1))
        assert not asyncio.iscoroutine(s)
        assert await s == 1
        assert await asyncio.wait_for(asyncbis.shield(value(2)), 1) == 2
        assert await asyncbis.wait_for(asyncbis.shield(value(3)), 1) == 3
        assert await asyncio.gather(asyncbis.shield(value(4)), asyncbis.shield(value(5))) == [4, 5]
        done, _ = await asyncio.wait([asyncio.ensure_future(asyncbis.shield(value(6)))])
        assert [t.result() for t in done] == [6]
        with pytest.raises(TypeError, match="awaitable"):
            asyncbis.shield(7)  # type: ignore[arg-type]

    run(main())


def test_shield_in_a_cancelled_task_still_completes():
    async def finaliser(log):
        await asyncio.sleep(0.02)
        log.append("finalised")

    async def main():
        log = []
        task = asyncio.current_task()
        asyncio.get_running_loop().call_later(0.005, task.cancel)
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            await asyncbis.shield(finaliser(log))
            raise
        finally:
            assert log == ["finalised"]

    with pytest.raises(asyncio.CancelledError):
        run(main())


def test_timeout_error_chains_the_cancellation_and_expiring_timeout_is_frozen():
    async def main():
        try:
            async with asyncbis.timeout(0.01) as t:
                try:
                    await asyncio.sleep(1)
                finally:
                    assert t.expired()
                    with pytest.raises(RuntimeError, match="expiring"):
                        t.reschedule(None)
        except TimeoutError as exc:
            return type(exc.__cause__), type(exc.__context__)

    assert run(main()) == (asyncio.CancelledError, asyncio.CancelledError)
