"""Regression tests for defects an independent review of the runtime found (issue 13).

Each test names the defect it covers; each failed before its fix. Items of the same review
that live elsewhere: scopes held by async generators, wake-up depth, eager tasks and
``start()`` (tests/test_scopes.py, tests/test_taskgroups.py, tests/test_eager_tasks.py), the
no-task-factory switch on other loops (tests/test_loops.py), the signal tests
(tests/test_signals.py).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import subprocess
import sys
import textwrap
import threading
from asyncio import timeout as early_bound_timeout  # bound before any run: routed all the same
from typing import Any

import pytest

import asyncbis
from asyncbis import _core, switches


@pytest.fixture(autouse=True)
def _stock_asyncio():
    """These tests are about asyncbis.run() without patch_asyncio()."""
    assert not asyncbis._patch.is_patched()
    state = switches.snapshot()
    yield
    switches.restore(state)
    assert not asyncbis._patch.is_patched()


def _python(
    code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


class _ExceptionLog:
    """Collects what reaches the loop's exception handler ("never retrieved", "destroyed")."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def install(self) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: self.contexts.append(ctx))

    @property
    def messages(self) -> list[str]:
        return [str(c.get("message")) for c in self.contexts]


# -- defect 2: a spawn whose scheduling fails must not be counted as a live child -------------


async def _child(log: list[str]) -> None:
    log.append("child ran")


# Before the fix the group never exited, and neither did the runner's close(): only the
# thread method of pytest-timeout ends such a hang.
@pytest.mark.timeout(30, method="thread")
def test_spawn_from_another_thread_fails_and_the_group_still_exits():
    # In debug mode the loop refuses call_soon() from another thread: create_task() raises
    # there, and the task it was making must not stay counted in the group.
    ran: list[str] = []
    log = _ExceptionLog()

    async def main() -> tuple[list[BaseException], Any, Any]:
        log.install()
        errors: list[BaseException] = []
        before = _core._tree_stats()
        async with asyncbis.TaskGroup() as tg:
            coro = _child(ran)

            def spawn() -> None:
                try:
                    tg.create_task(coro)
                except RuntimeError as exc:
                    errors.append(exc)

            thread = threading.Thread(target=spawn)
            thread.start()
            thread.join()
            live = tg.live_tasks
        gc.collect()
        await asyncio.sleep(0)
        return errors, live, (before, _core._tree_stats(), inspect.getcoroutinestate(coro))

    errors, live, (before, after, coro_state) = asyncbis.run(main(), debug=True)
    assert len(errors) == 1 and "thread" in str(errors[0]), errors
    assert live == 0
    assert after == before  # no task or scope node left in the tree
    assert coro_state == inspect.CORO_CLOSED  # closed, so no "never awaited" warning either
    assert ran == []
    assert not any("pending" in m for m in log.messages), log.messages


@pytest.mark.timeout(30, method="thread")
def test_root_group_spawn_from_another_thread_fails_and_run_returns():
    # asyncio.create_task() from a worker thread goes to the root group the same way.
    async def main() -> str:
        loop = asyncio.get_running_loop()

        def spawn() -> str:
            coro = asyncio.sleep(0)
            try:
                loop.create_task(coro)
            except RuntimeError as exc:
                return str(exc)
            return "accepted"

        message = await asyncio.to_thread(spawn)
        assert asyncbis.root_group(loop).live_tasks == 0
        return message

    assert "thread" in asyncbis.run(main(), debug=True)


@pytest.mark.timeout(30, method="thread")
@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
def test_eager_spawn_whose_first_step_cannot_start_fails_and_the_group_exits():
    # An eager child's first step runs inside create_task(), in the child's context; a context
    # that is already entered (the spawner's own) cannot be entered again: the spawn raises, as
    # stock's does, and the group must not wait for a child that never started.
    ran: list[str] = []

    async def main() -> tuple[int, tuple[int, int], tuple[int, int]]:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        before = _core._tree_stats()
        async with asyncbis.TaskGroup() as tg:
            own_context = asyncio.current_task().get_context()
            with pytest.raises(RuntimeError, match="already entered"):
                tg.create_task(_child(ran), context=own_context)
            live = tg.live_tasks
            tg.create_task(_child(ran))  # the group still works
        return live, before, _core._tree_stats()

    live, before, after = asyncbis.run(main())
    assert live == 0
    assert after == before
    assert ran == ["child ran"]


