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
# per test (SIGALRM): a hanging test becomes an error and the module goes on. Attribution
# reruns (where hangs are expected) use a shorter limit.
TEST_TIMEOUT = int(os.environ.get("STDLIB_COMPAT_TEST_TIMEOUT", "30"))


class TestTimedOut(BaseException):
    pass


class KeyboardInterruptInTest(Exception):
    """A KeyboardInterrupt that escaped a test: recorded as its error instead of ending the
    whole module's run (unittest re-raises KeyboardInterrupt)."""


def _keep_going_after_keyboard_interrupt() -> None:
    original = unittest.TestCase._callTestMethod

    def call(self, method):
        try:
            return original(self, method)
        except KeyboardInterrupt as exc:
            raise KeyboardInterruptInTest("KeyboardInterrupt escaped the test") from exc

    unittest.TestCase._callTestMethod = call


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


def _load(module: str, tests: list[str] | None) -> unittest.TestSuite:
    loader = unittest.defaultTestLoader
    prefix = f"test.test_asyncio.{module}."
    wanted = [t for t in tests or [] if t.startswith(prefix)]
    if not wanted or len(wanted) != len([t for t in tests or [] if module in t]):
        # no list, or module-level fixtures (setUpModule/tearDownModule) failed: whole module
        return loader.loadTestsFromName(f"test.test_asyncio.{module}")
    return loader.loadTestsFromNames(wanted)


