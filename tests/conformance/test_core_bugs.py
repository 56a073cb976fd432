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
