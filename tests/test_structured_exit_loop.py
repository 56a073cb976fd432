"""structured-exit=loop: a run's root group hands the tasks still running when main returns over
to the loop's next run (patched ``loop.run_until_complete(coro)``, ``Runner.run()``), and the
loop's end decides (``Runner.close()`` waits for them, ``loop.close()`` leaves them pending as
stock does). docs/switches.md, "Structured exit at the end of the loop's life"."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading

import pytest

import asyncbis
from asyncbis import _core, _root_group, switches

# A hand-over that regresses into a wait would hang: fail instead.
pytestmark = pytest.mark.timeout(60)

UNRETRIEVED = ("unretrieved", "unretrieved-next-tick", "unwaited-at-finish")


@pytest.fixture(autouse=True)
def _loop_exit():
    state = switches.snapshot()
    switches.set("structured-exit", "loop")
    asyncbis.patch_asyncio()
    before = _core._tree_stats()
    yield
    asyncbis.unpatch_asyncio()
    switches.restore(state)
    gc.collect()
    assert _core._tree_stats() == before  # no scope node or task left behind
    assert _root_group._handed_over == {}


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _group_errors(eg: BaseExceptionGroup) -> list[str]:
    return [repr(e) for e in eg.exceptions]


# -- good path ----------------------------------------------------------------------------------


@pytest.mark.parametrize("eager", [False, True])
def test_a_leftover_task_continues_in_the_next_call_and_finishes(loop, eager):
    if eager:
        if sys.version_info < (3, 12):
            pytest.skip("eager tasks are 3.12+")
        loop.set_task_factory(asyncio.eager_task_factory)
    steps: list[str] = []

    async def background(gate: asyncio.Event) -> str:
        steps.append("started")
        await gate.wait()
        steps.append("finished")
        return "done"

    async def first() -> tuple[asyncio.Event, asyncio.Task]:
        gate = asyncio.Event()
        return gate, asyncio.create_task(background(gate))

    gate, task = loop.run_until_complete(first())
    # Returned as soon as first() did: not waited for, not cancelled.
    assert not task.done() and steps == ["started"]
    assert _root_group.has_leftovers(loop)

    async def second() -> str:
        # It belongs to this call's root group now.
        assert task._core.group is asyncbis.root_group(loop)
        gate.set()
        return await task

    assert loop.run_until_complete(second()) == "done"
    assert steps == ["started", "finished"]
    assert not _root_group.has_leftovers(loop)


def test_a_keep_alive_task_does_not_delay_the_call_that_created_it(loop):
    # aiohttp's pattern: the test's client leaves an idle keep-alive connection whose server
    # task waits 15 s for the next request; the fixture's teardown, a later call, closes it.
    closed: list[str] = []

    async def connection_handler() -> None:
        try:
            await asyncio.sleep(15)  # keep-alive timeout
        except asyncio.CancelledError:
            closed.append("closed by teardown")
            raise

    async def test_body() -> tuple[float, asyncio.Task]:
        return loop.time(), asyncio.create_task(connection_handler())

    started, handler = loop.run_until_complete(test_body())
    assert not handler.done()
    assert loop.time() - started < 15

    async def teardown() -> None:
        handler.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handler

    loop.run_until_complete(teardown())
    assert closed == ["closed by teardown"]


def test_a_runner_hands_leftovers_from_run_to_run(loop):
    # pytest-asyncio's pattern: fixture setup, test and teardown are three Runner.run() calls.
    events: list[str] = []

    async def server(stop: asyncio.Event) -> None:
        events.append("serving")
        await stop.wait()
        events.append("stopped")

    with asyncio.Runner() as runner:

        async def setup() -> tuple[asyncio.Event, asyncio.Task]:
            stop = asyncio.Event()
            return stop, asyncio.create_task(server(stop))

        stop, task = runner.run(setup())
        assert not task.done()
        assert runner.run(asyncio.sleep(0, "test")) == "test"
        assert not task.done()

        async def teardown() -> None:
            stop.set()
            await task

        runner.run(teardown())
    assert events == ["serving", "stopped"]


# -- the loop's end -----------------------------------------------------------------------------


def test_asyncio_run_waits_for_main_s_background_tasks():
    # asyncio.run() = one Runner.run() + Runner.close(): the close waits, so run() returns
    # only when the background tasks are done, as with structured-exit=on.
    events: list[str] = []

    async def background() -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        events.append("background done")

    async def main() -> str:
        asyncio.create_task(background())
        return "main done"

    assert asyncio.run(main()) == "main done"
    assert events == ["background done"]
    assert asyncbis.run(main()) == "main done"
    assert events == ["background done"] * 2


@pytest.mark.parametrize("mode", ("on", *UNRETRIEVED))
def test_asyncio_run_raises_a_background_failure_after_main_returned(mode):
    switches.set("root-task-group", mode)

    async def failing(ticks: int) -> None:
        for _ in range(ticks):
            await asyncio.sleep(0)
        raise ValueError(f"failed after {ticks}")

    # 0-3 ticks: the failure comes before main's exit, at its schedule point, just after the
    # hand-over (between the runs) or in Runner.close()'s last run.
    for ticks in range(4):

        async def main(ticks: int = ticks) -> str:
            asyncio.create_task(failing(ticks))
            return "main done"

        with pytest.raises(ExceptionGroup) as info:
            asyncio.run(main())
        assert _group_errors(info.value) == [f"ValueError('failed after {ticks}')"]


def test_runner_close_waits_for_leftovers_then_closes_the_loop():
    events: list[str] = []

    async def background() -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        events.append("background done")

    async def main() -> asyncio.Task:
        return asyncio.create_task(background())

    runner = asyncio.Runner()
    task = runner.run(main())
    assert not task.done()
    runner.close()
    assert events == ["background done"] and task.done()
    assert runner._loop is None


def test_runner_close_raises_a_leftovers_failure_and_still_closes_the_loop():
    async def failing() -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        raise ValueError("leftover failed")

    async def main() -> None:
        asyncio.create_task(failing())

    runner = asyncio.Runner()
    loop = runner.get_loop()
    runner.run(main())
    with pytest.raises(ExceptionGroup) as info:
        runner.close()
    assert _group_errors(info.value) == ["ValueError('leftover failed')"]
    assert loop.is_closed()


def test_loop_close_leaves_leftovers_pending_as_stock_does():
    # loop.close() does not run the loop: the leftover stays pending, and asyncio reports it
    # when it is collected, as for any task a closed stock loop leaves.
    loop = asyncio.new_event_loop()
    logged: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: logged.append(ctx["message"]))

    async def first() -> None:
        asyncio.create_task(asyncio.sleep(3600))

    loop.run_until_complete(first())
    assert _root_group.has_leftovers(loop)
    loop.close()
    assert loop not in _root_group._handed_over
    gc.collect()
    assert logged == ["Task was destroyed but it is pending!"]


# -- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ("on", *UNRETRIEVED))
def test_a_leftover_that_fails_in_the_next_call_makes_that_call_raise(loop, mode):
    switches.set("root-task-group", mode)
    seen: list[str] = []

    async def failing(gate: asyncio.Event) -> None:
        await gate.wait()
        raise ValueError("leftover failed")

    async def first() -> asyncio.Event:
        gate = asyncio.Event()
        asyncio.create_task(failing(gate))  # nobody keeps it: an orphan for every mode
        return gate

    gate = loop.run_until_complete(first())

    async def second() -> None:
        gate.set()
        try:
            await loop.create_future()  # only the root group's cancellation ends this
        except asyncio.CancelledError:
            seen.append("second cancelled")
            raise

    with pytest.raises(ExceptionGroup) as info:
        loop.run_until_complete(second())
    assert _group_errors(info.value) == ["ValueError('leftover failed')"]
    assert seen == ["second cancelled"]
    # The next call is not affected.
    assert loop.run_until_complete(asyncio.sleep(0, "third")) == "third"


def _fail_a_leftover_between_calls(loop: asyncio.AbstractEventLoop) -> None:
    """A call leaves a task running; it fails while the loop runs without a root group (no
    call: ``run_forever()``)."""

    async def failing(gate: asyncio.Event) -> None:
        await gate.wait()
        asyncio.get_running_loop().stop()
        raise ValueError("failed between calls")

    async def first() -> asyncio.Event:
        gate = asyncio.Event()
        asyncio.create_task(failing(gate))
        return gate

    gate = loop.run_until_complete(first())
    loop.call_soon(gate.set)
    loop.run_forever()


@pytest.mark.parametrize("mode", ("on", *UNRETRIEVED))
def test_a_leftover_that_fails_between_calls_is_raised_by_the_next_call(loop, mode):
    switches.set("root-task-group", mode)
    _fail_a_leftover_between_calls(loop)
    assert [g._leftovers for g in _root_group._handed_over[loop]] == [1]  # its failure, held

    async def second() -> None:
        await loop.create_future()

    with pytest.raises(ExceptionGroup) as info:
        loop.run_until_complete(second())
    assert _group_errors(info.value) == ["ValueError('failed between calls')"]


def test_a_failure_between_calls_that_no_call_adopts_is_logged_as_stock_logs_it():
    loop = asyncio.new_event_loop()
    logged: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: logged.append(ctx["message"]))
    _fail_a_leftover_between_calls(loop)
    loop.close()
    gc.collect()
    assert logged == ["Task exception was never retrieved"]


def test_a_failure_in_the_creating_call_is_that_calls(loop):
    # Before main returns nothing changes: the failure cancels the call's group and main.
    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("failed during the call")

    async def first() -> None:
        asyncio.create_task(failing())
        await loop.create_future()

    with pytest.raises(ExceptionGroup) as info:
        loop.run_until_complete(first())
    assert _group_errors(info.value) == ["ValueError('failed during the call')"]
    assert not _root_group.has_leftovers(loop)


def test_a_failing_main_cancels_the_leftovers_it_adopted(loop):
    cancelled: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append("background cancelled")
            raise

    async def first() -> None:
        asyncio.create_task(background())

    async def second() -> None:
        await asyncio.sleep(0)
        raise KeyError("main failed")

    loop.run_until_complete(first())
    with pytest.raises(KeyError):
        loop.run_until_complete(second())
    assert cancelled == ["background cancelled"]
    assert not _root_group.has_leftovers(loop)


# -- interplay ----------------------------------------------------------------------------------


def test_root_task_group_off_behaves_as_stock():
    # No root group: nothing is handed over; leftovers stay pending between calls and
    # Runner.close() cancels them (stock's _cancel_all_tasks).
    switches.disable("root-task-group")
    events: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("cancelled at close")
            raise

    async def main() -> asyncio.Task:
        return asyncio.create_task(background())

    with asyncio.Runner() as runner:
        task = runner.run(main())
        assert not task.done() and task._core.group is None
        assert _root_group._handed_over == {}
    assert events == ["cancelled at close"]


def test_structured_exit_off_still_cancels_at_each_call(loop):
    # A value set per call: a call with structured-exit off adopts the leftovers of an earlier
    # loop call and cancels them when its main returns.
    events: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def first() -> asyncio.Task:
        return asyncio.create_task(background())

    task = loop.run_until_complete(first())
    switches.disable("structured-exit")
    loop.run_until_complete(asyncio.sleep(0))
    assert task.cancelled() and events == ["cancelled"]


def test_an_interrupted_call_keeps_its_group_and_its_leftovers_run_on(loop):
    # A KeyboardInterrupt out of run_forever() leaves the call's main pending with its root
    # group (which adopted the first call's leftover); a later call does not join that group,
    # and the leftover still runs and can be awaited.
    def interrupt() -> None:
        raise KeyboardInterrupt

    async def background(gate: asyncio.Event) -> str:
        await gate.wait()
        return "done"

    async def first() -> tuple[asyncio.Event, asyncio.Task]:
        gate = asyncio.Event()
        return gate, asyncio.create_task(background(gate))

    gate, task = loop.run_until_complete(first())

    async def interrupted() -> None:
        asyncio.get_running_loop().call_soon(interrupt)
        await loop.create_future()

    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(interrupted())

    async def third() -> str:
        gate.set()
        return await task

    assert loop.run_until_complete(third()) == "done"
    # The interrupted call's main is still pending (as stock leaves it); cancel it as
    # Runner.close() would, so the loop ends clean.
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread() or sys.platform == "win32",
    reason="signals are handled in the main thread",
)
def test_the_first_signal_in_a_later_run_cancels_the_adopted_leftovers(sigint_handled):
    events: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("leftover cancelled")
            raise

    async def first() -> None:
        asyncio.create_task(background())

    async def second() -> None:
        signal.raise_signal(signal.SIGINT)
        await asyncio.sleep(3600)

    with asyncio.Runner() as runner:
        runner.run(first())
        with pytest.raises(KeyboardInterrupt):
            runner.run(second())
        assert not _root_group.has_leftovers(runner.get_loop())
    assert events == ["leftover cancelled"]


# -- misuse and bad input -----------------------------------------------------------------------


def test_a_nested_run_until_complete_raises_as_stock_and_loses_nothing(loop):
    async def background(gate: asyncio.Event) -> str:
        await gate.wait()
        return "done"

    async def first() -> tuple[asyncio.Event, asyncio.Task]:
        gate = asyncio.Event()
        return gate, asyncio.create_task(background(gate))

    gate, task = loop.run_until_complete(first())

    async def second() -> str:
        nested = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            loop.run_until_complete(nested)
        nested.close()
        with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
            asyncio.run(asyncio.sleep(0))
        gate.set()
        return await task

    assert loop.run_until_complete(second()) == "done"


def test_unknown_values_are_refused_listing_the_valid_ones():
    valid = "structured-exit takes True/False or one of off, on, loop, loop-cancel; got"
    with pytest.raises(ValueError, match=valid):
        switches.set("structured-exit", "loops")
    assert switches.value("structured-exit") == "loop"
    switches.set("structured-exit", True)
    assert switches.value("structured-exit") == "on"


def test_the_value_is_read_from_the_environment():
    code = "from asyncbis import switches; print(switches.value('structured-exit'))"
    env = {**os.environ, "ASYNCBIS_SWITCHES": "structured-exit=loop"}
    env.pop("ASYNCBIS_PROFILE", None)
    env.pop("ASYNCBIS_DISABLE", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "loop"
    env["ASYNCBIS_SWITCHES"] = "structured-exit=later"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    valid = "structured-exit takes True/False or one of off, on, loop, loop-cancel"
    assert f"{valid}; got 'later'" in proc.stderr


def test_the_core_refuses_a_hand_over_it_cannot_do():
    group = _core.TaskGroup()

    async def main() -> None:
        async with group:
            with pytest.raises(RuntimeError, match="set before the group is entered"):
                group._hand_over_at_exit()
            with pytest.raises(RuntimeError, match="only the tasks a group handed over"):
                group._adopt(_core.TaskGroup())
            with pytest.raises(RuntimeError, match="only the tasks a group handed over"):
                group._adopt(group)
        assert group._leftovers == 0

    asyncbis.run(main())
