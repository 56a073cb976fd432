"""`from asyncbis import X`: the upgraded version of each changed name, stock asyncio otherwise."""

from __future__ import annotations

import asyncio

import pytest

import asyncbis


@pytest.mark.parametrize(
    "name",
    [
        "shield",
        "timeout",
        "timeout_at",
        "Timeout",
        "wait_for",
        "TaskGroup",
        "Task",
        "run",
        "Runner",
        "get_event_loop",
        "get_event_loop_policy",
        "set_event_loop_policy",
        "create_task",
    ],
)
def test_changed_names_are_upgraded(name):
    assert getattr(asyncbis, name) is not getattr(asyncio, name)
    assert getattr(asyncbis, name).__module__.startswith("asyncbis")
    assert name in asyncbis.__all__


@pytest.mark.parametrize("name", ["sleep", "Queue", "Event", "gather", "wait", "Future", "Lock"])
def test_other_names_are_stock(name):
    assert getattr(asyncbis, name) is getattr(asyncio, name)


def test_asyncbis_only_names():
    for name in ("CancelScope", "move_on_after", "fail_after", "patch_asyncio", "switches"):
        assert hasattr(asyncbis, name) and name in asyncbis.__all__


def test_create_task_makes_asyncbis_tasks_even_on_a_stock_run():
    async def main():
        t = asyncbis.create_task(asyncio.sleep(0, "x"))
        return type(asyncio.current_task()), type(t), await t

    current, created, value = asyncio.run(main())  # stock asyncio.run: a C task hosts main
    assert current is not asyncbis.Task
    assert created is asyncbis.Task and value == "x"
