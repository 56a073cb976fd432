"""structured-exit=loop-cancel: as ``loop`` from call to call (a run's root group hands the tasks
still running when main returns over to the loop's next run), but ``Runner.close()`` (so
``asyncio.run()`` and ``asyncbis.run()``) cancels what is left, by cancelling its last run's
root group, and then waits for it, as stock's close cancels leftover tasks; a failure of their
cleanup still reaches the caller. docs/switches.md, "Structured exit at the end of the loop's
life"."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import signal
import subprocess
import sys
import threading

import pytest

import asyncbis
from asyncbis import _core, _root_group, switches

# A close that regresses into waiting for a leftover nothing stops would hang: fail instead.
pytestmark = pytest.mark.timeout(60)

needs_main_thread_signals = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread() or sys.platform == "win32",
    reason="signals are handled in the main thread",
)


@pytest.fixture(autouse=True)
def _loop_cancel_exit(request):
    state = switches.snapshot()
    switches.set("structured-exit", "loop-cancel")
    asyncbis.patch_asyncio()
    before = _core._tree_stats()
    yield
    asyncbis.unpatch_asyncio()
    switches.restore(state)
    gc.collect()
    if "hard_shutdown" not in request.fixturenames:
        assert _core._tree_stats() == before  # no scope node or task left behind
    assert _root_group._handed_over == {}


@pytest.fixture
def hard_shutdown():
    """For a test that ends in a hard shutdown (the second signal): it abandons the task still
    finalising, with its group and scopes, on the closed loop, whatever structured-exit says, so
    the check that nothing is left behind is skipped."""
    return


def _group_errors(eg: BaseExceptionGroup) -> list[str]:
    return [repr(e) for e in eg.exceptions]


async def _forever(events: list[str], name: str) -> None:
    """A background task nothing stops (pytest-asyncio's fixture tasks, aiosmtplib's)."""
    events.append(f"{name} started")
    try:
        while True:
            await asyncio.sleep(0.1)
    except asyncio.CancelledError:
        events.append(f"{name} cancelled")
        raise


# -- the loop's end -----------------------------------------------------------------------------


@pytest.mark.parametrize("run", [asyncio.run, asyncbis.run], ids=["asyncio.run", "asyncbis.run"])
def test_run_cancels_main_s_background_task_as_stock_does(run):
    events: list[str] = []
    tasks: list[asyncio.Task] = []

    async def main() -> str:
        tasks.append(asyncio.create_task(_forever(events, "background")))
        await asyncio.sleep(0)
        return "main done"

    assert run(main()) == "main done"
    assert events == ["background started", "background cancelled"]
    assert tasks[0].cancelled()


def test_a_leftover_is_cancelled_once_main_has_returned_not_before():
    # The hand-over happens as with loop: main's return does not cancel; only the close does.
    events: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def main() -> asyncio.Task:
        task = asyncio.create_task(background())
        await asyncio.sleep(0)
        return task

    with asyncio.Runner() as runner:
        task = runner.run(main())
        assert not task.done() and events == []
        assert _root_group.has_leftovers(runner.get_loop())
    assert task.cancelled() and events == ["cancelled"]


def test_a_leftover_from_an_earlier_run_runs_on_until_the_close_cancels_it():
    # pytest-asyncio's pattern: a module-scoped fixture starts a task in one Runner.run(); the
    # tests are later runs on the same runner; nothing stops the task; the runner's close does.
    events: list[str] = []

    async def setup() -> asyncio.Task:
        task = asyncio.create_task(_forever(events, "fixture task"))
        await asyncio.sleep(0)
        return task

    async def a_test(task: asyncio.Task) -> str:
        assert task._core.group is asyncbis.root_group(asyncio.get_running_loop())
        await asyncio.sleep(0.15)  # the task keeps running inside this run
        return "test passed"

    with asyncio.Runner() as runner:
        task = runner.run(setup())
        assert runner.run(a_test(task)) == "test passed"
        assert runner.run(a_test(task)) == "test passed"
        assert not task.done() and events == ["fixture task started"]
    assert task.cancelled()
    assert events == ["fixture task started", "fixture task cancelled"]


def test_a_leftover_that_finishes_before_the_close_is_not_cancelled():
    events: list[str] = []

    async def background(gate: asyncio.Event) -> str:
        await gate.wait()
        events.append("finished")
        return "done"

    async def setup() -> tuple[asyncio.Event, asyncio.Task]:
        gate = asyncio.Event()
        return gate, asyncio.create_task(background(gate))

    async def release(gate: asyncio.Event) -> None:
        gate.set()

    with asyncio.Runner() as runner:
        gate, task = runner.run(setup())
        runner.run(release(gate))  # the task finishes in this run's exit or during the next
        runner.run(asyncio.sleep(0))
    assert task.result() == "done" and events == ["finished"]


def test_a_leftover_s_shielded_cleanup_runs_to_completion():
    events: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            with asyncbis.CancelScope(shield=True):
                for step in range(3):
                    await asyncio.sleep(0)
                    events.append(f"cleanup {step}")
            raise

    async def via_asyncio_shield() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            # inline-shield: the coroutine runs inline under a shielded scope.
            await asyncio.shield(asyncio.sleep(0.01))
            events.append("asyncio.shield cleanup")
            raise

    async def main() -> None:
        asyncio.create_task(background())
        asyncio.create_task(via_asyncio_shield())
        await asyncio.sleep(0)

    asyncio.run(main())
    assert events == ["cleanup 0", "cleanup 1", "cleanup 2", "asyncio.shield cleanup"]


def test_a_leftover_that_swallows_the_cancellation_is_cancelled_again_at_its_next_await():
    # Level cancellation: the close's cancellation holds until the task is done, so a leftover
    # that catches it and goes on waiting cannot hang the close (stock's close would wait).
    events: list[str] = []

    async def stubborn() -> str:
        for attempt in range(3):
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                events.append(f"swallowed {attempt}")
        return "gave up"

    async def main() -> asyncio.Task:
        return asyncio.create_task(stubborn())

    runner = asyncio.Runner()
    task = runner.run(main())
    runner.close()
    assert events == ["swallowed 0", "swallowed 1", "swallowed 2"]
    assert task.result() == "gave up"


def test_the_close_cancels_only_its_own_loop_s_leftovers():
    # Two runners open at once: each close takes its own leftovers, not the other's.
    events: list[str] = []

    async def start(name: str) -> asyncio.Task:
        task = asyncio.create_task(_forever(events, name))
        await asyncio.sleep(0)
        return task

    first = asyncio.Runner()
    second = asyncio.Runner()
    try:
        a = first.run(start("first"))
        b = second.run(start("second"))
        second.close()
        assert b.cancelled() and not a.done()

        async def still_running() -> bool:
            await asyncio.sleep(0)
            return not a.done()

        assert first.run(still_running())
    finally:
        first.close()
        second.close()
    assert a.cancelled()
    assert events == ["first started", "second started", "second cancelled", "first cancelled"]


def test_a_nested_run_in_another_thread_cancels_its_leftovers_not_the_outer_ones():
    # asyncio.run() in an executor thread, from a task of an outer asyncio.run(): the inner
    # close cancels the inner loop's leftover; the outer one runs on until the outer close.
    events: list[str] = []

    async def inner() -> str:
        asyncio.create_task(_forever(events, "inner"))
        await asyncio.sleep(0)
        return "inner done"

    async def outer() -> str:
        outer_task = asyncio.create_task(_forever(events, "outer"))
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            result = await loop.run_in_executor(pool, asyncio.run, inner())
        assert events == ["outer started", "inner started", "inner cancelled"]
        assert not outer_task.done()
        return result

    assert asyncio.run(outer()) == "inner done"
    assert events[-1] == "outer cancelled"


def test_the_value_is_read_when_the_close_starts():
    # Leftovers handed over by loop runs are cancelled by a loop-cancel close, and leftovers
    # handed over by loop-cancel runs are waited for by a loop close.
    events: list[str] = []

    async def start() -> asyncio.Task:
        return asyncio.create_task(_forever(events, "background"))

    switches.set("structured-exit", "loop")
    with asyncio.Runner() as runner:
        task = runner.run(start())
        switches.set("structured-exit", "loop-cancel")
    assert task.cancelled()

    async def finishing(gate: asyncio.Event) -> str:
        await gate.wait()
        return "finished"

    async def start_finishing() -> tuple[asyncio.Event, asyncio.Task]:
        gate = asyncio.Event()
        return gate, asyncio.create_task(finishing(gate))

    runner = asyncio.Runner()
    gate, task = runner.run(start_finishing())
    switches.set("structured-exit", "loop")
    runner.get_loop().call_soon(gate.set)
    runner.close()  # loop: waits, and the task finishes
    assert task.result() == "finished"


# -- failures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("run", [asyncio.run, asyncbis.run], ids=["asyncio.run", "asyncbis.run"])
def test_a_leftover_whose_cleanup_raises_makes_run_raise_it(run):
    # Stock's close only logs what a cancelled leftover raises; here it is the root group's
    # failure and reaches the caller, once the loop is closed.
    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise ValueError("cleanup failed") from None

    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> str:
        loops.append(asyncio.get_running_loop())
        asyncio.create_task(background())
        await asyncio.sleep(0)
        return "main done"

    with pytest.raises(ExceptionGroup) as info:
        run(main())
    assert _group_errors(info.value) == ["ValueError('cleanup failed')"]
    assert loops[0].is_closed()


def test_runner_close_raises_a_cleanup_failure_and_still_closes_the_loop():
    events: list[str] = []

    async def failing_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise KeyError("cleanup failed") from None

    async def main() -> None:
        asyncio.create_task(failing_cleanup())
        asyncio.create_task(_forever(events, "sibling"))
        await asyncio.sleep(0)

    runner = asyncio.Runner()
    loop = runner.get_loop()
    runner.run(main())
    with pytest.raises(ExceptionGroup) as info:
        runner.close()
    assert _group_errors(info.value) == ["KeyError('cleanup failed')"]
    assert events == ["sibling started", "sibling cancelled"]  # the sibling is cancelled too
    assert loop.is_closed() and runner._loop is None


def test_a_leftover_that_failed_before_the_close_is_raised_by_it():
    # A failure between the last call and the close (held unread) is the close's to raise: the
    # cancellation of what is still running does not hide it.
    events: list[str] = []

    async def failing(gate: asyncio.Event) -> None:
        await gate.wait()
        asyncio.get_running_loop().stop()
        raise ValueError("failed between calls")

    async def start() -> asyncio.Event:
        gate = asyncio.Event()
        asyncio.create_task(failing(gate))
        asyncio.create_task(_forever(events, "other"))
        return gate

    runner = asyncio.Runner()
    loop = runner.get_loop()
    gate = runner.run(start())
    loop.call_soon(gate.set)
    loop.run_forever()  # the loop runs without a call: the failure is held
    with pytest.raises(ExceptionGroup) as info:
        runner.close()
    assert _group_errors(info.value) == ["ValueError('failed between calls')"]
    assert events == ["other started", "other cancelled"]


def test_a_failure_in_a_later_call_still_cancels_that_call_not_the_close():
    # Before the close, a leftover's failure is the failure of the call it happens in, as with
    # loop; that call cancels and waits for everything it holds, so the close has nothing left.
    events: list[str] = []

    async def failing(gate: asyncio.Event) -> None:
        await gate.wait()
        raise ValueError("leftover failed")

    async def start() -> asyncio.Event:
        gate = asyncio.Event()
        asyncio.create_task(failing(gate))
        asyncio.create_task(_forever(events, "other"))
        return gate

    async def later(gate: asyncio.Event) -> None:
        gate.set()
        await asyncio.sleep(3600)

    with asyncio.Runner() as runner:
        gate = runner.run(start())
        with pytest.raises(ExceptionGroup) as info:
            runner.run(later(gate))
        assert _group_errors(info.value) == ["ValueError('leftover failed')"]
        assert events == ["other started", "other cancelled"]
        assert not _root_group.has_leftovers(runner.get_loop())


# -- signals ------------------------------------------------------------------------------------


@needs_main_thread_signals
def test_sigint_in_main_cancels_the_background_tasks_and_raises_keyboard_interrupt(
    sigint_handled,
):
    events: list[str] = []

    async def main() -> None:
        asyncio.create_task(_forever(events, "background"))
        await asyncio.sleep(0)
        signal.raise_signal(signal.SIGINT)
        await asyncio.sleep(3600)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert events == ["background started", "background cancelled"]


@needs_main_thread_signals
def test_sigint_during_the_close_lets_shielded_cleanup_finish_then_raises(sigint_handled):
    # The first signal during the close's last run cancels its root group (cancelled already):
    # shielded cleanup still completes, then close() raises KeyboardInterrupt, loop closed.
    events: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            with asyncbis.CancelScope(shield=True):
                signal.raise_signal(signal.SIGINT)
                await asyncio.sleep(0.01)
                events.append("cleanup done")
            raise

    async def main() -> None:
        asyncio.create_task(background())
        await asyncio.sleep(0)

    runner = asyncio.Runner()
    loop = runner.get_loop()
    runner.run(main())
    with pytest.raises(KeyboardInterrupt):
        runner.close()
    assert events == ["cleanup done"]
    assert loop.is_closed()


@needs_main_thread_signals
def test_a_second_sigint_during_the_close_is_a_hard_shutdown(sigint_handled, hard_shutdown):
    # A shielded cleanup that never ends: the first signal does not stop it, the second closes
    # the loop without waiting for it.
    events: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            with asyncbis.CancelScope(shield=True):
                loop = asyncio.get_running_loop()
                loop.call_soon(signal.raise_signal, signal.SIGINT)
                loop.call_later(0.01, signal.raise_signal, signal.SIGINT)
                events.append("cleanup hangs")
                await loop.create_future()
            raise

    async def main() -> None:
        asyncio.create_task(background())
        await asyncio.sleep(0)

    runner = asyncio.Runner()
    loop = runner.get_loop()
    runner.run(main())
    with pytest.raises(KeyboardInterrupt):
        runner.close()
    assert events == ["cleanup hangs"]
    assert loop.is_closed()


# -- loop.close() without a Runner --------------------------------------------------------------


def test_loop_close_leaves_leftovers_pending_as_stock_does():
    # loop.close() does not run the loop: nothing is cancelled, the leftover stays pending and
    # asyncio reports it when it is collected, as for any task a closed stock loop leaves.
    loop = asyncio.new_event_loop()
    logged: list[str] = []
    events: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: logged.append(ctx["message"]))

    async def first() -> None:
        asyncio.create_task(_forever(events, "background"))
        await asyncio.sleep(0)

    loop.run_until_complete(first())
    assert loop.run_until_complete(asyncio.sleep(0, "second call")) == "second call"
    assert _root_group.has_leftovers(loop)
    loop.close()
    assert loop not in _root_group._handed_over
    gc.collect()
    assert events == ["background started"]
    assert logged == ["Task was destroyed but it is pending!"]


# -- bad input ----------------------------------------------------------------------------------


def test_unknown_values_are_refused_listing_the_valid_ones():
    valid = "structured-exit takes True/False or one of off, on, loop, loop-cancel; got"
    for bad in ("loop_cancel", "cancel", "loop-cancels", "Loop-Cancel"):
        with pytest.raises(ValueError, match=valid):
            switches.set("structured-exit", bad)
    assert switches.value("structured-exit") == "loop-cancel"


def test_the_value_is_read_from_the_environment():
    code = "from asyncbis import switches; print(switches.value('structured-exit'))"
    env = {**os.environ, "ASYNCBIS_SWITCHES": "structured-exit=loop-cancel"}
    env.pop("ASYNCBIS_PROFILE", None)
    env.pop("ASYNCBIS_DISABLE", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "loop-cancel"
    env["ASYNCBIS_SWITCHES"] = "structured-exit=loop_cancel"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert (
        "structured-exit takes True/False or one of off, on, loop, loop-cancel; got 'loop_cancel'"
        in proc.stderr
    )
