"""What the runtime fuzzer found, each as a minimal regression test.

A finding whose fix belongs to another piece of work is a strict xfail naming it (and an entry
in runtime.KNOWN_DEFECTS, so the fuzzer keeps looking past it); when the fix lands the xfail
starts to pass, fails as XPASS, and both the marker and the entry are removed.
"""

from __future__ import annotations

import pytest

import asyncbis

from .runtime import AsyncGen, Raise, number, run_program

DEFECT_1 = (
    "issue 13 defect 1 (being fixed with it): an async generator left while it holds a scope "
    "is closed later by the loop's finalizer in another task, and the run fails at the root "
    "group's exit with 'cancel scopes must be exited in the reverse order'"
)


@pytest.mark.xfail(strict=True, raises=(RuntimeError, BaseExceptionGroup), reason=DEFECT_1)
def test_break_out_of_an_async_generator_holding_a_scope():
    async def numbers():
        with asyncbis.CancelScope():
            yield 1
            yield 2

    async def main():
        seen = []
        async for n in numbers():
            seen.append(n)
            break
        return seen

    assert asyncbis.run(main()) == [1]


@pytest.mark.xfail(strict=True, raises=(RuntimeError, BaseExceptionGroup), reason=DEFECT_1)
def test_error_out_of_an_async_for_over_a_generator_holding_a_scope():
    async def numbers():
        with asyncbis.CancelScope():
            yield 1

    async def main():
        async for _ in numbers():
            raise KeyError("consumer")

    with pytest.raises(KeyError, match="consumer"):
        asyncbis.run(main())


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=DEFECT_1)
def test_fuzzer_program_with_a_generator_left_in_its_scope_keeps_the_invariants():
    for kind in ("cancel", "move_on", "fail", "timeout"):
        program = number((AsyncGen(kind, None, 1, None, (Raise(),)),))
        outcome = run_program(program)
        assert outcome.problems == [], outcome.report()
