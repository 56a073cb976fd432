"""Regression tests for the core bugs the differential test (and the AnyIO scenarios) found,
each as its minimal program; all fixed in the core (commit deaff30).

Each test states Trio's behaviour, which asyncbis now matches. docs/conformance.md lists what
asyncbis did before the fix. If one of them comes back, pin it with a strict xfail here and
tolerate it in ``mapping.TOLERATED_CORE_BUGS`` so the fuzzer keeps looking for new ones.
"""

from __future__ import annotations

import asyncio

import pytest

import asyncbis
from asyncbis import CancelScope, TaskGroup


class BodyError(Exception):
    pass


def test_body_error_alone_leaves_the_group_in_an_exception_group():
    # Trio (strict_exception_groups), AnyIO and asyncio.TaskGroup: ExceptionGroup([BodyError])
    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup():
                raise BodyError()
        assert [type(e) for e in info.value.exceptions] == [BodyError]

    asyncbis.run(main())


def test_group_scope_reports_the_children_cancellations_it_absorbed():
    # Trio: nursery.cancel_scope.cancelled_caught is True (the sleeper's Cancelled was caught)
    async def fail():
        raise BodyError()

    async def main():
        try:
            async with TaskGroup() as tg:
                tg.create_task(asyncio.sleep(10))
                tg.create_task(fail())
        except* BodyError:
            pass
        assert tg.cancel_scope.cancelled_caught

    asyncbis.run(main())


def test_error_before_started_reaches_a_cancelled_starter():
    # Trio: start() raises the child's error (unwrapped); the cancelled scope does not absorb it
    async def child(*, task_status):
        raise BodyError()

    outcome = []

    async def main():
        async with TaskGroup() as tg:
            with CancelScope() as scope:
                scope.cancel()
                try:
                    await tg.start(child)
                except BaseException as exc:
                    outcome.append(type(exc))
                    if not isinstance(exc, BodyError):
                        raise

    asyncbis.run(main())
    assert outcome == [BodyError]


def test_started_does_not_raise_when_the_starter_is_cancelled():
    # Trio: started() succeeds, start() returns the value, the child goes on in the group
    log = []

    async def child(*, task_status):
        task_status.started("value")
        log.append("after started()")

    async def main():
        async with TaskGroup() as tg:
            with CancelScope() as scope:
                scope.cancel()
                try:
                    log.append(await tg.start(child))
                except asyncio.CancelledError:
                    log.append("start() cancelled")
                    raise

    asyncbis.run(main())
    assert "after started()" in log


def test_child_before_started_is_cancelled_with_its_starter():
    # Trio: before started() the child runs under the caller's cancel scopes, so its first
    # checkpoint raises Cancelled and start() raises Cancelled, absorbed by the caller's scope
    log = []

    async def child(*, task_status):
        try:
            await asyncbis.checkpoint()
        except asyncio.CancelledError:
            log.append("child cancelled")
            raise
        log.append("child passed its checkpoint")
        task_status.started()

    async def main():
        async with TaskGroup() as tg:
            with CancelScope() as scope:
                scope.cancel()
                await tg.start(child)
            assert scope.cancelled_caught

    asyncbis.run(main())
    assert log == ["child cancelled"]


def test_exit_of_a_group_with_children_delivers_an_outer_cancellation():
    # Trio: the nursery's wait for its children takes the Cancelled and re-raises it once
    # they are done, so "after the group" is not reached and the outer scope catches it
    log = []

    async def main():
        with CancelScope() as outer:
            async with TaskGroup() as tg:
                tg.create_task(asyncio.sleep(1))
                outer.cancel()
            log.append("after the group")
        assert outer.cancelled_caught

    asyncbis.run(main())
    assert log == []


def test_task_cancel_while_waiting_for_a_group_ends_the_task_cancelled():
    # Stock asyncio, AnyIO (test_propagate_native_cancellation_from_taskgroup): CancelledError
    async def runs_a_group():
        async with TaskGroup() as tg:
            tg.create_task(asyncio.sleep(2))

    async def main():
        task = asyncio.get_running_loop().create_task(runs_a_group())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncbis.run(main())


def test_start_returns_the_value_when_the_child_fails_right_after_started():
    # Trio and AnyIO (test_start_crash_after_started_call): start() returns 2, the group
    # then raises ExceptionGroup([the child's error])
    values = []

    async def child(*, task_status):
        task_status.started(2)
        raise BodyError()

    async def main():
        with pytest.raises(BaseExceptionGroup):
            async with TaskGroup() as tg:
                values.append(await tg.start(child))

    asyncbis.run(main())
    assert values == [2]


def test_child_cancelling_the_starters_group_without_started_is_a_runtime_error():
    # Trio: the child finished before the caller could take the cancellation, so start()
    # raises RuntimeError("child exited without calling task_status.started()")
    async def child(*, task_status):
        tg.cancel_scope.cancel()

    async def main():
        nonlocal tg
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup() as tg:
                await tg.start(child)
        assert [type(e) for e in info.value.exceptions] == [RuntimeError]

    tg = None
    asyncbis.run(main())


def test_group_scope_reports_the_body_cancellation_it_absorbed():
    # Trio: nursery.cancel_scope.cancelled_caught is True (it stripped the body's Cancelled)
    async def fail():
        raise BodyError()

    async def main():
        try:
            async with TaskGroup() as tg:
                tg.create_task(fail())
                await asyncio.sleep(1)
        except* BodyError:
            pass
        assert tg.cancel_scope.cancelled_caught

    asyncbis.run(main())