def run_one(module: str, mode: str, disable: str | None, tests: list[str] | None = None) -> dict:
    """In this process: (patch and) run one test module; return its outcomes."""
    if mode != "stock":
        from asyncbis import switches

        if mode == "off":
            names = disable.split(",") if disable else list(switches.NAMES)
            switches.disable(*names)
        elif mode == "harness":
            # the test harness's needs: loop policies and custom task factories
            switches.disable(*HARNESS)
        import asyncbis

        asyncbis.patch_asyncio()
    from test import support

    support.verbose = 0
    signal.signal(signal.SIGALRM, _alarm)
    _keep_going_after_keyboard_interrupt()
    suite = _load(module, tests)
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
    ap.add_argument("--mode", choices=["stock", "off", "default", "harness"], default="default")
    ap.add_argument("--disable", help="with --mode off: only these switches off")
    ap.add_argument("--only", help="comma-separated module names (test_tasks,...)")
    ap.add_argument("--report", metavar="DIR", help="Markdown tables from DIR/*-<ver>.json")
    ap.add_argument("--tests-file", help="only these test ids (a JSON list)")
    ap.add_argument(
        "--attribute",
        metavar="DEFAULT_JSON",
        help="rerun the failures of a --mode default run with each switch off alone; "
        "writes {test: [switches whose being off makes it pass]} to --out",
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out")
    args = ap.parse_args()

    tests = None
    if args.tests_file:
        with open(args.tests_file) as f:
            tests = json.load(f)
    if args.one:
        res = run_one(args.one, args.mode, args.disable, tests)
        sys.stdout.write("\n@@RESULT@@" + json.dumps(res) + "\n")
        return 0
    if args.attribute:
        return attribute(args.attribute, args.out)
    if args.report:
        print(report(args.report))
        return 0

    modules = args.only.split(",") if args.only else list_modules()
    result: dict = {
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
        if args.tests_file:
            cmd += ["--tests-file", args.tests_file]
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
        result["modules"][mod] = entry
        outcomes = entry.get("outcomes", {})
        bad = sorted(t for t, o in outcomes.items() if o in ("fail", "error"))
        if entry.get("crashed") or entry.get("timeout"):
            why = "timed out" if entry.get("timeout") else "crashed"
            bad.append(f"test.test_asyncio.{mod} (module {why})")
        result["failed"].extend(bad)
        n = len(outcomes)
        print(f"{mod:28s} {n:5d} tests {len(bad):4d} bad {entry['seconds']:7.1f}s", flush=True)
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["total"] = sum(len(m.get("outcomes", {})) for m in result["modules"].values())
    print(
        f"total {result['total']} tests, {len(result['failed'])} failed/errored, "
        f"{result['seconds']}s"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, sort_keys=True)
    return 0


def _run_child(module: str, mode: str, disable: str | None, tests_file: str | None) -> dict:
    cmd = [sys.executable, __file__, "--mode", mode, "--one", module]
    if disable:
        cmd += ["--disable", disable]
    if tests_file:
        cmd += ["--tests-file", tests_file]
    env = {**os.environ, "STDLIB_COMPAT_TEST_TIMEOUT": "10"}
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=MODULE_TIMEOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"timeout": True}
    marker = proc.stdout.rfind("@@RESULT@@")
    if marker < 0:
        return {"crashed": True, "stderr": proc.stderr[-3000:]}
    return json.loads(proc.stdout[marker + len("@@RESULT@@") :])


HARNESS = ("no-loop-policies", "no-task-factory")


def attribute(run_json: str, out: str | None) -> int:
    """Attribute each failure of a ``default`` or ``harness`` run to the switches whose being
    off (alone, on top of the run's own settings) makes it pass. A failure whose error is
    asyncbis refusing something "(switch NAME)" is attributed to NAME from its message."""
    import re
    import tempfile

    with open(run_json) as f:
        run = json.load(f)
    failed = run["failed"]
    base_off = list(HARNESS) if run["mode"] == "harness" else []
    details: dict[str, str] = {}
    for entry in run["modules"].values():
        details.update(entry.get("details", {}))
    from asyncbis import switches

    fixes: dict[str, list[str]] = {t: [] for t in failed}
    rerun: list[str] = []
    for t in failed:
        named = re.findall(r"\(switch ([a-z-]+)\)", details.get(t, ""))
        if named and named[-1] in switches.NAMES:
            fixes[t].append(named[-1])
        else:
            rerun.append(t)
    by_module: dict[str, list[str]] = {}
    for t in rerun:
        mod = next((p for p in t.replace("(", " ").replace(")", " ").split() if "test_" in p), "")
        mod = mod.split("test.test_asyncio.")[-1].split(".")[0]
        by_module.setdefault(mod, []).append(t)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as tf:
        json.dump(rerun, tf)
    for name in switches.NAMES:
        if name in base_off:
            continue
        for mod, tests in sorted(by_module.items()):
            entry = _run_child(mod, "off", ",".join([*base_off, name]), tf.name)
            outcomes = entry.get("outcomes", {})
            for t in tests:
                if outcomes.get(t) in ("ok", "skip", "xfail"):
                    fixes[t].append(name)
                elif "(module" in t and not (entry.get("timeout") or entry.get("crashed")):
                    fixes[t].append(name)
        print(f"{name:20s} fixes {sum(name in v for v in fixes.values()):4d}", flush=True)
    os.unlink(tf.name)
    if out:
        with open(out, "w") as f:
            json.dump(fixes, f, indent=1, sort_keys=True)
    return 0


def _module_of(test_id: str) -> str:
    """`test.test_asyncio.test_tasks.X.test_y` (or "... (module crashed)") -> test_tasks."""
    return test_id.split("test.test_asyncio.")[-1].split(".")[0].split(" ")[0]


def _by_module_table(by_switch: dict[str, list[str]]) -> list[str]:
    """The same failures per test module: how many, and which switch(es) each is owed to."""
    per_module: dict[str, dict[str, int]] = {}
    for key, tests in by_switch.items():
        for t in tests:
            counts = per_module.setdefault(_module_of(t), {})
            counts[key] = counts.get(key, 0) + 1
    lines = ["", "| test module | failures | by switch(es) |", "|---|---|---|"]
    for mod, counts in sorted(per_module.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        parts = "; ".join(
            f"{key}: {n}" for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        lines.append(f"| {mod} | {sum(counts.values())} | {parts} |")
    return lines


def report(directory: str) -> str:
    """Markdown: per Python, stock vs all-off vs defaults vs harness; failures by switch."""
    import glob

    from asyncbis import switches

    def load(kind: str, ver: str) -> dict | None:
        path = os.path.join(directory, f"{kind}-{ver}.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    paths = glob.glob(os.path.join(directory, "stock-*.json"))
    vers = sorted(p.rsplit("-", 1)[1][: -len(".json")] for p in paths)
    lines = [
        "| Python | tests | stock: failed | all switches off: failed (beyond stock) | "
        "defaults: failed (beyond stock) | harness: failed (beyond stock) |",
        "|---|---|---|---|---|---|",
    ]
    details: list[str] = []
    for ver in vers:
        stock = load("stock", ver)
        assert stock is not None
        base = set(stock["failed"])
        row = [ver, str(stock["total"]), str(len(base))]
        for kind in ("off", "default", "harness"):
            run = load(kind, ver)
            if run is None:
                row.append("-")
            else:
                row.append(f"{len(run['failed'])} ({len(set(run['failed']) - base)})")
        lines.append("| " + " | ".join(row) + " |")
        off = load("off", ver)
        if off is not None and set(off["failed"]) - base:
            details.append(f"\n### Python {ver}: failures with every switch off\n")
            details += [f"- `{t}`" for t in sorted(set(off["failed"]) - base)]
        for kind, title in (("default", "the defaults"), ("harness", "harness switches off")):
            run, attribution = load(kind, ver), load(f"attribution-{kind}", ver)
            if run is None or attribution is None:
                continue
            rerun_switches = len(switches.NAMES) - (len(HARNESS) if kind == "harness" else 0)
            by_switch: dict[str, list[str]] = {}
            for t in sorted(set(run["failed"]) - base):
                fixed_by = attribution.get(t, [])
                if len(fixed_by) >= rerun_switches:
                    key = "(passes on every rerun: timing-dependent or flaky)"
                else:
                    key = ", ".join(fixed_by) or "(no single switch: needs several off)"
                by_switch.setdefault(key, []).append(t)
            ordered = sorted(by_switch.items(), key=lambda kv: (-len(kv[1]), kv[0]))
            details.append(f"\n### Python {ver}: failures with {title}, by switch\n")
            details.append("| switch(es) whose being off (alone) makes it pass | failures |")
            details.append("|---|---|")
            details += [f"| {key} | {len(ts)} |" for key, ts in ordered]
            details += _by_module_table(by_switch)
            for key, ts in ordered:
                details.append(f"\n<details><summary>{key} ({len(ts)})</summary>\n")
                details += [f"- `{t}`" for t in ts]
                details.append("\n</details>")
    return "\n".join(lines + details)


if __name__ == "__main__":
    sys.exit(main())
