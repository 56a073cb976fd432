"""pytest plugin installed by asyncbis-compat into each study venv.

Writes one JSON line per test phase to $ASYNCBIS_COMPAT_RECORD, flushed at once, so the
record survives the suite being killed (a hang shows up as a test that started and never
finished). Failures carry the structured exception: type, message and frames, which the
study uses to group failures by signature and by who raised them.
"""

import builtins
import json
import os
import traceback

import pytest

_RECORD_PATH = os.environ.get("ASYNCBIS_COMPAT_RECORD")
_GROUP_TYPE = getattr(builtins, "BaseExceptionGroup", None)
_fd = None


def _write(event):
    global _fd
    if not _RECORD_PATH:
        return
    if _fd is None:
        _fd = os.open(_RECORD_PATH, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, (json.dumps(event) + "\n").encode("utf-8", "replace"))


def _type_name(exc):
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__builtin__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _frames(tb):
    return [[f.filename, f.lineno or 0, f.name] for f in traceback.extract_tb(tb)]


def _describe(exc):
    # For exception groups the first leaf says more than the wrapper; keep both.
    outer_frames = _frames(exc.__traceback__)
    group = None
    depth = 0
    while _GROUP_TYPE is not None and isinstance(exc, _GROUP_TYPE) and exc.exceptions and depth < 8:
        if group is None:
            group = {"type": _type_name(exc), "size": len(exc.exceptions)}
        exc = exc.exceptions[0]
        outer_frames += _frames(exc.__traceback__)
        depth += 1
    return {
        "type": _type_name(exc),
        "message": str(exc)[:1000],
        "frames": outer_frames[-60:],
        "group": group,
    }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.excinfo is not None:
        try:
            # A plain attribute survives pytest-xdist's report serialisation.
            report.asyncbis_compat_exc = json.dumps(_describe(call.excinfo.value))
        except Exception:  # never let the recorder break the run it observes
            pass


def _is_xdist_worker(config):
    return hasattr(config, "workerinput")


_config = None


def pytest_configure(config):
    global _config
    _config = config


def pytest_runtest_logstart(nodeid, location):
    if _config is not None and not _is_xdist_worker(_config):
        _write({"event": "start", "nodeid": nodeid})


def pytest_runtest_logreport(report):
    if _config is None or _is_xdist_worker(_config):
        return
    event = {
        "event": "phase",
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "duration": getattr(report, "duration", 0.0),
        "xfail": hasattr(report, "wasxfail"),
    }
    if report.failed:
        event["longrepr"] = str(report.longrepr)[-6000:]
        exc = getattr(report, "asyncbis_compat_exc", None)
        if exc:
            event["exc"] = json.loads(exc)
    _write(event)


def pytest_collectreport(report):
    if _config is None or _is_xdist_worker(_config) or not report.failed:
        return
    _write(
        {
            "event": "collect",
            "nodeid": report.nodeid,
            "outcome": "failed",
            "longrepr": str(report.longrepr)[-6000:],
        }
    )


def pytest_sessionfinish(session, exitstatus):
    if not _is_xdist_worker(session.config):
        _write({"event": "finish", "exitstatus": int(exitstatus)})


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    # Tells the study the session is over: a process that then lingers (joining leftover
    # workers at exit) can be interrupted without losing results.
    if _RECORD_PATH and not _is_xdist_worker(config):
        with open(_RECORD_PATH + ".finished", "w"):
            pass
