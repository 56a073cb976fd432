"""Migration-path switch values (root-task-group=unretrieved*, no-loop-policies=deprecated,
inline-shield=coroutines) and the named profiles (ASYNCBIS_PROFILE, switches.use_profile)."""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
import subprocess
import sys
import warnings

import pytest

import asyncbis
from asyncbis import _core, switches

UNRETRIEVED = ("unretrieved", "unretrieved-next-tick", "unwaited-at-finish")


@pytest.fixture(autouse=True)
def _restore_switches():
    state = switches.snapshot()
    yield
    switches.restore(state)
    asyncbis.unpatch_asyncio()


async def _fail(after: float = 0) -> None:
    await asyncio.sleep(after)
    raise ValueError("background failure")


def _outcome(main) -> object:
    """run(main()): its result, or the exceptions of the group that left it."""
    try:
        return asyncbis.run(main())
    except BaseExceptionGroup as eg:
        return [repr(e) for e in eg.exceptions]


FAILED = ["ValueError('background failure')"]


# -- root-task-group=unretrieved* -------------------------------------------------------------


@pytest.mark.parametrize("mode", ("on", *UNRETRIEVED))
def test_unretrieved_failure_cancels_the_root_group_and_reaches_the_caller(mode):
    switches.set("root-task-group", mode)
    reached = []

    async def main():
        asyncio.create_task(_fail())
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            reached.append("main cancelled")
            raise

    assert _outcome(main) == FAILED
    assert reached == ["main cancelled"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("on", FAILED),
        ("unretrieved", "handled"),
        ("unretrieved-next-tick", FAILED),
        ("unwaited-at-finish", FAILED),
    ],
)
def test_failure_awaited_later(mode, expected):
    """Awaited a while after it failed: only the decision at collection waits long enough."""
    switches.set("root-task-group", mode)

    async def main():
        t = asyncio.create_task(_fail())
        for _ in range(5):
            await asyncio.sleep(0)
        with pytest.raises(ValueError):
            await t
        return "handled"

    assert _outcome(main) == expected


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_failure_awaited_while_it_happens(mode):
    switches.set("root-task-group", mode)

    async def main():
        t = asyncio.create_task(_fail(0.01))
        with pytest.raises(ValueError):
            await t
        await asyncio.sleep(0.01)  # the check (next tick, or collection) has run by now
        return "handled"

    assert _outcome(main) == "handled"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("unretrieved", ["ValueError"] * 3),
        ("unretrieved-next-tick", FAILED),
        ("unwaited-at-finish", ["ValueError"] * 3),
    ],
)
def test_gather_return_exceptions_retrieves(mode, expected):
    """gather(return_exceptions=True) reads its children's exceptions only once all are done:
    a child that failed before the last one finished is unretrieved for more than a tick."""
    switches.set("root-task-group", mode)

    async def main():
        tasks = [asyncio.create_task(_fail()) for _ in range(2)]
        tasks.append(asyncio.create_task(_fail(0.01)))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        del tasks
        gc.collect()
        await asyncio.sleep(0)
        return [type(r).__name__ for r in results]

    assert _outcome(main) == expected


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_gather_return_exceptions_of_tasks_failing_together(mode):
    switches.set("root-task-group", mode)

    async def main():
        tasks = [asyncio.create_task(_fail()) for _ in range(3)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return [type(r).__name__ for r in results]

    expected = FAILED if mode == "unretrieved-next-tick" else ["ValueError"] * 3
    assert _outcome(main) == expected


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_gather_without_return_exceptions_retrieves_the_first(mode):
    switches.set("root-task-group", mode)

    async def main():
        with pytest.raises(ValueError):
            await asyncio.gather(_fail(), asyncio.sleep(0.01))
        await asyncio.sleep(0.02)
        return "handled"

    assert _outcome(main) == "handled"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("unretrieved", "handled"),
        ("unretrieved-next-tick", FAILED),
        ("unwaited-at-finish", "handled"),
    ],
)
def test_asyncio_wait_then_result(mode, expected):
    """asyncio.wait() does not retrieve; the caller reads result() when it wakes up, which is
    a loop iteration too late for the next-tick decision."""
    switches.set("root-task-group", mode)

    async def main():
        t = asyncio.create_task(_fail())
        done, _ = await asyncio.wait([t])
        with pytest.raises(ValueError):
            done.pop().result()
        return "handled"

    assert _outcome(main) == expected


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_exception_read_by_a_done_callback_retrieves(mode):
    switches.set("root-task-group", mode)
    seen = []

    async def main():
        t = asyncio.create_task(_fail())
        t.add_done_callback(lambda t: seen.append(repr(t.exception())))
        del t
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)
        return "handled"

    assert _outcome(main) == "handled"
    assert seen == ["ValueError('background failure')"]


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_a_done_callback_that_does_not_retrieve(mode):
    """An orphan for the unretrieved values; a task somebody waited for at finish (only
    logged by stock when collected) for unwaited-at-finish."""
    switches.set("root-task-group", mode)
    calls = []
    logged = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, ctx: logged.append(ctx["message"])
        )
        t = asyncio.create_task(_fail())
        t.add_done_callback(lambda t: calls.append(t.done()))
        del t
        await asyncio.sleep(0.05)
        return "main done"

    if mode == "unwaited-at-finish":
        assert _outcome(main) == "main done"
        assert logged == ["Task exception was never retrieved"]
    else:
        assert _outcome(main) == FAILED
        assert logged == []
    assert calls == [True]


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_exception_read_later_by_main(mode):
    """exception() read a while later (the task is kept referenced meanwhile)."""
    switches.set("root-task-group", mode)

    async def main():
        t = asyncio.create_task(_fail())
        for _ in range(5):
            await asyncio.sleep(0)
        return repr(t.exception())

    expected = "ValueError('background failure')" if mode == "unretrieved" else FAILED
    assert _outcome(main) == expected


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_success_cancellation_and_explicit_groups_are_unchanged(mode):
    switches.set("root-task-group", mode)

    async def ok():
        await asyncio.sleep(0)
        return 1

    async def main():
        t = asyncio.create_task(ok())
        c = asyncio.create_task(asyncio.sleep(30))
        await asyncio.sleep(0)
        c.cancel()
        # an explicit group stays strict: its child's failure is its own, at once
        with pytest.raises(ExceptionGroup):
            async with asyncbis.TaskGroup() as tg:
                tg.create_task(_fail())
                await asyncio.sleep(30)
        return await t

    assert _outcome(main) == 1


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_unretrieved_failure_after_main_returned_is_still_the_groups(mode):
    """structured-exit: the root group waits for the background task and then raises."""
    switches.set("root-task-group", mode)

    async def main():
        asyncio.create_task(_fail(0.01))
        return "main done"

    assert _outcome(main) == FAILED


