"""Run CPython's own test_asyncio, stock or under asyncbis.patch_asyncio(), one module per process.

    python scripts/stdlib_compat.py --mode stock|off|default [--out FILE] [--only MOD,...]
    python scripts/stdlib_compat.py --mode off --disable name,name   (the listed switches off)

``off`` turns every behaviour switch off (asyncbis must then behave as stock asyncio);
``default`` leaves them all on. Writes JSON {"python", "mode", "modules": {mod: {...}},
"failed": [test ids]} where a failed test is one that failed or errored (unexpected successes
count too). Each module runs in its own process under a time limit, like regrtest does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import unittest

MODULE_TIMEOUT = 900
TEST_TIMEOUT = 60  # per test (SIGALRM): a hanging test becomes an error, the module goes on


class TestTimedOut(BaseException):
    pass


def _alarm(signum, frame):
    raise TestTimedOut(f"test ran longer than {TEST_TIMEOUT}s")


def list_modules() -> list[str]:
    import test.test_asyncio as pkg

    here = os.path.dirname(pkg.__file__)
    return sorted(
        name[:-3]
        for name in os.listdir(here)
        if name.startswith("test_")
        and name.endswith(".py")
        and name
        not in ("test_windows_events.py", "test_windows_utils.py", "test_proactor_events.py")
    ) + ["test_proactor_events"]


class _Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}
        self.details: dict[str, str] = {}

    def _tid(self, test) -> str:
        return test.id()

    def startTest(self, test):
        super().startTest(test)
        signal.alarm(TEST_TIMEOUT)

    def stopTest(self, test):
        signal.alarm(0)
        super().stopTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.outcomes.setdefault(self._tid(test), "ok")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes[self._tid(test)] = "fail"
        self.details[self._tid(test)] = self._exc_info_to_string(err, test)[-1500:]

    def addError(self, test, err):
        super().addError(test, err)
        self.outcomes[self._tid(test)] = "error"
        self.details[self._tid(test)] = self._exc_info_to_string(err, test)[-1500:]

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.outcomes[self._tid(test)] = "skip"

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.outcomes[self._tid(test)] = "xfail"

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.outcomes[self._tid(test)] = "fail"
        self.details[self._tid(test)] = "unexpected success"

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self.outcomes[self._tid(test)] = kind
            self.details[self._tid(test)] = self._exc_info_to_string(err, test)[-1500:]


def run_one(module: str, mode: str, disable: str | None) -> dict:
    """In this process: (patch and) run one test module; return its outcomes."""
    if mode != "stock":
        from asyncbis import switches

        if mode == "off":
            names = disable.split(",") if disable else list(switches.NAMES)
            switches.disable(*names)
        import asyncbis

        asyncbis.patch_asyncio()
    from test import support

    support.verbose = 0
    signal.signal(signal.SIGALRM, _alarm)
    suite = unittest.defaultTestLoader.loadTestsFromName(f"test.test_asyncio.{module}")
    with open(os.devnull, "w") as sink:
        runner = unittest.TextTestRunner(stream=sink, resultclass=_Recorder, verbosity=0)
        result = runner.run(suite)
    out = {"outcomes": result.outcomes, "details": result.details}
    if mode != "stock":
        from asyncbis import _stats

        out["asyncbis_tasks"] = _stats.tasks_created()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["stock", "off", "default"], required=True)
    ap.add_argument("--disable", help="with --mode off: only these switches off")
    ap.add_argument("--only", help="comma-separated module names (test_tasks,...)")
    ap.add_argument("--tests", help="with --one: only these test ids (comma-separated)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out")
    args = ap.parse_args()

    if args.one:
        res = run_one(args.one, args.mode, args.disable)
        sys.stdout.write("\n@@RESULT@@" + json.dumps(res) + "\n")
        return 0

    modules = args.only.split(",") if args.only else list_modules()
    report: dict = {
        "python": sys.version.split()[0],
        "mode": args.mode,
        "disable": args.disable,
        "modules": {},
        "failed": [],
    }
    t0 = time.monotonic()
    for mod in modules:
        cmd = [sys.executable, __file__, "--mode", args.mode, "--one", mod]
        if args.disable:
            cmd += ["--disable", args.disable]
        start = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=MODULE_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
            marker = proc.stdout.rfind("@@RESULT@@")
            if marker < 0:
                entry = {"crashed": True, "rc": proc.returncode, "stderr": proc.stderr[-3000:]}
            else:
                entry = json.loads(proc.stdout[marker + len("@@RESULT@@") :])
        except subprocess.TimeoutExpired:
            entry = {"timeout": True}
        entry["seconds"] = round(time.monotonic() - start, 1)
        report["modules"][mod] = entry
        outcomes = entry.get("outcomes", {})
        bad = sorted(t for t, o in outcomes.items() if o in ("fail", "error"))
        if entry.get("crashed") or entry.get("timeout"):
            why = "timed out" if entry.get("timeout") else "crashed"
            bad.append(f"test.test_asyncio.{mod} (module {why})")
        report["failed"].extend(bad)
        n = len(outcomes)
        print(f"{mod:28s} {n:5d} tests {len(bad):4d} bad {entry['seconds']:7.1f}s", flush=True)
    report["seconds"] = round(time.monotonic() - t0, 1)
    report["total"] = sum(len(m.get("outcomes", {})) for m in report["modules"].values())
    print(
        f"total {report['total']} tests, {len(report['failed'])} failed/errored, "
        f"{report['seconds']}s"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
