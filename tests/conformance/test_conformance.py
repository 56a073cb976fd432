"""Differential test: random programs behave the same on asyncbis as on Trio.

CI profile: ``CONFORMANCE_EXAMPLES`` programs (default 500), derandomized so every CI run
checks the same programs. The long profile (scripts/conformance.sh) runs this test with
10,000+ programs and a random seed. A failure prints the minimal (shrunk) program, its first
divergence and both traces.
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, given, reject, settings

from .compare import DIVERGENT, SCHEDULE_DEPENDENT, compare
from .language import Program
from .strategies import programs

EXAMPLES = int(os.environ.get("CONFORMANCE_EXAMPLES", "500"))
LONG_PROFILE = os.environ.get("CONFORMANCE_LONG") == "1"

verdicts: Counter[str] = Counter()


@settings(
    max_examples=EXAMPLES,
    derandomize=not LONG_PROFILE,
    deadline=None,
    database=None,
    print_blob=LONG_PROFILE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(programs())
def test_random_programs_behave_as_on_trio(program: Program) -> None:
    verdict = compare(program)
    verdicts[verdict.kind] += 1
    if verdict.kind == SCHEDULE_DEPENDENT:
        reject()  # its outcome depends on the order Trio happened to pick: no reference
    assert verdict.kind != DIVERGENT, verdict.report()


def test_the_profile_compared_programs() -> None:
    """Guard against a strategy or a filter that silently stops producing usable programs."""
    if not verdicts:  # run alone, e.g. with -k
        return
    compared = sum(n for kind, n in verdicts.items() if kind != SCHEDULE_DEPENDENT)
    print(f"conformance verdicts: {dict(verdicts)}")
    assert compared >= 0.8 * sum(verdicts.values())
