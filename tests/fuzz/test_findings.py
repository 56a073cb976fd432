"""What the runtime fuzzer found, each as a minimal regression test.

Found first: issue 13 defect 1 (an async generator left while it holds a scope failed the run
at the root group's exit), fixed by 977a95d while the fuzzer was being written; its three
tests below were strict xfails until then.

A finding whose fix belongs to another piece of work is a strict xfail naming it (and an entry
in runtime.KNOWN_DEFECTS, so the fuzzer keeps looking past it); when the fix lands the xfail
starts to pass, fails as XPASS, and both the marker and the entry are removed.
"""

from __future__ import annotations

import pytest

import asyncbis

from .runtime import AsyncGen, Raise, number, run_program


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


def test_error_out_of_an_async_for_over_a_generator_holding_a_scope():
    async def numbers():
        with asyncbis.CancelScope():
            yield 1

    async def main():
        async for _ in numbers():
            raise KeyError("consumer")

    with pytest.raises(KeyError, match="consumer"):
        asyncbis.run(main())


def test_fuzzer_program_with_a_generator_left_in_its_scope_keeps_the_invariants():
    for kind in ("cancel", "move_on", "fail", "timeout"):
        program = number((AsyncGen(kind, None, 1, None, (Raise(),)),))
        outcome = run_program(program)
        assert outcome.problems == [], outcome.report()


@pytest.mark.parametrize("how", ["expired", "cancelled"])
def test_consumer_that_left_a_generator_is_not_cancelled_by_its_scope(how):
    """Was a strict xfail: the generator's scope, cancelled, cancelled its consumer after the
    consumer left it, until the finalizer's aclose() task ran (fixed: the loop's finalizer
    hook, called when the generator is let go of, splices its scopes out at once)."""

    async def numbers():
        with asyncbis.move_on_after(0 if how == "expired" else 60) as scope:
            yield scope
            yield scope

    async def main():
        async for scope in numbers():
            scope.cancel()
            break
        await asyncbis.sleep(0)
        return "done"

    assert asyncbis.run(main()) == "done"