# -- defect 3: asyncbis.Task(coro) joins the root group --------------------------------------


async def _fail_soon() -> None:
    await asyncio.sleep(0)
    raise ValueError("from a directly constructed task")


def test_directly_constructed_task_joins_the_root_group_and_its_failure_reaches_run():
    async def main() -> None:
        task = asyncbis.Task(_fail_soon())
        assert task._core.group is asyncbis.root_group(asyncio.get_running_loop())
        await asyncio.wait([task])  # the failure cancels the root group, main with it
        del task  # nobody retrieves the failure here: it must reach run()'s caller
        await asyncio.sleep(0)

    with pytest.raises(ExceptionGroup) as info:
        asyncbis.run(main())
    assert info.group_contains(ValueError, match="directly constructed")


def test_directly_constructed_task_is_awaitable_and_run_waits_for_it():
    done: list[str] = []

    async def background() -> None:
        for _ in range(10):  # outlives main by several loop iterations
            await asyncio.sleep(0)
        done.append("background")

    async def main() -> int:
        result = await asyncbis.Task(asyncio.sleep(0, 42), name="direct")
        asyncbis.Task(background())  # not awaited: structured exit waits for it
        return result

    assert asyncbis.run(main()) == 42
    assert done == ["background"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_start is new in 3.12")
def test_directly_constructed_eager_task_joins_the_root_group():
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        task = asyncbis.Task(asyncio.sleep(0, "x"), loop=loop, eager_start=True)
        in_root = task._core.group is asyncbis.root_group(loop)
        assert await task == "x"
        return in_root

    assert asyncbis.run(main())


def test_directly_constructed_task_outside_a_run_stays_ungrouped():
    loop = asyncio.new_event_loop()
    try:
        task = asyncbis.Task(asyncio.sleep(0, 5), loop=loop)
        assert task._core.group is None
        assert loop.run_until_complete(task) == 5
    finally:
        loop.close()


def test_patched_asyncio_task_joins_the_root_group():
    async def main() -> None:
        await asyncio.wait([asyncio.Task(_fail_soon())])
        await asyncio.sleep(0)

    asyncbis.patch_asyncio()
    try:
        with pytest.raises(ExceptionGroup) as info:
            asyncio.run(main())
    finally:
        asyncbis.unpatch_asyncio()
    assert info.group_contains(ValueError)


# -- defect 4: stock asyncio.wait_for / asyncio.timeout under asyncbis.run() ------------------


async def _stock_timeouts_leave_the_task_usable() -> list[str]:
    """Stock names (the patch is not applied): each times out once; the task goes on."""
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(asyncio.sleep(3600), 0.01)
    except TimeoutError:
        seen.append("wait_for")
    for name, make in [
        ("timeout", lambda: asyncio.timeout(0.01)),
        ("timeout_at", lambda: asyncio.timeout_at(loop.time() + 0.01)),
        ("Timeout", lambda: asyncio.Timeout(loop.time() + 0.01)),
        ("early-bound timeout", lambda: early_bound_timeout(0.01)),
    ]:
        try:
            async with make() as cm:
                await asyncio.sleep(3600)
        except TimeoutError:
            assert cm.expired()
            seen.append(name)
    assert asyncio.current_task().cancelling() == 0
    await asyncio.sleep(0)  # not cancelled: the timeouts' cancellations are over
    seen.append("awaits again")
    return seen


def test_stock_wait_for_and_timeout_under_run_leave_the_task_uncancelled():
    assert asyncbis.run(_stock_timeouts_leave_the_task_usable()) == [
        "wait_for",
        "timeout",
        "timeout_at",
        "Timeout",
        "early-bound timeout",
        "awaits again",
    ]


def test_stock_timeouts_in_background_tasks_and_with_the_eager_factory():
    async def main() -> list[list[str]]:
        if sys.version_info >= (3, 12):
            asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        async with asyncbis.TaskGroup() as tg:
            tasks = [tg.create_task(_stock_timeouts_leave_the_task_usable()) for _ in range(3)]
        return [t.result() for t in tasks]

    results = asyncbis.run(main())
    assert all(r[-1] == "awaits again" for r in results), results


def test_stock_timeout_names_are_stock_again_after_the_run():
    stock = asyncbis._stock
    seen: list[Any] = []

    async def main() -> None:
        seen.append(asyncio.timeouts.Timeout)
        async with asyncio.timeout(10) as cm:
            seen.append(cm)

    asyncbis.run(main())
    assert asyncio.timeouts.Timeout is stock.Timeout and asyncio.Timeout is stock.Timeout
    assert asyncio.timeout is stock.timeout and asyncio.wait_for is stock.wait_for
    assert isinstance(seen[1], stock.Timeout)  # isinstance checks against the stock class hold


def test_patch_and_unpatch_during_a_run_leave_the_stock_class_afterwards():
    async def main() -> None:
        asyncbis.patch_asyncio()  # saves the routed class as the one to restore

    try:
        asyncbis.run(main())
    finally:
        asyncbis.unpatch_asyncio()
    assert asyncio.Timeout is asyncbis._stock.Timeout
    assert asyncio.timeouts.Timeout is asyncbis._stock.Timeout


def test_stock_timeouts_stay_stock_in_a_stock_loop_running_meanwhile():
    # A stock asyncio.run() in another thread while an asyncbis run is active: its timeouts are
    # the stock ones (no asyncbis task there), cancellation semantics and all.
    ready = threading.Event()
    release = threading.Event()
    out: list[Any] = []

    async def stock_main() -> None:
        ready.wait()
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(3600)
        except TimeoutError:
            out.append(type(asyncio.current_task()).__module__)
        release.set()

    async def asyncbis_main() -> None:
        ready.set()
        await asyncio.to_thread(release.wait)

    thread = threading.Thread(target=lambda: asyncio.run(stock_main()))
    thread.start()
    asyncbis.run(asyncbis_main())
    thread.join()
    assert out and out[0] != "asyncbis._task"


def test_with_scoped_timeouts_off_stock_timeouts_follow_task_cancel_level():
    # The switches' documented combination: stock timeouts are built on Task.cancel(), which
    # task-cancel-level "uncancel" lifts when uncancel() brings the count back to zero.
    switches.disable("scoped-timeouts")
    switches.set("task-cancel-level", "uncancel")
    assert asyncbis.run(_stock_timeouts_leave_the_task_usable())[-1] == "awaits again"


def test_a_stock_timeout_still_cancels_what_runs_under_it():
    async def main() -> tuple[bool, str]:
        try:
            async with asyncio.timeout(0.01):
                try:
                    await asyncio.sleep(3600)
                finally:
                    # level cancellation inside the expired timeout
                    with pytest.raises(asyncio.CancelledError):
                        await asyncio.sleep(0)
        except TimeoutError:
            timed_out = True
        return timed_out, "after"

    assert asyncbis.run(main()) == (True, "after")


# -- defect 6: sniffio and threads ----------------------------------------------------------


SLOW_SNIFFIO_IMPORT = """
import importlib.abc, importlib.util, sys, threading, time
importing = threading.Event()  # the first run's import of sniffio has begun

class SlowLoader(importlib.abc.Loader):
    # the real sniffio, but its import takes a while: the module sits in sys.modules, half
    # initialised, while other threads start their runs
    def __init__(self, real): self.real = real
    def create_module(self, spec): return self.real.create_module(spec)
    def exec_module(self, module):
        importing.set()
        time.sleep(0.3)
        self.real.exec_module(module)

class SlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "sniffio":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        sys.meta_path.insert(0, self)
        spec.loader = SlowLoader(spec.loader)
        return spec

sys.meta_path.insert(0, SlowFinder())

import asyncio, asyncbis
assert "sniffio" not in sys.modules

async def main():
    import sniffio
    await asyncio.sleep(0)
    return sniffio.current_async_library()

N = 8
barrier = threading.Barrier(N - 1)
results = []

def worker(first):
    if not first:
        importing.wait()
        barrier.wait()
    try:
        results.append(asyncbis.run(main()))
    except BaseException as exc:
        results.append(repr(exc))

threads = [threading.Thread(target=worker, args=(n == 0,)) for n in range(N)]
for t in threads: t.start()
for t in threads: t.join()
print(sorted(results))
"""


def test_first_runs_in_several_threads_at_once_see_sniffio_whole():
    pytest.importorskip("sniffio")
    proc = _python(SLOW_SNIFFIO_IMPORT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(["asyncbis"] * 8), proc.stdout + proc.stderr


NO_SNIFFIO = """
import sys
sys.modules["sniffio"] = None  # as if it were not installed
import asyncio, asyncbis

async def main():
    assert sys.exc_info() == (None, None, None), sys.exc_info()
    raise ValueError("main failed")

def contexts(exc, seen):
    # every exception reachable through __context__ (and exception groups' members)
    if exc is None or id(exc) in seen:
        return
    seen[id(exc)] = type(exc).__name__
    contexts(exc.__context__, seen)
    for inner in getattr(exc, "exceptions", ()):
        contexts(inner, seen)

try:
    asyncbis.run(main())
except ValueError as exc:
    seen = {}
    contexts(exc, seen)
    print(sorted(set(seen.values())))
"""


def test_without_sniffio_failures_carry_no_import_error_context():
    proc = _python(NO_SNIFFIO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(["ExceptionGroup", "ValueError"]), proc.stdout


# -- defect 12: tasks nobody but their group can wake stay in the root group ----------------


def test_a_task_nobody_can_wake_is_kept_and_finalised_in_its_task():
    # The decision (docs/architecture.md): the root group keeps such a task (stock's GC would
    # collect it: "Task was destroyed but it is pending!"); cancelling the group finalises it
    # inside its own task, where its finally block can still await (shielded).
    log: list[str] = []
    reports = _ExceptionLog()

    async def stuck() -> None:
        try:
            await asyncio.get_running_loop().create_future()  # nobody holds it
        finally:
            with asyncbis.CancelScope(shield=True):  # Trio's idiom for awaiting in cleanup
                await asyncio.sleep(0)
            log.append("finalised in its task")

    async def main() -> int:
        reports.install()
        asyncio.create_task(stuck())  # dropped while pending
        await asyncio.sleep(0)
        gc.collect()
        return asyncbis.root_group(asyncio.get_running_loop()).live_tasks

    switches.disable("structured-exit")  # main's return cancels the root group
    assert asyncbis.run(main()) == 1
    assert log == ["finalised in its task"]
    assert reports.messages == []


# -- defect 7: patched loop.run_until_complete(coro) refuses before scheduling ---------------


def test_patched_run_until_complete_refused_while_another_loop_runs_never_runs_it_later():
    ran: list[str] = []

    async def refused() -> None:
        ran.append("refused coroutine ran")

    async def main() -> tuple[Any, Any]:
        other = asyncio.new_event_loop()
        coro = refused()
        with pytest.raises(RuntimeError, match="another loop is running"):
            other.run_until_complete(coro)
        return other, coro

    asyncbis.patch_asyncio()
    try:
        other, coro = asyncio.run(main())
        try:
            # as with stock: the coroutine was not touched, and the loop has nothing pending
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
            other.run_until_complete(asyncio.sleep(0))
            assert ran == []
            assert asyncio.all_tasks(other) == set()
        finally:
            coro.close()
            other.close()
    finally:
        asyncbis.unpatch_asyncio()


def test_patched_run_until_complete_on_a_closed_loop_refuses_before_scheduling():
    async def never() -> None:  # pragma: no cover - must not run
        raise AssertionError("ran")

    asyncbis.patch_asyncio()
    try:
        loop = asyncio.new_event_loop()
        loop.close()
        coro = never()
        with pytest.raises(RuntimeError, match="closed"):
            loop.run_until_complete(coro)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
        coro.close()
    finally:
        asyncbis.unpatch_asyncio()


def test_patched_run_until_complete_refused_on_a_running_loop():
    async def main() -> None:
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            asyncio.get_running_loop().run_until_complete(coro)
        coro.close()

    asyncbis.patch_asyncio()
    try:
        asyncio.run(main())
    finally:
        asyncbis.unpatch_asyncio()
