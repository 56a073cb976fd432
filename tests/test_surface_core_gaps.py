"""Stock contracts the surface relies on, found by running CPython's test_asyncio with every
switch off (docs/stdlib-compat.md). Each was a core gap, fixed; these are the regressions.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import sys
import weakref

import pytest

import asyncbis
from asyncbis import switches


@pytest.fixture(autouse=True)
def _patched():
    asyncbis.patch_asyncio()
    yield
    asyncbis.unpatch_asyncio()


def test_step_handle_names_its_task():
    async def work():
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(work())
        handle = loop._ready[-1]  # the task's first step
        assert getattr(handle._callback, "__self__", None) is task
        formatted = asyncio.base_events._format_handle(handle)
        expected = repr(task)
        loop.run_until_complete(task)
    finally:
        loop.close()
    assert formatted == expected


def test_finished_task_step_names_it_in_debug_mode():
    """The slow-callback log is written after the step ran: in debug mode a finished task's
    step still names it (test_base_events.test_log_slow_callbacks)."""

    async def work():
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    try:
        task = loop.create_task(work())
        handle = loop._ready[-1]
        loop.run_until_complete(task)
        for _ in range(2):  # past the iteration in which the step lets go of the task
            loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    assert getattr(handle._callback, "__self__", None) is task


def test_finished_task_step_keeps_no_reference_outside_debug_mode():
    """Outside debug mode a task's finish creates no weak reference to it (one allocation and
    one GC-tracked object per task, for a reader that only exists in debug mode): the step
    lets go of the task entirely."""

    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()

        async def work():
            await fut

        task = loop.create_task(work())
        handle = loop._ready[-1]
        loop.run_until_complete(asyncio.sleep(0))  # the first step ran; the task waits
        assert not task.done()
        running_refs = weakref.getweakrefcount(task)
        fut.set_result(None)
        loop.run_until_complete(task)
    finally:
        loop.close()
    assert weakref.getweakrefcount(task) == running_refs
    assert getattr(handle._callback, "__self__", None) is None


@pytest.mark.skipif(sys.version_info < (3, 13), reason="3.13+ contract")
def test_awaiting_a_cancelled_task_reraises_its_own_cancelled_error():
    raised = []

    async def child():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError as exc:
            raised.append(exc)
            raise

    async def main():
        t = asyncio.create_task(child())
        await asyncio.sleep(0)
        t.cancel("foo")
        try:
            await t
        except asyncio.CancelledError as exc:
            return exc

    switches.disable(*switches.NAMES)
    try:
        exc = asyncio.run(main())
    finally:
        switches.enable(*switches.NAMES)
    assert exc is raised[0]


def test_slow_step_log_names_an_unreferenced_task():
    logged = []

    async def stop(loop):
        loop.stop()

    loop = asyncio.new_event_loop()
    try:
        loop.set_debug(True)
        loop.slow_callback_duration = 0.0
        handler = asyncio.base_events.logger
        original = handler.warning
        handler.warning = lambda fmt, *args: logged.append(fmt % args)  # type: ignore[method-assign]
        try:
            asyncio.ensure_future(stop(loop), loop=loop)  # nobody keeps the task
            loop.run_forever()
        finally:
            handler.warning = original  # type: ignore[method-assign]
    finally:
        loop.close()
    assert any(line.startswith("Executing <Task") and "stop()" in line for line in logged), logged


def test_timeout_aenter_does_nothing_until_awaited():
    async def main():
        cm = asyncbis.timeout(10)
        aw = cm.__aenter__()
        try:
            with pytest.raises(RuntimeError, match="not been entered"):
                cm.reschedule(None)
        finally:
            close = getattr(aw, "close", None)
            if close is not None:
                close()

    asyncbis.run(main())
