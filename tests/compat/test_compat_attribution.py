"""asyncbis-compat's attribution on projects whose breakage misleads a naive rerun.

Each fixture under tests/fixtures/ reproduces one case with the stand-in asyncbis
(compat_project/fake_asyncbis): a session ended early by an INTERNALERROR, a hang only the
stall watchdog stops, a harness-breaking switch hiding the switch that breaks a test's body,
a session that fails at start-up (a conftest raising on import), a module whose import
fails hiding the switch behind it, and tests that time out in every probe that does not fix
them.

Environment: ASYNCBIS_COMPAT_BIN (the tool; built with cargo otherwise).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from test_compat_e2e import _fake_asyncbis_wheel, _tool

# Each check makes a venv and reruns hanging tests: minutes, not seconds.
pytestmark = pytest.mark.timeout(900)

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"


def _check(tmp_path, fixture, timeout, env=None):
    report_dir = tmp_path / "report"
    command = _tool() + [
        "check",
        str(FIXTURES / fixture),
        "--python",
        sys.executable,
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(report_dir),
        "--tests",
        "tests",
        "--timeout",
        str(timeout),
        "--suite-timeout",
        "600",
        "--quiet",
        "--wheel",
        _fake_asyncbis_wheel(tmp_path),
    ]
    environ = None if env is None else {**os.environ, **env}
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=environ)
    report_path = report_dir / "report.json"
    assert report_path.exists(), f"no report; exit {done.returncode}\n{done.stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    (project,) = report["projects"]
    assert project["status"] == "ok", project["reason"]
    failures = {f["nodeid"]: f for f in project["failures"]}
    # .get: the keys older tools lack, so that run against one, these tests fail on behaviour.
    not_run = {t["nodeid"]: t for t in project.get("not_run", [])}
    return report, project, failures, not_run


def _detail(failure):
    return (failure["attribution"], failure["reruns"], failure["traceback"][-1500:])


def _switch(failure):
    attribution = failure["attribution"]
    assert attribution["verdict"] == "switch", _detail(failure)
    return attribution["fixed_by"]


AFTER = "tests/test_b_after.py"
PASSING_AFTER = [f"{AFTER}::test_passes_when_it_runs[{n}]" for n in (1, 2, 3)]
ORPHAN_AFTER = f"{AFTER}::test_orphan_task_failure_is_only_logged"


def _assert_tests_after_the_end_get_their_own_outcome(report, failures, not_run, why):
    # Tests after the one that ended the session never started: not failures, and not given
    # the verdict of whatever switch lets the session go on.
    for nodeid in PASSING_AFTER:
        assert nodeid not in failures, _detail(failures[nodeid])
        assert not_run[nodeid]["alone"] == "passed", not_run[nodeid]
        assert why in not_run[nodeid]["reason"], not_run[nodeid]
    # One of them fails on its own, for its own switch, with its own failure as signature.
    orphan = failures[ORPHAN_AFTER]
    assert _switch(orphan) == ["root-task-group"]
    assert orphan["signature"]["exc_type"] == "ValueError", orphan["signature"]
    assert orphan.get("signature_run") == "asyncbis"
    assert report["summary"].get("not_run") == 3
    assert report["summary"]["newly_failing"] == 2


def test_a_session_ended_by_an_internal_error(tmp_path):
    report, project, failures, not_run = _check(tmp_path, "compat_internal_error", 5)
    crash = failures["tests/test_a_crash.py::test_cancellation_ends_the_session"]
    assert _switch(crash) == ["task-cancel-level"]
    # pytest ended by itself while the test ran: not "hung", and no cap was reached.
    assert crash["outcome"] == "crashed", _detail(crash)
    assert crash["signature"]["exc_type"] == "SessionEnded"
    assert "report plugin cannot render" in crash["signature"]["message"]
    assert "exit status 3" in crash["traceback"]
    assert "INTERNALERROR" in crash["traceback"]
    asyncbis_run = project["runs"][2]
    assert asyncbis_run["exit_status"] == 3
    assert not asyncbis_run["killed_at_cap"] and not asyncbis_run.get("stalled")
    _assert_tests_after_the_end_get_their_own_outcome(report, failures, not_run, "exit status 3")
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Not run under asyncbis" in markdown
    assert "passed when run alone" in markdown


def test_a_hang_stopped_by_the_stall_watchdog(tmp_path):
    report, project, failures, not_run = _check(tmp_path, "compat_stall", 2)
    hang = failures["tests/test_a_stall.py::test_runaway_retry_loop"]
    assert _switch(hang) == ["structured-exit"]
    # Killed by the stall watchdog, and said so: not the suite's wall-clock cap.
    assert hang["outcome"] == "hung", _detail(hang)
    assert hang["signature"]["exc_type"] == "Stalled"
    assert "stall watchdog" in hang["signature"]["message"]
    asyncbis_run = project["runs"][2]
    assert asyncbis_run.get("stalled") and not asyncbis_run["killed_at_cap"]
    _assert_tests_after_the_end_get_their_own_outcome(report, failures, not_run, "stall watchdog")
    # Probed by groups of switches: each probe where it still hangs costs a stall, and there
    # are about as many as levels of halving, not one per switch (ten).
    hung = [label for label, outcome in hang["reruns"].items() if outcome == "hung"]
    assert len(hung) <= 5, hang["reruns"]


def test_a_harness_breaking_switch_is_held_off(tmp_path):
    report, project, failures, not_run = _check(tmp_path, "compat_harness", 5)
    masked = "tests/test_masked.py"
    assert not not_run
    single = failures[f"{masked}::test_edge_cancellation_behind_the_harness"]
    assert single["phase"] == "setup"
    assert _switch(single) == ["task-cancel-level"]
    assert single["attribution"].get("held_off") == ["no-loop-policies"]
    # The signature is the test's own failure (with the harness switch held off), not the
    # harness's RuntimeError that every test of the project shares.
    assert single.get("signature_run") == "asyncbis-off-no-loop-policies"
    assert "RuntimeError" not in single["signature"]["exc_type"], single["signature"]
    assert "CancelledError" in single["signature"]["exc_type"], single["signature"]
    # Both switches of the body are named; this used to be "combination(no-loop-policies)".
    pair = failures[f"{masked}::test_two_switches_together_behind_the_harness"]
    assert _switch(pair) == ["root-task-group", "task-cancel-level"]
    assert pair["attribution"].get("held_off") == ["no-loop-policies"]
    assert pair["signature"]["exc_type"] == "ValueError", pair["signature"]
    # Not only the harness switch the tool knows: any switch that breaks the setup.
    other = failures[f"{masked}::test_edge_cancellation_behind_another_switch"]
    assert _switch(other) == ["task-cancel-level"]
    assert other["attribution"].get("held_off") == ["root-task-group"]
    assert other.get("signature_run") == "asyncbis-off-root-task-group"
    summary = report["summary"]
    assert summary["by_verdict"] == {"switch": 3}
    assert summary["attributed_share"] == 1.0
    signature_keys = {k for s in summary["signatures"] for k in s["fixed_by"]}
    assert "task-cancel-level (no-loop-policies held off)" in signature_keys


def test_a_session_that_fails_at_start_up_is_breakage(tmp_path):
    report, project, failures, not_run = _check(tmp_path, "compat_startup", 5)
    module = "tests/test_startup.py"
    # Under asyncbis the conftest cannot be imported: no test starts, not even alone. That is
    # breakage, not "not run": every test is newly failing.
    asyncbis_run = project["runs"][2]
    assert asyncbis_run["exit_status"] == 4, asyncbis_run
    assert sum(asyncbis_run["counts"].values()) == 0, asyncbis_run
    assert not not_run, not_run
    started_alone = [
        f"{module}::test_uses_the_session_loop",
        f"{module}::test_passes_once_the_session_starts[1]",
        f"{module}::test_passes_once_the_session_starts[2]",
    ]
    edge = f"{module}::test_edge_cancellation_behind_the_start_up"
    assert sorted(failures) == sorted([*started_alone, edge])
    for nodeid in started_alone:
        failure = failures[nodeid]
        assert failure["outcome"] == "not-started", _detail(failure)
        assert failure["phase"] == "startup"
        # The session's error is the signature, from the conftest that raised it.
        assert failure["signature"]["exc_type"] == "RuntimeError", failure["signature"]
        assert "event loop policies are gone" in failure["signature"]["message"]
        assert failure["signature"]["frame"] == "tests/conftest.py:<module>"
        assert failure["signature"]["owner"] == "tests"
        assert "session start-up failed (exit status 4)" in failure["traceback"]
        assert "ImportError while loading conftest" in failure["traceback"]
        # With the switch that broke the start-up off, the session starts and the test passes.
        assert _switch(failure) == ["no-loop-policies"]
    # Behind the start-up, the test's own failure: the start-up switch is held off and the
    # switch that breaks its body named, with its own failure as signature.
    own = failures[edge]
    assert own["outcome"] == "not-started"
    assert _switch(own) == ["task-cancel-level"]
    assert own["attribution"].get("held_off") == ["no-loop-policies"]
    assert own.get("signature_run") == "asyncbis-off-no-loop-policies"
    assert "CancelledError" in own["signature"]["exc_type"], own["signature"]
    summary = report["summary"]
    assert summary["newly_failing"] == 4
    assert summary.get("not_started") == 4
    assert summary.get("not_run") == 0
    assert summary["attributed_share"] == 1.0
    # The project says, visibly, that its whole suite fails at start-up.
    assert "whole suite fails at start-up" in (project["note"] or ""), project["note"]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "whole suite fails at start-up under asyncbis (exit status 4): RuntimeError" in markdown
    assert "| of which never started (session start-up failed, even alone) | 4 |" in markdown
    assert "## Not run under asyncbis" not in markdown


def test_a_module_that_fails_to_import_hides_the_switch_behind_it(tmp_path):
    report, project, failures, not_run = _check(tmp_path, "compat_collect", 5)
    module = "tests/test_module_loop.py"
    assert not not_run, not_run
    assert sorted(failures) == [
        f"{module}::test_edge_cancellation_behind_the_import",
        f"{module}::test_uses_the_module_loop",
    ]
    loop_user = failures[f"{module}::test_uses_the_module_loop"]
    assert loop_user["phase"] == "collect"
    assert _switch(loop_user) == ["no-loop-policies"]
    # Each probe sees the module's collection error as the test's failure: once
    # no-loop-policies is off the module imports, the body fails, and the switch behind it is
    # found with no-loop-policies held off. (Reading a collection error as "did not run" made
    # this an unattributed failure.)
    edge = failures[f"{module}::test_edge_cancellation_behind_the_import"]
    assert edge["phase"] == "collect"
    assert _switch(edge) == ["task-cancel-level"]
    assert edge["attribution"].get("held_off") == ["no-loop-policies"]
    assert edge.get("signature_run") == "asyncbis-off-no-loop-policies"
    assert "CancelledError" in edge["signature"]["exc_type"], edge["signature"]
    assert report["summary"]["attributed_share"] == 1.0
    # The session started: no start-up note, nothing not started.
    assert not project["note"] or "start-up" not in project["note"], project["note"]
    assert report["summary"].get("not_started") == 0


def test_timing_out_tests_cost_a_few_probes_not_one_per_switch(tmp_path):
    report, project, failures, not_run = _check(tmp_path, "compat_timeout", 3)
    leftover = failures["tests/test_timeouts.py::test_leftover_task_hangs_at_exit"]
    assert leftover["outcome"] == "timeout"
    assert _switch(leftover) == ["structured-exit"]
    # One switch probed at a time, it would time out in ten probes (every switch but the one
    # that fixes it, plus the rerun alone); by halving groups of switches, in five at most.
    timed_out = [label for label, outcome in leftover["reruns"].items() if outcome == "timeout"]
    assert len(timed_out) <= 5, leftover["reruns"]
    either = failures["tests/test_timeouts.py::test_hangs_under_either_switch"]
    attribution = either["attribution"]
    assert attribution["verdict"] == "combination", _detail(either)
    assert attribution["involved"] == ["task-cancel-level", "structured-exit"]
    timed_out = [label for label, outcome in either["reruns"].items() if outcome == "timeout"]
    assert len(timed_out) <= 7, either["reruns"]


def test_a_switch_whose_probe_passes_by_luck_is_not_named(tmp_path):
    # The fixture's tests count their runs per set of switches off in this directory: a
    # "race" won on the first run with level-cancellation (or structured-exit) off only.
    luck = tmp_path / "luck"
    report, project, failures, not_run = _check(
        tmp_path, "compat_luck", 5, env={"COMPAT_LUCK_DIR": str(luck)}
    )
    module = "tests/test_luck.py"
    assert not not_run, not_run
    named = failures[f"{module}::test_library_name_with_a_lucky_race"]
    # It used to be fixed_by [level-cancellation, sniffio-name]: the lucky pass counted.
    assert _switch(named) == ["sniffio-name"]
    assert named["attribution"].get("intermittent") == ["level-cancellation"], _detail(named)
    reruns = named["reruns"]
    assert reruns["asyncbis-off-level-cancellation"] == "passed", reruns
    assert reruns["asyncbis-off-level-cancellation-again"] == "failed", reruns
    assert reruns["asyncbis-off-sniffio-name-again"] == "passed", reruns
    # Every switch on again: it still fails.
    assert reruns["asyncbis-again"] == "failed", reruns
    # No pass holds up: the other rules decide (every switch off fails: unattributed).
    luck_only = failures[f"{module}::test_only_lucky_races"]
    attribution = luck_only["attribution"]
    assert attribution["verdict"] == "unattributed", _detail(luck_only)
    assert attribution["fixed_by"] == []
    assert attribution.get("intermittent") == ["level-cancellation", "structured-exit"]
    assert luck_only["reruns"]["asyncbis-all-off"] == "failed", luck_only["reruns"]
    summary = report["summary"]
    assert summary["by_verdict"] == {"switch": 1, "unattributed": 1}
    assert summary["attributed_share"] == 0.5
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "sniffio-name (intermittent: level-cancellation)" in markdown
    assert "unattributed (intermittent: level-cancellation+structured-exit)" in markdown
