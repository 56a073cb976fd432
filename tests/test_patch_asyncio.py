"""patch_asyncio(): existing asyncio code runs on asyncbis."""

from __future__ import annotations

import asyncio
import asyncio.runners
import asyncio.taskgroups
import asyncio.tasks
import asyncio.timeouts
import json
import os
import subprocess
import sys
import textwrap
import unittest

import pytest

import asyncbis
from asyncbis import switches


@pytest.fixture(autouse=True)
def _patched():
    state = switches.snapshot()
    asyncbis.patch_asyncio()
    yield
    asyncbis.unpatch_asyncio()
    switches.restore(state)


def test_names_are_patched_where_they_are_looked_up():
    assert asyncio.Task is asyncio.tasks.Task is asyncbis.Task
    assert asyncio.TaskGroup is asyncio.taskgroups.TaskGroup is asyncbis.TaskGroup
    assert asyncio.shield is asyncio.tasks.shield is asyncbis.shield
    assert asyncio.wait_for is asyncio.tasks.wait_for is asyncbis.wait_for
    assert asyncio.timeout is asyncio.timeouts.timeout is asyncbis.timeout
    assert asyncio.timeout_at is asyncio.timeouts.timeout_at is asyncbis.timeout_at
    assert asyncio.Timeout is asyncio.timeouts.Timeout is asyncbis.Timeout
    assert asyncio.run is asyncio.runners.run is asyncbis.run
    assert asyncio.Runner is asyncio.runners.Runner is asyncbis.Runner


def test_idempotent_and_unpatch_restores_stock():
    stock_shield = asyncbis._stock.shield
    asyncbis.patch_asyncio()
    asyncbis.patch_asyncio()
    asyncbis.unpatch_asyncio()
    assert asyncio.shield is stock_shield
    assert asyncio.Task is asyncbis._stock.Task
    assert "create_task" not in vars(asyncio.BaseEventLoop) or (
        asyncio.BaseEventLoop.create_task is asyncbis._stock.loop_create_task
    )
    asyncbis.unpatch_asyncio()  # twice is fine
    asyncbis.patch_asyncio()
    assert asyncio.shield is asyncbis.shield


def _probe():
    loop = asyncio.get_running_loop()
    return (
        isinstance(asyncio.current_task(), asyncio.Task),
        type(asyncio.current_task()) is asyncbis.Task,
        asyncbis.root_group(loop) is not None,
    )


def test_asyncio_run_gets_asyncbis_tasks_and_a_root_group():
    async def main():
        t = asyncio.create_task(asyncio.sleep(0))
        assert isinstance(t, asyncio.Task) and type(t) is asyncbis.Task
        await t
        async with asyncio.TaskGroup() as tg:
            tg.create_task(asyncio.sleep(0))
        async with asyncio.timeout(1):
            await asyncio.shield(asyncio.sleep(0))
        return _probe()

    assert asyncio.run(main()) == (True, True, True)


def test_asyncio_runner_gets_a_root_group():
    async def main():
        return _probe()

    with asyncio.Runner() as runner:
        assert runner.run(main()) == (True, True, True)


def test_new_event_loop_run_until_complete_gets_a_root_group():
    async def main():
        return _probe(), asyncio.get_running_loop().get_task_factory()

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == ((True, True, True), None)
        fut = loop.create_future()
        loop.call_soon(fut.set_result, 3)
        assert loop.run_until_complete(fut) == 3
    finally:
        loop.close()


@pytest.mark.parametrize("which", ["_PyTask", "_CTask"])
def test_run_until_complete_uses_a_task_class_installed_as_asyncio_tasks_task(which: str):
    # Stock's run_until_complete(coro) wraps the coroutine in a task of whatever class
    # asyncio.tasks.Task is; a test that installs _PyTask (CPython's test_events, with the
    # pure-Python running-loop functions, which 3.14's C _enter_task does not see) must get
    # one, not an asyncbis root task.
    made: list[asyncio.Future] = []

    class Recording(getattr(asyncio.tasks, which)):  # type: ignore[misc]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    async def main():
        await asyncio.sleep(0)
        return 7

    saved = asyncio.tasks.Task
    asyncio.tasks.Task = Recording
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == 7
        assert len(made) == 1 and made[0].result() == 7
    finally:
        loop.close()
        asyncio.tasks.Task = saved


