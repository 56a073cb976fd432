"""Regression tests for the runtime core defects of the reliability review (issue 13: async
generators holding a scope, deep await chains, Task.cancel() before the first step, eager
children of start(), and AnyIO's two former core differences)."""

from __future__ import annotations

import asyncio
import gc
import sys

import pytest

import asyncbis
from asyncbis import _core, switches

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
