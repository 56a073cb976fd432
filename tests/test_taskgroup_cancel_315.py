"""3.15's own asyncio.TaskGroup.cancel() beside asyncbis's TaskGroup.cancel().

3.15 is the stdlib's first step toward cancelling a group as a whole: the same call, the same
"the group exits without raising" contract, but edge delivery (one CancelledError per task)
where asyncbis cancels a scope (level: every await inside raises until the group exits).
Each test runs one scenario on both and pins where they agree and where they differ
(docs/switches.md, "asyncio.TaskGroup.cancel() in 3.15").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import asyncbis
from asyncbis import _stock

pytestmark = pytest.mark.skipif(
    not hasattr(_stock.TaskGroup, "cancel"), reason="asyncio.TaskGroup.cancel() is new in 3.15"
)

Run = Callable[[Coroutine[Any, Any, list[str]]], list[str]]
BOTH = [
    pytest.param(_stock.TaskGroup, asyncio.run, id="stock"),
    pytest.param(asyncbis.TaskGroup, asyncbis.run, id="asyncbis"),
]


def both(scenario: Callable[[Any], Coroutine[Any, Any, list[str]]]) -> dict[str, list[str]]:
    return {
        "stock": asyncio.run(scenario(_stock.TaskGroup)),
        "asyncbis": asyncbis.run(scenario(asyncbis.TaskGroup)),
    }


def test_body_is_cancelled_once_by_stock_and_until_exit_by_asyncbis():
    async def scenario(group_type: Any) -> list[str]:
        log = []
        async with group_type() as tg:
            tg.cancel()
            for attempt in ("first", "second"):
                try:
                    await asyncio.sleep(0)
                    log.append(f"{attempt} await returned")
                except asyncio.CancelledError:
                    log.append(f"{attempt} CancelledError")
        log.append("after the group")  # neither raises out of the group
        return log

    assert both(scenario) == {
        "stock": ["first CancelledError", "second await returned", "after the group"],
        "asyncbis": ["first CancelledError", "second CancelledError", "after the group"],
    }


def test_a_child_that_catches_the_cancellation_runs_on_under_stock_only():
    async def scenario(group_type: Any) -> list[str]:
        log = []

        async def child() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                log.append("child CancelledError")
            await asyncio.sleep(0)  # stock: returns; asyncbis: raises again
            log.append("child went on")

        async with group_type() as tg:
            task = tg.create_task(child())
            await asyncio.sleep(0)
            tg.cancel()
        log.append(f"child cancelled: {task.cancelled()}")
        return log

    assert both(scenario) == {
        "stock": ["child CancelledError", "child went on", "child cancelled: False"],
        "asyncbis": ["child CancelledError", "child cancelled: True"],
    }


def test_spawning_after_cancel_is_refused_by_stock_and_born_cancelled_in_asyncbis():
    async def scenario(group_type: Any) -> list[str]:
        log = []

        async def child() -> None:
            log.append("child started")
            await asyncio.sleep(0)
            log.append("child went on")

        async with group_type() as tg:
            tg.cancel()
            coro = child()
            try:
                tg.create_task(coro)
                log.append("create_task returned")
            except RuntimeError as e:
                log.append(f"RuntimeError: {e}")
                assert coro.cr_frame is None  # closed, not leaked ("never awaited")
        return log

    got = both(scenario)
    assert got["stock"] == ["RuntimeError: TaskGroup <TaskGroup cancelling> is shutting down"]
    # Trio's rule: a task started in a cancelled scope runs until its first checkpoint.
    assert got["asyncbis"] == ["create_task returned", "child started"]


@pytest.mark.parametrize(("group_type", "run"), BOTH)
def test_cancel_before_entering_cancels_on_entry(group_type: Any, run: Run):
    async def scenario() -> list[str]:
        log = []
        tg = group_type()
        tg.cancel()
        async with tg:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                log.append("CancelledError")
                raise
        log.append("after the group")
        return log

    assert run(scenario()) == ["CancelledError", "after the group"]


@pytest.mark.parametrize(("group_type", "run"), BOTH)
def test_cancel_leaves_no_cancellation_behind_and_is_a_no_op_after_exit(group_type: Any, run: Run):
    async def scenario() -> list[str]:
        async with group_type() as tg:
            tg.create_task(asyncio.sleep(3600))
            tg.cancel()
            await asyncio.sleep(0)
        task = asyncio.current_task()
        assert task is not None
        log = [f"cancelling after exit: {task.cancelling()}"]
        tg.cancel()  # after exit: nothing happens
        await asyncio.sleep(0)
        log.append("still running")
        return log

    assert run(scenario()) == ["cancelling after exit: 0", "still running"]


def test_patched_asyncio_taskgroup_is_asyncbis_under_scoped_taskgroups():
    from asyncbis import switches

    state = switches.snapshot()
    try:
        asyncbis.patch_asyncio()
        assert asyncio.TaskGroup is asyncbis.TaskGroup
    finally:
        asyncbis.unpatch_asyncio()
        switches.restore(state)


@pytest.mark.parametrize(
    ("task_cancel_level", "expected"),
    [
        # Level task.cancel() is never lifted: 3.15's group uncancel()s its parent at exit,
        # which "on" ignores, so the body stays cancelled after the group (an incompatibility
        # of the default task-cancel-level with 3.15's own cancel(); scoped-taskgroups avoids it).
        ("on", ["first CancelledError", "second CancelledError", "after: CancelledError"]),
        # uncancel() back to zero lifts it: level inside the group, stock after it.
        ("uncancel", ["first CancelledError", "second CancelledError", "after: returned"]),
        ("off", ["first CancelledError", "second returned", "after: returned"]),
    ],
)
def test_315s_own_taskgroup_cancel_on_asyncbis_tasks(task_cancel_level: str, expected: list[str]):
    # scoped-taskgroups off: asyncio.TaskGroup stays 3.15's class, running on asyncbis tasks,
    # so its cancel() is as edge or level as task.cancel() is (switch task-cancel-level).
    from asyncbis import switches

    state = switches.snapshot()
    try:
        switches.disable("scoped-taskgroups")
        switches.set("task-cancel-level", task_cancel_level)
        asyncbis.patch_asyncio()
        assert asyncio.TaskGroup is _stock.TaskGroup

        async def main() -> list[str]:
            log = []
            async with asyncio.TaskGroup() as tg:
                tg.cancel()
                for attempt in ("first", "second"):
                    try:
                        await asyncio.sleep(0)
                        log.append(f"{attempt} returned")
                    except asyncio.CancelledError:
                        log.append(f"{attempt} CancelledError")
            try:
                await asyncio.sleep(0)
                log.append("after: returned")
            except asyncio.CancelledError:
                log.append("after: CancelledError")
            return log

        assert asyncio.run(main()) == expected
    finally:
        asyncbis.unpatch_asyncio()
        switches.restore(state)