def test_unretrieved_failure_collected_after_the_run_is_only_logged():
    """A task kept alive past the end of the run: stock's log reports it when collected."""
    switches.set("root-task-group", "unretrieved")
    kept = []
    logged = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, ctx: logged.append(ctx["message"])
        )
        kept.append(asyncio.create_task(_fail()))
        await asyncio.sleep(0.01)
        return "main done"

    assert _outcome(main) == "main done"
    kept.clear()
    gc.collect()
    assert logged == ["Task exception was never retrieved"]


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_keyboard_interrupt_in_a_background_task_acts_at_once(mode):
    switches.set("root-task-group", mode)

    async def interrupt():
        await asyncio.sleep(0)
        raise KeyboardInterrupt

    async def main():
        t = asyncio.create_task(interrupt())
        await asyncio.sleep(30)
        return t

    with pytest.raises(KeyboardInterrupt):
        asyncbis.run(main())


class _PlainBaseException(BaseException):
    """A BaseException that is not a request to stop the program (stock asyncio stores it
    in the task like any failure, where KeyboardInterrupt and SystemExit leave the loop)."""


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_a_base_exception_that_is_not_an_exit_request_is_an_ordinary_failure(mode):
    """Handled by the caller: no orphan, as for an Exception (aiohappyeyeballs'
    test_handling_system_exit raises such a class in its connection attempts)."""
    switches.set("root-task-group", mode)

    async def fail():
        await asyncio.sleep(0.01)
        raise _PlainBaseException("handled below")

    async def main():
        t = asyncio.create_task(fail())
        with pytest.raises(_PlainBaseException):
            await t
        await asyncio.sleep(0.01)  # the check (next tick, or collection) has run by now
        return "handled"

    assert _outcome(main) == "handled"


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_an_unretrieved_base_exception_still_reaches_the_caller(mode):
    switches.set("root-task-group", mode)

    async def fail():
        await asyncio.sleep(0)
        raise _PlainBaseException("nobody looks")

    async def main():
        asyncio.create_task(fail())
        await asyncio.sleep(30)

    assert _outcome(main) == ["_PlainBaseException('nobody looks')"]


