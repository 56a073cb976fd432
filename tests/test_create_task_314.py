"""loop.create_task() as 3.14 changed it, under patch_asyncio(): the keywords given (and only
those) reach a custom task factory, and eager_start= is accepted (CPython's own test_asyncio
checks both: test_base_events.test_set_task_factory, test_eager_task_factory)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

import asyncbis
from asyncbis import switches


@pytest.fixture(autouse=True)
def _patched():
    state = switches.snapshot()
    switches.disable("no-task-factory")
    asyncbis.patch_asyncio()
    yield
    asyncbis.unpatch_asyncio()
    switches.restore(state)


async def _noop() -> None:
    pass


def test_a_factory_taking_only_loop_and_coro_works():
    made: list[Any] = []

    def factory(loop: Any, coro: Any) -> Any:  # no **kwargs: stock passes none here
        task = asyncio.Task(coro, loop=loop)
        made.append(task)
        return task

    loop = asyncio.new_event_loop()
    try:
        loop.set_task_factory(factory)
        task = loop.create_task(_noop())
        loop.run_until_complete(task)
        assert made == [task]
    finally:
        loop.close()


@pytest.mark.skipif(sys.version_info < (3, 14), reason="eager_start= is new in 3.14")
def test_eager_start_is_accepted_and_runs_the_first_step_at_once():
    steps: list[str] = []

    async def child() -> None:
        steps.append("child started")

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(child(), eager_start=True)
        steps.append("create_task returned")
        await task

    asyncio.run(main())
    assert steps == ["child started", "create_task returned"]


def test_an_unknown_keyword_is_a_type_error_naming_it():
    async def main() -> None:
        coro = _noop()
        with pytest.raises(TypeError, match="'colour'"):
            asyncio.get_running_loop().create_task(coro, colour="red")
        coro.close()

    asyncio.run(main())