@pytest.mark.parametrize("which", ["_PyTask", "_CTask"])
def test_asyncio_run_keeps_its_root_task_when_another_task_class_is_installed(which: str):
    # The run's root task hosts the root group, so it stays an asyncbis task; the tasks main
    # creates are of the installed class, as with stock (CPython's test_free_threading runs
    # asyncio.run() with _CTask/_PyTask installed: the root group's entry failed, the run
    # thread died and the test hung).
    cls = getattr(asyncio.tasks, which)

    async def child():
        return 5

    async def main():
        t = asyncio.get_running_loop().create_task(child())
        return type(t), await t

    saved = asyncio.tasks.Task
    asyncio.tasks.Task = cls
    try:
        assert asyncio.run(main()) == (cls, 5)
    finally:
        asyncio.tasks.Task = saved


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is new in 3.12")
def test_a_runs_root_task_is_asyncbis_with_a_foreign_task_factory_on_the_loop():
    # With no-task-factory off, a loop_factory may give the loop stock's eager_task_factory
    # (CPython 3.14's test_taskgroups does): the run's root task, which hosts the root group,
    # is still an asyncbis task, and an asyncbis TaskGroup works in main.
    switches.disable("no-task-factory")

    def loop_factory():
        loop = asyncio.new_event_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        return loop

    async def child():
        return 3

    async def main():
        async with asyncbis.TaskGroup() as tg:
            t = tg.create_task(child())
        return type(asyncio.current_task()), t.result()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(main()) == (asyncbis.Task, 3)


def test_stock_wait_for_and_timeouts_module_use_scoped_timeouts():
    # 3.12+'s stock wait_for reads asyncio.timeouts.timeout; the prototype missed that.
    async def main():
        async with asyncio.timeouts.timeout(0.01) as t:
            assert isinstance(t, asyncbis.Timeout)
            with pytest.raises(asyncio.CancelledError):
                await asyncio.sleep(1)
            await asyncio.sleep(0)

    with pytest.raises(TimeoutError):
        asyncio.run(main())


def test_isolated_async_test_case_runs_on_asyncbis():
    results = []

    class T(unittest.IsolatedAsyncioTestCase):
        async def asyncSetUp(self):
            results.append(("setup", _probe()))

        async def test_it(self):
            results.append(("test", _probe()))

    outcome = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(T).run(outcome)
    assert outcome.wasSuccessful(), outcome.errors + outcome.failures
    assert results == [("setup", (True, True, True)), ("test", (True, True, True))]


def test_loop_set_task_factory_refused_while_patched():
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="no-task-factory"):
            loop.set_task_factory(print)
        assert loop.get_task_factory() is None  # nothing installed by the refused call
        switches.disable("no-task-factory")
        loop.set_task_factory(lambda lp, coro, **kw: asyncio.tasks._PyTask(coro, loop=lp, **kw))
        assert loop.get_task_factory() is not None
    finally:
        loop.close()


def _run_py(code: str, *args: str, env: dict[str, str] | None = None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, *args, "-c", code] if not args else [sys.executable, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        cwd=cwd,
    )


SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    async def main():
        t = asyncio.create_task(asyncio.sleep(0))
        await t
        print(type(t).__module__, type(asyncio.current_task()).__name__, sys.argv[1:])
    asyncio.run(main())
    """
)


def test_python_dash_m_asyncbis_runs_a_script_patched(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    proc = _run_py("", "-m", "asyncbis", str(script), "a", "b")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["asyncbis._task", "Task", "['a',", "'b']"]
    usage = _run_py("", "-m", "asyncbis")
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_autopatch_and_stats_file(tmp_path):
    # Like the .pth file does at start-up (it is installed with the wheel; an editable
    # install may lack it, so the test imports the hook the .pth imports).
    code = "import asyncbis._autopatch\n" + SCRIPT
    stats = tmp_path / "stats"
    proc = _run_py(code, env={"ASYNCBIS_AUTOPATCH": "1", "ASYNCBIS_STATS_DIR": str(stats)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "asyncbis._task"
    (file,) = stats.iterdir()
    data = json.loads(file.read_text())
    assert data["pid"] == int(file.stem)
    assert data["tasks"] >= 2 and data["loops"] == 1
    assert data["disabled"] == [] and data["asyncbis"] == asyncbis.__version__
    assert data["python"] == ".".join(map(str, sys.version_info[:3]))


def test_spawning_skips_the_stats_hook_unless_stats_are_recorded(monkeypatch):
    from asyncbis import _stats

    calls = []
    monkeypatch.setattr(_stats, "count_task", calls.append)

    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.create_task(asyncio.sleep(0))  # the root group's task factory path
        await asyncbis.Task(asyncio.sleep(0))  # direct construction
        await loop.create_task(asyncio.sleep(0))
        return loop

    monkeypatch.setattr(_stats, "counting", False, raising=False)
    asyncio.run(main())  # patched: run_until_complete's root task too
    assert calls == []

    monkeypatch.setattr(_stats, "counting", True)
    loop = asyncio.run(main())
    assert len(calls) >= 4 and set(calls) == {loop}


def test_recording_stats_keeps_no_loop_alive(monkeypatch):
    # The study records stats in every asyncbis run; stock frees a run's loop once collected.
    import gc
    import weakref

    from asyncbis import _stats

    async def main():
        await asyncio.sleep(0)
        return weakref.ref(asyncio.get_running_loop())

    monkeypatch.setattr(_stats, "counting", True)
    loop_ref = asyncio.run(main())
    gc.collect()
    assert loop_ref() is None
    assert _stats.loops_seen() >= 1


def test_autopatch_is_inert_without_the_variable(tmp_path):
    code = "import asyncbis._autopatch, asyncbis.pytest_plugin\n" + SCRIPT
    env = {"ASYNCBIS_AUTOPATCH": "", "ASYNCBIS_STATS_DIR": str(tmp_path / "s")}
    proc = _run_py(code, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "_asyncio"
    assert not (tmp_path / "s").exists()


def test_pth_file_activates_when_installed(tmp_path):
    pth = os.path.join(os.path.dirname(asyncbis.__file__), os.pardir, "asyncbis-autopatch.pth")
    line = open(pth).read()
    code = "import site, sys\n" + f"exec({line!r})\n" + SCRIPT
    proc = _run_py(code, env={"ASYNCBIS_AUTOPATCH": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "asyncbis._task"


def test_pytest_plugin_patches_with_autopatch(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import asyncio\n"
        "def test_x():\n"
        "    async def main():\n"
        "        return type(asyncio.current_task()).__module__\n"
        "    assert asyncio.run(main()) == 'asyncbis._task'\n"
    )
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]  # the entry point loads it
    # pytest-asyncio, when installed, reads the loop policy: keep the harness going
    env = {"ASYNCBIS_AUTOPATCH": "1", "ASYNCBIS_DISABLE": "no-loop-policies"}
    proc = _run_py("", *args, str(tmp_path), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pytest_asyncio_runs_on_asyncbis(tmp_path):
    pytest.importorskip("pytest_asyncio")
    (tmp_path / "test_y.py").write_text(
        "import asyncio, pytest\n"
        "import asyncbis\n"
        "@pytest.mark.asyncio\n"
        "async def test_y():\n"
        "    assert type(asyncio.current_task()).__module__ == 'asyncbis._task'\n"
        "    assert asyncbis.root_group(asyncio.get_running_loop()) is not None\n"
        "    async with asyncio.timeout(1):\n"
        "        await asyncio.sleep(0)\n"
    )
    env = {"ASYNCBIS_AUTOPATCH": "1", "ASYNCBIS_DISABLE": "no-loop-policies"}
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"]
    proc = _run_py("", *args, str(tmp_path), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_rebind_names_imported_before_patching():
    import types

    asyncbis.unpatch_asyncio()
    mod = types.ModuleType("early_importer")
    mod.Runner, mod.timeout, mod.sleep = asyncio.Runner, asyncio.timeout, asyncio.sleep
    sys.modules["early_importer"] = mod
    try:
        asyncbis.patch_asyncio()
        assert asyncbis._patch.rebind_imported() >= 2
        assert mod.Runner is asyncbis.Runner and mod.timeout is asyncbis.timeout
        assert mod.sleep is asyncio.sleep  # unchanged names stay
        asyncbis.unpatch_asyncio()
        assert mod.Runner is asyncbis._stock.Runner and mod.timeout is asyncbis._stock.timeout
    finally:
        del sys.modules["early_importer"]


def test_patched_asyncio_run_with_uvloop():
    uvloop = pytest.importorskip("uvloop")

    async def main():
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        t = asyncio.create_task(asyncio.sleep(0))
        await t
        return type(t), _probe()

    # asyncio.run() of 3.11 has no loop_factory; the patched one (asyncbis.run) has
    assert asyncio.run(main(), loop_factory=uvloop.new_event_loop) == (
        asyncbis.Task,
        (True, True, True),
    )


def test_a_loop_reused_after_an_interrupted_run_until_complete_starts_clean():
    # A KeyboardInterrupt (or a test timeout's signal) leaves run_forever() while the root group
    # of that run is still registered. Reusing the loop, as aiohttp's test suite does, must not
    # put later runs and tasks into that stale group, which here fails (and is cancelled) while
    # the later run is going on.
    def interrupt() -> None:
        raise KeyboardInterrupt

    async def interrupted() -> None:
        async def failing_child() -> None:
            await asyncio.sleep(0.05)
            raise ValueError("the interrupted run's child failed")

        asyncio.create_task(failing_child())
        asyncio.get_running_loop().call_later(0.01, interrupt)
        await asyncio.sleep(3600)

    async def later() -> str:
        await asyncio.sleep(0.2)
        return "ok"

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(interrupted())
        assert loop.run_until_complete(later()) == "ok"
        task = loop.create_task(later())  # created while the loop is stopped
        assert loop.run_until_complete(task) == "ok"
    finally:
        loop.close()


def test_patched_timeout_is_the_stock_class_with_every_switch_off():
    # async-timeout 5 defines `class Timeout(asyncio.Timeout)` at import, after the patch, and
    # reads stock's private state: with every switch off that subclass must be stock's code.
    stock = asyncbis._stock.Timeout
    switches.disable(*switches.NAMES)

    class Subclass(asyncio.Timeout):
        def __init__(self, when):
            super().__init__(when)

    async def main():
        loop = asyncio.get_running_loop()
        async with Subclass(None) as cm:
            assert cm._timeout_handler is None and cm.when() is None
        async with Subclass(loop.time() + 10) as cm:
            assert cm._task is asyncio.current_task()
            assert cm._timeout_handler is not None
            cm.reschedule(None)
            assert cm._timeout_handler is None
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0) as made:
                await asyncio.sleep(1)
        assert isinstance(made, stock) and made.expired()
        assert repr(made) == "<Timeout [expired]>"

    asyncio.run(main())
    assert issubclass(asyncio.Timeout, stock)


def test_patched_timeout_subclass_is_scoped_with_scoped_timeouts_on():
    class Subclass(asyncio.Timeout):
        def __init__(self, when):
            super().__init__(when)

    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with Subclass(loop.time() + 0.01) as cm:
                assert cm.cancel_scope is not None
                assert repr(cm).startswith("<Timeout [active] when=")
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.sleep(1)
                await asyncio.sleep(0)  # level: cancelled again at the next yield point
        assert cm.expired() and repr(cm) == "<Timeout [expired]>"
        await asyncio.sleep(0)  # the task itself is not cancelled afterwards
        async with asyncio.Timeout(None, shield=True) as shielded:
            asyncio.current_task().cancel()
            await asyncio.sleep(0)  # shielded from the cancellation outside
        assert repr(shielded) == "<Timeout [finished] shield=True>"
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(0)
        return isinstance(asyncio.timeout(1), asyncio.Timeout)

    assert asyncio.run(main()) is True
