"""Behaviour switches (docs/switches.md): each shows asyncbis behaviour when on, stock when off."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys

import pytest

import asyncbis
from asyncbis import _core, switches


@pytest.fixture(autouse=True)
def _restore_switches():
    state = switches.snapshot()
    yield
    switches.restore(state)
    asyncbis.unpatch_asyncio()


def run(coro):
    return asyncbis.run(coro)


# -- the switches API --------------------------------------------------------------------------


def test_all_on_by_default_and_api():
    assert all(switches.enabled(n) for n in switches.NAMES)
    switches.disable("structured-exit", "inline-shield")
    assert not switches.enabled("structured-exit") and not switches.enabled("inline-shield")
    assert switches.disabled() == ["inline-shield", "structured-exit"]
    switches.enable("structured-exit")
    assert switches.enabled("structured-exit")
    switches.set("inline-shield", True)
    assert switches.disabled() == []


def test_unknown_names_and_bad_values_are_refused_clearly():
    with pytest.raises(ValueError, match="valid switches are: root-task-group"):
        switches.disable("no-such-switch")
    with pytest.raises(ValueError, match="valid switches"):
        switches.enabled("nope")
    with pytest.raises(ValueError, match="'off', 'on', 'uncancel'|off, on, uncancel"):
        switches.set("task-cancel-level", "sometimes")
    with pytest.raises(ValueError, match="True/False"):
        switches.set("structured-exit", 3)


def test_core_switches_are_pushed_down():
    switches.disable("level-cancellation", "task-cancel-level")
    assert _core._core_switches() == (False, 0)
    switches.set("task-cancel-level", "uncancel")
    switches.enable("level-cancellation")
    assert _core._core_switches() == (True, 2)


def _child(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_environment_variable():
    code = (
        "from asyncbis import switches, _core; print(switches.disabled(), _core._core_switches())"
    )
    proc = _child(code, {"ASYNCBIS_DISABLE": "structured-exit, level-cancellation"})
    assert proc.stdout.strip() == "['level-cancellation', 'structured-exit'] (False, 1)"
    proc = _child(code, {"ASYNCBIS_DISABLE": "all"})
    assert proc.stdout.strip().startswith("['root-task-group', 'level-cancellation'")
    proc = _child(code, {"ASYNCBIS_SWITCHES": "task-cancel-level=uncancel"})
    assert proc.stdout.strip() == "['task-cancel-level'] (True, 2)"
    proc = _child(code, {"ASYNCBIS_DISABLE": "bogus"})
    assert proc.returncode != 0 and "valid switches are" in proc.stderr


# -- root-task-group ---------------------------------------------------------------------------


async def _fail_soon():
    await asyncio.sleep(0)
    raise ValueError("background failure")


def test_root_task_group_on_failure_reaches_caller():
    async def main():
        asyncio.create_task(_fail_soon())
        await asyncio.sleep(1)

    with pytest.raises(BaseExceptionGroup):
        run(main())


def test_root_task_group_off_failure_is_only_logged():
    switches.disable("root-task-group")
    logged = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, ctx: logged.append(ctx["message"]))
        assert asyncbis.root_group(loop) is None
        t = asyncio.create_task(_fail_soon())
        await asyncio.sleep(0.01)
        assert t.done() and t.get_loop() is loop
        del t  # never retrieved: stock asyncio logs it when the task is collected
        gc.collect()
        return "main result"

    assert run(main()) == "main result"
    assert logged == ["Task exception was never retrieved"]


# -- level-cancellation ------------------------------------------------------------------------


async def _swallow_then_await(scope_factory):
    log = []
    with scope_factory() as scope:
        scope.cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            log.append("first")  # swallowed, carry on
        try:
            await asyncio.sleep(0)
            log.append("second await ran")
        except asyncio.CancelledError:
            log.append("second")
            raise
    return log


def test_level_cancellation_on_redelivers():
    assert run(_swallow_then_await(asyncbis.CancelScope)) == ["first", "second"]


def test_level_cancellation_off_delivers_once():
    switches.disable("level-cancellation")
    assert run(_swallow_then_await(asyncbis.CancelScope)) == ["first", "second await ran"]


# -- task-cancel-level -------------------------------------------------------------------------


async def _cancel_self_swallow(uncancel: bool):
    task = asyncio.current_task()
    task.cancel()
    log = []
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError:
        log.append("first")
        if uncancel:
            assert task.uncancel() == 0
    try:
        await asyncio.sleep(0)
        log.append("continued")
    except asyncio.CancelledError:
        log.append("again")
    return log


def test_task_cancel_level_on_is_permanent():
    async def main():
        t = asyncio.create_task(_cancel_self_swallow(uncancel=True))
        return await _join(t)

    assert run(main()) == ["first", "again"]


async def _join(t):
    await asyncio.wait([t])
    return t.result()


def test_task_cancel_level_off_is_stock_edge():
    switches.disable("task-cancel-level")

    async def main():
        return await _join(asyncio.create_task(_cancel_self_swallow(uncancel=False)))

    assert run(main()) == ["first", "continued"]


def test_task_cancel_level_uncancel_lifts_it():
    switches.set("task-cancel-level", "uncancel")

    async def main():
        a = await _join(asyncio.create_task(_cancel_self_swallow(uncancel=True)))
        b = await _join(asyncio.create_task(_cancel_self_swallow(uncancel=False)))
        return a, b

    assert run(main()) == (["first", "continued"], ["first", "again"])


# -- inline-shield -----------------------------------------------------------------------------


async def _shield_probe():
    outer = asyncio.current_task()
    seen = {}

    async def inner():
        seen["same task"] = asyncio.current_task() is outer
        await asyncio.sleep(0.03)
        seen["inner finished"] = True

    with asyncbis.move_on_after(0.01):
        try:
            await asyncbis.shield(inner())
            seen["caller resumed after inner"] = True
        except asyncio.CancelledError:
            seen["caller cancelled while inner ran"] = "inner finished" not in seen
            raise
    await asyncio.sleep(0.05)
    return seen


def test_inline_shield_on_runs_in_caller_and_protects_it():
    seen = run(_shield_probe())
    assert seen == {"same task": True, "inner finished": True, "caller resumed after inner": True}


def test_inline_shield_off_is_stock_shield():
    switches.disable("inline-shield")
    seen = run(_shield_probe())
    assert seen == {
        "same task": False,
        "caller cancelled while inner ran": True,
        "inner finished": True,
    }


# -- scoped-timeouts ---------------------------------------------------------------------------


async def _timeout_swallow():
    log = []
    try:
        async with asyncbis.timeout(0.01):
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                log.append("first")
            await asyncio.sleep(0)
            log.append("continued")
    except TimeoutError:
        log.append("TimeoutError")
    return log


def test_scoped_timeouts_on_level():
    assert run(_timeout_swallow()) == ["first", "TimeoutError"]


def test_scoped_timeouts_off_stock():
    # stock asyncio.Timeout cancels with Task.cancel(), so the edge needs task-cancel-level off
    # too (with it on, the stock timeout's Task.cancel() is permanent for the task)
    switches.disable("scoped-timeouts", "task-cancel-level")
    # stock asyncio.Timeout: the swallowed cancellation is gone; the block finishes normally
    assert run(_timeout_swallow()) == ["first", "continued"]

    async def main():
        with pytest.raises(TimeoutError):
            await asyncbis.wait_for(asyncio.sleep(1), 0.01)
        with pytest.raises(RuntimeError, match="scoped-timeouts"):
            async with asyncbis.timeout(1, shield=True):
                pass

    run(main())


# -- no-loop-policies --------------------------------------------------------------------------


def test_no_loop_policies_on_raises_with_advice():
    with pytest.raises(RuntimeError, match="asyncbis.run"):
        asyncbis.get_event_loop()
    with pytest.raises(RuntimeError, match="not supported"):
        asyncbis.get_event_loop_policy()
    with pytest.raises(RuntimeError, match="loop_factory"):
        asyncbis.set_event_loop_policy(None)

    async def main():
        return asyncbis.get_event_loop() is asyncio.get_running_loop()

    assert run(main()) is True


def test_no_loop_policies_on_for_patched_asyncio():
    asyncbis.patch_asyncio()
    with pytest.raises(RuntimeError, match="no-loop-policies"):
        asyncio.get_event_loop_policy()


def test_no_loop_policies_off_is_stock():
    switches.disable("no-loop-policies")
    asyncbis.patch_asyncio()
    policy = asyncio.get_event_loop_policy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    asyncio.set_event_loop_policy(policy)
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        assert asyncio.get_event_loop() is loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@pytest.mark.skipif(sys.version_info < (3, 14), reason="the policy system is deprecated in 3.14")
def test_no_loop_policies_off_warns_for_the_caller_like_stock():
    # 3.14's policy functions warn (removal planned for 3.16) pointing at their caller: the
    # patched ones must point at the same line, not into asyncbis (which a default warning
    # filter for __main__ would then hide).
    switches.disable("no-loop-policies")
    asyncbis.patch_asyncio()
    with pytest.warns(DeprecationWarning, match="get_event_loop_policy") as got:
        policy = asyncio.get_event_loop_policy()
    with pytest.warns(DeprecationWarning, match="set_event_loop_policy") as set_got:
        asyncio.set_event_loop_policy(policy)
    assert [w.filename for w in [*got, *set_got]] == [__file__, __file__]
    assert asyncio.get_event_loop_policy.__module__ == "asyncbis._loops"  # really patched


# -- no-task-factory ---------------------------------------------------------------------------


def _py_task_factory(loop, coro, **kwargs):
    return asyncio.tasks._PyTask(coro, loop=loop, **kwargs)


def test_no_task_factory_on_refuses():
    async def main():
        with pytest.raises(RuntimeError, match="no-task-factory"):
            asyncio.get_running_loop().set_task_factory(_py_task_factory)

    run(main())


def test_no_task_factory_off_allows_foreign_tasks():
    switches.disable("no-task-factory")

    async def main():
        asyncio.get_running_loop().set_task_factory(_py_task_factory)
        t = asyncio.create_task(asyncio.sleep(0))
        await t
        return type(t)

    assert run(main()) is asyncio.tasks._PyTask


# -- structured-exit ---------------------------------------------------------------------------


async def _leave_background_task(log):
    async def bg():
        try:
            await asyncio.sleep(0.05)
            log.append("background finished")
        except asyncio.CancelledError:
            log.append("background cancelled")
            raise

    asyncio.create_task(bg())
    await asyncio.sleep(0)
    return "main"


def test_structured_exit_on_waits_for_background_tasks():
    log = []
    assert run(_leave_background_task(log)) == "main"
    assert log == ["background finished"]


def test_structured_exit_off_cancels_leftovers_like_asyncio_run():
    switches.disable("structured-exit")
    log = []
    assert run(_leave_background_task(log)) == "main"
    assert log == ["background cancelled"]


# -- scoped-taskgroups -------------------------------------------------------------------------


def test_scoped_taskgroups_chooses_the_patched_taskgroup():
    asyncbis.patch_asyncio()
    assert asyncio.TaskGroup is asyncbis.TaskGroup
    switches.disable("scoped-taskgroups")
    assert asyncio.TaskGroup is asyncbis._stock.TaskGroup
    switches.enable("scoped-taskgroups")
    assert asyncio.TaskGroup is asyncbis.TaskGroup
