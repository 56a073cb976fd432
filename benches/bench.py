#!/usr/bin/env python3
"""asyncbis benchmark suite: every case for every runtime, each measurement in a
fresh child process, runtimes alternating round-robin; prints medians and
ratios to stock asyncio on the same loop, optionally writes JSON.

    python benches/bench.py [--quick] [--repeat N] [--cases a,b] [--runtimes x,y] [--json PATH]

See benches/README.md for what each case measures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from _runtimes import RUNTIMES

HERE = Path(__file__).resolve().parent

WORKER = HERE / "_worker.py"
MARK = "@@RESULT "


@dataclass(frozen=True)
class Case:
    id: str
    fn: str  # case function name in the _cases_* modules
    label: str
    size: object
    quick: object
    metric: str = "seconds"  # or "rss_kib"

    def title(self, quick: bool) -> str:
        size = self.quick if quick else self.size
        if isinstance(size, tuple):
            n = "x".join(_count(x) for x in size)
        else:
            n = _count(size)
        return self.label.format(n=n)


def _count(x: int) -> str:
    return f"{x // 1000}k" if x >= 1000 and x % 1000 == 0 else str(x)


CASES: list[Case] = [
    Case("spawn20k", "spawn", "spawn+await {n} tasks", 20_000, 2_000),
    Case("spawn80k", "spawn", "spawn+await {n} tasks", 80_000, 8_000),
    Case("sleep0", "sleep0", "{n} sleep(0)", 200_000, 20_000),
    Case("nested_timeouts", "nested_timeouts", "{n} nested timeouts", 100_000, 10_000),
    Case("bare_scopes", "bare_scopes", "{n} bare scopes", 100_000, 10_000),
    Case("cancel_group", "cancel_group", "cancel {n}-task group", 5_000, 500),
    Case("cancel_tasks", "cancel_tasks", "cancel {n} tasks+exit", 5_000, 500),
    Case("tcp_echo", "tcp_echo", "TCP echo {n} x64B", (50, 2_000), (10, 200)),
    Case("memory", "memory", "peak RSS {n} tasks", 100_000, 10_000, metric="rss_kib"),
]
CASE_BY_ID = {c.id: c for c in CASES}


@dataclass
class Cell:
    samples: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None


def parse_list(value: str | None, known: list[str], what: str) -> list[str]:
    if not value:
        return list(known)
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in known]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (known: {', '.join(known)})")
    return items


def run_child(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, str(WORKER), *args]
    try:
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=timeout, cwd=HERE
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"child exited {proc.returncode}: " + " | ".join(tail)[:500]}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            cwd=HERE,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def fmt_value(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric == "rss_kib":
        return f"{value / 1024:.1f}MiB"
    if value < 1:
        return f"{value * 1000:.1f}ms"
    return f"{value:.3f}s"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cases", help="comma-separated case ids (default: all)")
    ap.add_argument("--runtimes", help="comma-separated runtimes (default: all)")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions per cell (default 5)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    ap.add_argument("--json", metavar="PATH", help="write all samples and medians as JSON")
    ap.add_argument(
        "--timeout",
        type=float,
        default=180,
        help="seconds per measurement; a cell that times out is not run again (default 180)",
    )
    ap.add_argument("--list", action="store_true", help="list cases and runtimes and exit")
    ns = ap.parse_args(argv)

    if ns.list:
        for c in CASES:
            print(f"case     {c.id:16} {c.title(False)} (quick: {c.title(True)})")
        for name, (base, desc) in RUNTIMES.items():
            print(f"runtime  {name:16} {desc}; ratio vs {base or '-'}")
        return 0
    if ns.repeat < 1:
        raise SystemExit("--repeat must be >= 1")

    wanted = set(parse_list(ns.cases, list(CASE_BY_ID), "case"))
    cases = [c for c in CASES if c.id in wanted]
    runtimes = parse_list(ns.runtimes, list(RUNTIMES), "runtime")
    started = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()

    # probe each runtime in a child (same interpreter as the measurements)
    probes = {rt: run_child(["probe", rt], timeout=120) for rt in runtimes}
    available = [rt for rt in runtimes if probes[rt].get("available")]
    first = next((p for p in probes.values() if "python" in p), {})
    packages = first.get("packages", {})

    print("asyncbis benchmark suite")
    print(f"  date      {started.isoformat(timespec='seconds')}   commit {git_commit() or '-'}")
    print(f"  python    {first.get('python', platform.python_version())} ({sys.executable})")
    print(f"  machine   {platform.platform()}, {os.cpu_count()} cpus, {cpu_model()}")
    print("  packages  " + (", ".join(f"{k} {v}" for k, v in packages.items() if v) or "-"))
    print("  load avg  " + " ".join(f"{x:.2f}" for x in load_start) + " (1/5/15 min, at start)")
    print(
        f"  mode      {'quick' if ns.quick else 'full'}, repeat {ns.repeat}, "
        "one child process per measurement"
    )
    note = os.environ.get("ASYNCBIS_BENCH_NOTE")
    if note:
        print(f"  note      {note}")
    for rt in runtimes:
        if not probes[rt].get("available"):
            reason = probes[rt].get("reason") or probes[rt].get("error")
            print(f"  n/a       {rt}: {reason}")
    print(flush=True)

    cells: dict[tuple[str, str], Cell] = {(c.id, rt): Cell() for c in cases for rt in runtimes}
    total = ns.repeat * len(cases) * len(available)
    done = 0
    hung: set[tuple[str, str]] = set()
    t_suite = time.perf_counter()
    for rep in range(ns.repeat):
        for case in cases:
            size = case.quick if ns.quick else case.size
            # rotate the order every repetition so no runtime always runs first
            k = rep % max(len(available), 1)
            order = available[k:] + available[:k]
            for rt in order:
                if (case.id, rt) in hung:
                    done += 1
                    continue
                res = run_child(["run", rt, case.fn, json.dumps(size)], timeout=ns.timeout)
                cell = cells[(case.id, rt)]
                done += 1
                if "error" in res:
                    cell.errors.append(res["error"])
                    if res["error"].startswith("timed out"):
                        hung.add((case.id, rt))  # do not wait for it again
                    shown = "ERROR " + res["error"]
                    if res.get("traceback") and len(cell.errors) == 1:
                        cell.extra["traceback"] = res["traceback"]
                else:
                    value = res[case.metric]
                    cell.samples.append(value)
                    if case.metric == "seconds" and "cpu_seconds" in res:
                        cell.cpu.append(res["cpu_seconds"])
                    cell.loads.append(os.getloadavg()[0])
                    for key in ("form", "task_type", "loop_type"):
                        if key in res:
                            cell.extra[key] = res[key]
                    shown = fmt_value(value, case.metric)
                    if case.metric == "rss_kib":
                        shown += f" in {fmt_value(res['seconds'], 'seconds')}"
                print(
                    f"  [{done}/{total}] rep {rep + 1} {case.id:16} {rt:16} {shown}",
                    file=sys.stderr,
                    flush=True,
                )
    suite_seconds = time.perf_counter() - t_suite
    load_end = os.getloadavg()

    def ratio(case_id: str, rt: str, cpu: bool = False) -> float | None:
        base = RUNTIMES[rt][0] or rt
        this, other = cells[(case_id, rt)], cells.get((case_id, base), Cell())
        m, b = (this.cpu_median, other.cpu_median) if cpu else (this.median, other.median)
        if m is None or b is None or b == 0:
            return None
        return m / b

    # derived: scaling of the spawn ratio from 20k to 80k tasks
    scaling: dict[str, float | None] = {}
    growth: dict[str, float | None] = {}
    if "spawn20k" in CASE_BY_ID and {"spawn20k", "spawn80k"} <= {c.id for c in cases}:
        for rt in runtimes:
            r20, r80 = ratio("spawn20k", rt), ratio("spawn80k", rt)
            scaling[rt] = r80 / r20 if r20 and r80 is not None else None
            m20, m80 = cells[("spawn20k", rt)].median, cells[("spawn80k", rt)].median
            growth[rt] = m80 / m20 if m20 and m80 is not None else None

    def cell_text(case: Case, rt: str) -> str:
        if rt not in available:
            return "n/a"
        cell = cells[(case.id, rt)]
        if cell.median is None:
            return "error"
        r = ratio(case.id, rt)
        text = f"{fmt_value(cell.median, case.metric)} {fmt_ratio(r)}"
        if cell.errors:
            text += " !"
        return text

    header = ["case", *runtimes]
    rows = [[c.title(ns.quick), *(cell_text(c, rt) for rt in runtimes)] for c in cases]
    if scaling:
        small = _count(CASE_BY_ID["spawn20k"].quick if ns.quick else CASE_BY_ID["spawn20k"].size)
        big = _count(CASE_BY_ID["spawn80k"].quick if ns.quick else CASE_BY_ID["spawn80k"].size)
        rows.append(
            [
                f"spawn ratio {big}/{small}",
                *("n/a" if rt not in available else fmt_ratio(scaling[rt]) for rt in runtimes),
            ]
        )
        rows.append(
            [
                f"spawn time {big}/{small}",
                *("n/a" if rt not in available else fmt_ratio(growth[rt]) for rt in runtimes),
            ]
        )
    print(f"medians of {ns.repeat} and ratios (lower is better):")
    print("  every row vs asyncio, except asyncbis-<loop> vs stock asyncio on <loop>")
    print(render_table(header, rows))
    spread_rows = []
    for c in cases:
        row = [c.title(ns.quick)]
        for rt in runtimes:
            cell = cells[(c.id, rt)]
            if rt not in available or not cell.samples or not cell.median:
                row.append("-")
            else:
                row.append(f"{(max(cell.samples) - min(cell.samples)) / cell.median * 100:.0f}%")
        spread_rows.append(row)
    print()
    print("spread (max-min)/median:")
    print(render_table(header, spread_rows))
    cpu_rows = []
    for c in cases:
        if c.metric != "seconds":
            continue
        row = [c.title(ns.quick)]
        for rt in runtimes:
            cell = cells[(c.id, rt)]
            if rt not in available or cell.cpu_median is None:
                row.append("-")
            else:
                row.append(
                    f"{fmt_value(cell.cpu_median, 'seconds')} {fmt_ratio(ratio(c.id, rt, True))}"
                )
        cpu_rows.append(row)
    if cpu_rows:
        print()
        print("CPU time of the measured section (process_time, user+sys; less disturbed by")
        print("other load than wall time, but blind to time spent waiting), medians and ratios:")
        print(render_table(header, cpu_rows))
    types, warnings = [], []
    for rt in available:
        seen = {
            cells[(c.id, rt)].extra.get("task_type")
            for c in cases
            if cells[(c.id, rt)].extra.get("task_type")
        }
        if seen:
            types.append(f"{rt}={'/'.join(sorted(seen))}")
            if rt.startswith("asyncbis") and seen <= {"_asyncio.Task"}:
                warnings.append(f"WARNING: {rt} ran on stock _asyncio.Task, not asyncbis's")
    if types:
        print()
        print("task types: " + ", ".join(types))
    for warning in warnings:
        print(warning)
    errors = [
        (c, rt, cells[(c.id, rt)]) for c in cases for rt in runtimes if cells[(c.id, rt)].errors
    ]
    if errors:
        print()
        print("errors (! in the table; error = every run failed):")
        for c, rt, cell in errors:
            again = " (timed out: not retried)" if (c.id, rt) in hung else ""
            print(f"  {c.id} / {rt}: {len(cell.errors)} of {ns.repeat}{again}: {cell.errors[0]}")
    print()
    print(
        "load avg "
        + " ".join(f"{x:.2f}" for x in load_end)
        + f" at end; suite took {suite_seconds:.0f}s; {os.cpu_count()} cpus"
    )

    if ns.json:
        doc = {
            "meta": {
                "started": started.isoformat(timespec="seconds"),
                "commit": git_commit(),
                "python": first.get("python"),
                "implementation": first.get("implementation"),
                "executable": sys.executable,
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "cpu_model": cpu_model(),
                "packages": packages,
                "loadavg_start": list(load_start),
                "loadavg_end": list(load_end),
                "quick": ns.quick,
                "repeat": ns.repeat,
                "suite_seconds": suite_seconds,
                "note": note,
            },
            "runtimes": {
                rt: {
                    "baseline": RUNTIMES[rt][0],
                    "description": RUNTIMES[rt][1],
                    "available": rt in available,
                    "reason": probes[rt].get("reason") or probes[rt].get("error"),
                }
                for rt in runtimes
            },
            "cases": {
                c.id: {
                    "label": c.title(ns.quick),
                    "size": c.quick if ns.quick else c.size,
                    "metric": c.metric,
                    "results": {
                        rt: {
                            "samples": cells[(c.id, rt)].samples,
                            "loadavg1": cells[(c.id, rt)].loads,
                            "median": cells[(c.id, rt)].median,
                            "ratio": ratio(c.id, rt),
                            "cpu_samples": cells[(c.id, rt)].cpu,
                            "cpu_median": cells[(c.id, rt)].cpu_median,
                            "cpu_ratio": ratio(c.id, rt, True),
                            "errors": cells[(c.id, rt)].errors,
                            **cells[(c.id, rt)].extra,
                        }
                        for rt in runtimes
                        if rt in available
                    },
                }
                for c in cases
            },
            "derived": {
                "spawn_ratio_80k_over_20k": scaling,
                "spawn_time_80k_over_20k": growth,
            },
        }
        Path(ns.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {ns.json}")
    return 1 if any(not cell.samples for _, _, cell in errors) else 0


if __name__ == "__main__":
    sys.exit(main())
