"""Load-independent companion of bench.py: instructions executed per case, under callgrind.

Wall-clock ratios need a quiet machine. Instruction counts do not: valgrind's callgrind
counts every instruction the process executes, whatever else runs on the machine. Each case
runs twice per runtime in a fresh ``_worker.py`` child (the same code bench.py times), at a
small and at a large size; the difference of the two totals is the cost of the extra work,
without interpreter start-up, imports and loop creation. Ratios are to stock asyncio on the
same loop, as in bench.py.

Instructions are not time (cache misses, branch mispredictions and memory growth are not
counted, so the GC-driven scaling of spawn at 80k is not visible here), but a ratio that holds
on instructions holds on a quiet machine up to those effects.

    python benches/instructions.py [--cases a,b] [--runtimes x,y] [--scale N] [--timed]
                                   [--json PATH]

``--timed`` counts only the section bench.py times (the cases call ``os.getppid()`` when the
timer starts and ``os.getpgrp()`` when it stops; callgrind zeroes its counters before the first
and dumps before the second), e.g. for ``cancel_group`` the cancellation and the group's exit
without the spawning. It needs an interpreter whose symbol table names ``os_getppid`` and
``os_getpgrp`` (pyenv and python.org builds do; a stripped distribution build does not).

Needs ``valgrind`` on PATH (Debian: ``apt install valgrind``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _runtimes import RUNTIMES, probe  # noqa: E402

# case id -> (case function, small size, large size); the large sizes are the quick sizes of
# bench.py times 3, small enough for callgrind's ~50x slowdown
CASES: dict[str, tuple[str, object, object]] = {
    "spawn": ("spawn", 2_000, 6_000),
    "sleep0": ("sleep0", 20_000, 60_000),
    "nested_timeouts": ("nested_timeouts", 10_000, 30_000),
    "bare_scopes": ("bare_scopes", 10_000, 30_000),
    "cancel_group": ("cancel_group", 500, 1_500),
    "cancel_tasks": ("cancel_tasks", 500, 1_500),
    "tcp_echo": ("tcp_echo", (10, 200), (10, 600)),
}
UNITS = {
    "spawn": "task",
    "sleep0": "sleep(0)",
    "nested_timeouts": "iteration",
    "bare_scopes": "scope",
    "cancel_group": "task",
    "cancel_tasks": "task",
    "tcp_echo": "round trip",
}
DEFAULT_RUNTIMES = ("asyncio", "asyncbis", "uvloop", "asyncbis-uvloop")


def _units(size: object) -> int:
    if isinstance(size, tuple):
        n = 1
        for x in size:
            n *= x
        return n
    assert isinstance(size, int)
    return size


def _scaled(size: object, scale: int) -> object:
    if isinstance(size, tuple):
        return (size[0], size[1] * scale)
    assert isinstance(size, int)
    return size * scale


def count(runtime: str, case: str, size: object, workdir: Path, timed: bool = False) -> int:
    """Instructions executed by one ``_worker.py run`` child under callgrind (with ``timed``,
    only in the section between the case's two markers)."""
    out = workdir / f"callgrind.{runtime}.{case}.{os.getpid()}"
    markers = ["--zero-before=os_getppid", "--dump-before=os_getpgrp"] if timed else []
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        *markers,
        sys.executable,
        str(HERE / "_worker.py"),
        "run",
        runtime,
        case,
        json.dumps(size),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or "@@RESULT" not in done.stdout or '"error"' in done.stdout:
        tail = (done.stdout + done.stderr)[-1500:]
        raise RuntimeError(f"{runtime} {case} {size}: the child failed:\n{tail}")
    if timed:
        part = Path(f"{out}.1")
        if not part.exists():
            raise RuntimeError(
                f"{runtime} {case}: callgrind wrote no dump at the section's end marker; "
                "the interpreter's symbol table lacks os_getpgrp (stripped build?)"
            )
        match = re.search(r"^(?:summary|totals): (\d+)", part.read_text(), re.MULTILINE)
        for f in workdir.glob(f"{out.name}*"):
            f.unlink()
    else:
        match = re.search(r"Collected : (\d+)", done.stderr)
        out.unlink(missing_ok=True)
    if match is None:
        raise RuntimeError(f"{runtime} {case}: no instruction total in valgrind's output")
    return int(match.group(1))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case ids")
    ap.add_argument("--runtimes", default=",".join(DEFAULT_RUNTIMES))
    ap.add_argument("--scale", type=int, default=1, help="multiply both sizes by N")
    ap.add_argument("--timed", action="store_true", help="count only the section bench.py times")
    ap.add_argument("--json", type=Path, help="write the counts as JSON")
    ns = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("instructions.py: needs valgrind on PATH (apt install valgrind)", file=sys.stderr)
        return 2
    cases = [c for c in ns.cases.split(",") if c]
    runtimes = [r for r in ns.runtimes.split(",") if r]
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}; cases: {', '.join(CASES)}")
    usable = []
    for r in runtimes:
        if r not in RUNTIMES:
            ap.error(f"unknown runtime {r!r}; runtimes: {', '.join(RUNTIMES)}")
        reason = probe(r)
        if reason:
            print(f"instructions.py: skipping {r}: {reason}", file=sys.stderr)
        else:
            usable.append(r)
    per_unit: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="asyncbis-instr-") as tmp:
        for c in cases:
            fn, small, large = CASES[c]
            small, large = _scaled(small, ns.scale), _scaled(large, ns.scale)
            extra_units = _units(large) - _units(small)
            per_unit[c] = {}
            for r in usable:
                a = count(r, fn, small, Path(tmp), ns.timed)
                b = count(r, fn, large, Path(tmp), ns.timed)
                per_unit[c][r] = (b - a) / extra_units
                print(f"  {c:16} {r:16} {per_unit[c][r]:10.0f} instr/{UNITS[c]}", file=sys.stderr)
    header = ["case", *usable]
    rows = []
    for c in cases:
        row = [f"{c} (per {UNITS[c]})"]
        for r in usable:
            value = per_unit[c][r]
            base = RUNTIMES[r][0]
            ratio = value / per_unit[c][base] if base in per_unit[c] else None
            row.append(f"{value / 1000:.1f}k" + (f" {ratio:.2f}x" if ratio else ""))
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    section = "timed section" if ns.timed else "whole child"
    print(
        f"instructions per unit of work (callgrind, {section}), "
        "ratio to stock asyncio on the same loop"
    )
    if ns.json:
        ns.json.write_text(
            json.dumps({"per_unit": per_unit, "scale": ns.scale, "timed": ns.timed}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
