"""Run one program on both runtimes and compare the traces.

Trio is the reference. It runs the program under several scheduling orders (Trio shuffles
the tasks that are runnable at the same moment); if those runs disagree, the program's result
depends on scheduling order and it says nothing about conformance: it is *schedule-dependent*
and the caller discards it. Otherwise asyncbis must produce the same trace.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from . import mapping
from .interpreters import TRIO_ORDERS, Trace, run_on_asyncbis, run_on_trio
from .language import Program, render
from .mapping import canonical

SAME = "same"
SCHEDULE_DEPENDENT = "schedule-dependent"
DIVERGENT = "divergent"
KNOWN_BUG = "known core bug"
INTENDED = "intended divergence"

ASYNCBIS_SHUFFLES = 8


@dataclass
class Verdict:
    kind: str
    program: Program
    trio: Trace
    asyncbis: Trace | None = None
    trio_alternative: Trace | None = None  # for schedule-dependent programs

    def report(self) -> str:
        lines = ["program:", render(self.program), ""]
        if self.kind in (DIVERGENT, KNOWN_BUG, INTENDED):
            assert self.asyncbis is not None
            lines.append("first divergence: " + first_divergence(self.trio, self.asyncbis))
            lines += ["", "trio:", format_trace(self.trio), "", "asyncbis:"]
            lines.append(format_trace(self.asyncbis))
        elif self.kind == SCHEDULE_DEPENDENT:
            assert self.trio_alternative is not None
            lines.append(
                "Trio orders disagree: " + first_divergence(self.trio, self.trio_alternative)
            )
        return "\n".join(lines)


def _guarded(run, *args) -> Trace:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return run(*args)
    except BaseException as exc:  # the runtime itself failed: that is a result too
        trace = Trace()
        trace.outcome = f"runner raised {canonical(exc)!r}"
        return trace


def compare(program: Program) -> Verdict:
    reference = _guarded(run_on_trio, program, TRIO_ORDERS[0])
    for order in TRIO_ORDERS[1:]:
        other = _guarded(run_on_trio, program, order)
        if other.comparable() != reference.comparable():
            return Verdict(SCHEDULE_DEPENDENT, program, reference, trio_alternative=other)
    ours = _guarded(run_on_asyncbis, program)
    if ours.comparable() == reference.comparable():
        return Verdict(SAME, program, reference, asyncbis=ours)
    # asyncio's FIFO order is one legitimate schedule among many, and the two runtimes take
    # different numbers of scheduling hops for the same operation (a done-callback, a
    # wake-up). The program conforms if asyncbis produces Trio's trace under some order.
    for seed in range(ASYNCBIS_SHUFFLES):
        if _guarded(run_on_asyncbis, program, seed).comparable() == reference.comparable():
            return Verdict(SAME, program, reference, asyncbis=ours)
    conditions = ours.conditions | reference.conditions
    if conditions & mapping.TOLERATED_CORE_BUGS:
        return Verdict(KNOWN_BUG, program, reference, asyncbis=ours)
    if conditions & mapping.INTENDED_DIVERGENCES:
        return Verdict(INTENDED, program, reference, asyncbis=ours)
    return Verdict(DIVERGENT, program, reference, asyncbis=ours)


def first_divergence(expected: Trace, actual: Trace) -> str:
    for task in sorted(set(expected.tasks) | set(actual.tasks)):
        want, got = expected.tasks.get(task, []), actual.tasks.get(task, [])
        for i in range(max(len(want), len(got))):
            w = want[i] if i < len(want) else "(nothing)"
            g = got[i] if i < len(got) else "(nothing)"
            if w != g:
                return f"task {task}, event {i}: trio {w!r} vs asyncbis {g!r}"
    if expected.outcome != actual.outcome:
        return f"program outcome: trio {expected.outcome!r} vs asyncbis {actual.outcome!r}"
    return f"end time: trio {expected.end_time!r} vs asyncbis {actual.end_time!r}"


def format_trace(trace: Trace) -> str:
    lines = []
    for task in sorted(trace.tasks):
        lines.append(f"  {task}:")
        lines += [f"    {event!r}" for event in trace.tasks[task]]
    lines.append(f"  outcome: {trace.outcome!r} at t={trace.end_time!r}")
    return "\n".join(lines)