@pytest.mark.parametrize("mode", UNRETRIEVED)
def test_unretrieved_under_patched_run_until_complete(mode):
    switches.set("root-task-group", mode)
    asyncbis.patch_asyncio()

    async def awaited():
        t = asyncio.create_task(_fail())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        try:
            await t
        except ValueError:
            return "handled"

    async def orphan():
        asyncio.create_task(_fail())
        await asyncio.sleep(30)

    loop = asyncio.new_event_loop()
    try:
        if mode == "unretrieved":
            assert loop.run_until_complete(awaited()) == "handled"
        with pytest.raises(ExceptionGroup):
            loop.run_until_complete(orphan())
    finally:
        loop.close()


def test_root_task_group_values_are_checked():
    with pytest.raises(ValueError, match="on, unretrieved, unretrieved-next-tick, unwaited"):
        switches.set("root-task-group", "unretrieved-later")
    assert switches.value("root-task-group") == "on"
    with pytest.raises(ValueError, match="'on', 'unretrieved', 'unretrieved-next-tick' or"):
        _core.TaskGroup()._set_orphan_policy("sometimes")


# -- no-loop-policies=deprecated ---------------------------------------------------------------


def test_policies_deprecated_work_and_warn():
    switches.set("no-loop-policies", "deprecated")
    with pytest.warns(DeprecationWarning, match="get_event_loop_policy.*loop_factory"):
        policy = asyncbis.get_event_loop_policy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    with pytest.warns(DeprecationWarning, match="set_event_loop_policy") as record:
        asyncbis.set_event_loop_policy(policy)
    assert record[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert asyncbis.get_event_loop_policy() is policy


def test_policies_deprecated_get_event_loop_is_stock():
    switches.set("no-loop-policies", "deprecated")
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        assert asyncbis.get_event_loop() is loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_policies_deprecated_loops_from_the_policy_are_asyncbis_ready():
    switches.set("no-loop-policies", "deprecated")
    asyncbis.patch_asyncio()
    with pytest.warns(DeprecationWarning):
        policy = asyncio.get_event_loop_policy()
    loop = policy.new_event_loop()

    async def main():
        t = asyncio.create_task(asyncio.sleep(0))
        await t
        with pytest.raises(RuntimeError, match="no-task-factory"):
            asyncio.get_running_loop().set_task_factory(lambda loop, coro, **kw: None)
        return type(t), asyncbis.root_group(asyncio.get_running_loop()) is not None

    try:
        assert loop.run_until_complete(main()) == (asyncbis.Task, True)
    finally:
        loop.close()


def test_no_loop_policies_values_are_checked():
    with pytest.raises(ValueError, match="off, on, deprecated"):
        switches.set("no-loop-policies", "warn")


# -- inline-shield=coroutines -----------------------------------------------------------------


def test_shield_coroutines_keeps_the_outer_future_for_tasks():
    switches.set("inline-shield", "coroutines")
    asyncbis.patch_asyncio()

    async def main():
        inner = asyncio.create_task(asyncio.sleep(0.05, "inner"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(inner), 0.001)
        assert not inner.cancelled()
        done, pending = await asyncio.wait([asyncio.shield(inner)])
        return done.pop().result(), pending

    assert asyncbis.run(main()) == ("inner", set())


def test_shield_coroutines_runs_coroutines_inline():
    switches.set("inline-shield", "coroutines")
    log = []

    async def cleanup():
        await asyncio.sleep(0)
        log.append(asyncio.current_task())
        return "cleaned"

    async def main():
        me = asyncio.current_task()
        with asyncbis.CancelScope() as scope:
            scope.cancel()
            # the caller is protected too: it waits for the shielded coroutine
            result = await asyncbis.shield(cleanup())
            log.append(result)
        return log == [me, "cleaned"]

    assert asyncbis.run(main()) is True


def test_shield_on_runs_tasks_inline_too():
    """The seed's value, for contrast: shield(task) waits in the caller, wait_for cannot time
    it out."""
    asyncbis.patch_asyncio()

    async def main():
        inner = asyncio.create_task(asyncio.sleep(0.02, "inner"))
        return await asyncio.wait_for(asyncio.shield(inner), 0.001)

    assert asyncbis.run(main()) == "inner"


def test_inline_shield_values_are_checked():
    with pytest.raises(ValueError, match="off, on, coroutines"):
        switches.set("inline-shield", "tasks")


# -- profiles ---------------------------------------------------------------------------------


def test_profiles_set_every_switch():
    switches.use_profile("recommended")
    assert switches.profile() == "recommended"
    assert switches.value("no-loop-policies") == "deprecated"
    assert switches.value("task-cancel-level") == "uncancel"
    assert switches.value("root-task-group") == "unretrieved"
    assert switches.value("inline-shield") == "on"
    assert _core._core_switches() == (True, 2)
    switches.use_profile("additive")
    assert [n for n in switches.NAMES if switches.enabled(n)] == ["level-cancellation"]
    assert _core._core_switches() == (True, 0)
    switches.use_profile("additive+timeouts")
    assert [n for n in switches.NAMES if switches.enabled(n)] == [
        "level-cancellation",
        "scoped-timeouts",
    ]
    switches.use_profile("seed")
    assert switches.disabled() == []


def test_unknown_profile_is_refused_with_the_list():
    with pytest.raises(ValueError, match="valid profiles are: seed, recommended, additive"):
        switches.use_profile("fast")
    assert switches.profile() == "seed"


def test_additive_profile_keeps_asyncio_stock_and_scopes_usable():
    switches.use_profile("additive")
    asyncbis.patch_asyncio()
    logged = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, ctx: logged.append(ctx["message"]))
        t = asyncio.create_task(_fail())
        await asyncio.sleep(0.01)
        del t
        gc.collect()  # stock: only logged
        # a level-triggered scope, used explicitly
        seen = 0
        with asyncbis.CancelScope() as scope:
            scope.cancel()
            for _ in range(2):
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    seen += 1
        return seen, asyncio.TaskGroup is asyncbis._stock.TaskGroup

    assert asyncio.run(main()) == (2, True)
    assert logged == ["Task exception was never retrieved"]


def _child(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCBIS_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
    )


_SHOW = (
    "from asyncbis import switches as s; "
    "print(s.profile(), [(n, s.value(n)) for n in s.NAMES if s.value(n) not in (True, 'on')])"
)


def test_profile_from_the_environment_with_overrides_on_top():
    proc = _child(_SHOW, {"ASYNCBIS_PROFILE": "recommended"})
    assert proc.stdout.strip() == (
        "recommended [('root-task-group', 'unretrieved'), ('task-cancel-level', 'uncancel'), "
        "('no-loop-policies', 'deprecated')]"
    ), proc.stderr
    # the study's probes: one switch off (stock) on top of the profile
    proc = _child(_SHOW, {"ASYNCBIS_PROFILE": "recommended", "ASYNCBIS_DISABLE": "root-task-group"})
    assert proc.stdout.strip() == (
        "recommended [('root-task-group', 'off'), ('task-cancel-level', 'uncancel'), "
        "('no-loop-policies', 'deprecated')]"
    ), proc.stderr
    proc = _child(
        _SHOW,
        {"ASYNCBIS_PROFILE": "additive", "ASYNCBIS_SWITCHES": "scoped-timeouts=on"},
    )
    assert proc.stdout.strip().startswith("additive [('root-task-group', 'off'),")
    assert "scoped-timeouts" not in proc.stdout


def test_unknown_profile_in_the_environment_fails_clearly():
    proc = _child("import asyncbis", {"ASYNCBIS_PROFILE": "fastest"})
    assert proc.returncode != 0
    assert "ASYNCBIS_PROFILE names an unknown profile 'fastest'" in proc.stderr
    assert "valid profiles are: seed, recommended, additive, additive+timeouts" in proc.stderr


def test_the_docs_describe_every_switch_value_and_profile():
    """docs/switches.md has a row for each switch, each further value and each profile of
    switches.toml (the list the library and the study tool asyncbis-compat both read)."""
    docs = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "switches.md").read_text()
    rows = [f"| `{name}` |" for name in switches.NAMES]
    rows += [
        f"| `{name}={value}` |"
        for name, values in switches.VALUES.items()
        for value in values
        if value not in ("on", "off")
    ]
    rows += [f"| `{name}` |" for name in switches.PROFILES]
    assert [row for row in rows if row not in docs] == []
