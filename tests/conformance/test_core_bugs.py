"""Core bugs the differential test found, each as its minimal program (strict xfail).

Each test states Trio's behaviour (what asyncbis should do per DESIGN §3); the xfail reason
says what asyncbis does instead. The differential test tolerates these through
``mapping.TOLERATED_CORE_BUGS``: when a fix makes a test here pass (XPASS fails the run),
remove the xfail and the name from that set.
"""

from __future__ import annotations

import asyncio

import pytest

import asyncbis
from asyncbis import CancelScope, TaskGroup


class BodyError(Exception):
    pass


@pytest.mark.xfail(
    strict=True,
    reason="core bug: a group whose body raised, with no failing child, lets the body's error "
    "out bare (ValueError) instead of in an exception group",
)
def test_body_error_alone_leaves_the_group_in_an_exception_group():
    # Trio (strict_exception_groups), AnyIO and asyncio.TaskGroup: ExceptionGroup([BodyError])
    async def main():
        with pytest.raises(BaseExceptionGroup) as info:
            async with TaskGroup():
                raise BodyError()
        assert [type(e) for e in info.value.exceptions] == [BodyError]

    asyncbis.run(main())


@pytest.mark.xfail(
    strict=True,
    reason="core bug: group.cancel_scope.cancelled_caught stays False although the group "
    "absorbed its children's cancellations",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="core bug: when the start() caller is cancelled, the child's error raised before "
    "started() is lost (only logged as 'exception never retrieved')",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="core bug: once the start() caller is cancelled, the child's task_status.started() "
    "raises RuntimeError('called twice'), and that error is lost",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="core bug: a child not yet started() is not cancelled with its cancelled starter; "
    "it runs on past its checkpoints",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="core bug: leaving a group that still has children, in a host cancelled by an "
    "outer scope, is not a cancel point: the group exits cleanly and the code after it runs",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="core bug: Task.cancel() of a task waiting at the end of a group is absorbed by "
    "the group; the task returns normally instead of ending cancelled",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="core bug: a child that fails right after started(value), without yielding, "
    "cancels the group before start() returns, so start() raises instead of returning",
)
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
