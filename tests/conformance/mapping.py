"""The expected mappings between Trio and asyncbis — the one place where they are encoded.

Both interpreters describe every exception they see by :func:`canonical`, so traces compare
equal exactly when the two runtimes behaved the same up to these documented mappings (see
docs/conformance.md, "Mappings"):

1. ``trio.Cancelled``            <-> ``asyncio.CancelledError``        -> ``"Cancelled"``
2. ``trio.TooSlowError``         <-> ``TimeoutError``                  -> ``"Timeout"``
3. Exception groups. Trio (``strict_exception_groups=True``) puts every exception that left a
   nursery's children and body in a group, ``Cancelled`` included, and lets the cancelled scope
   strip its ``Cancelled`` leaves later. asyncbis never puts a cancellation in a group: a lone
   cancellation leaves the group as a bare ``CancelledError``, and with child failures the
   group holds only those failures (plus the body's own non-cancellation error). Canonically a
   group is ``("group", sorted leaves)`` with ``Cancelled`` leaves dropped, and a group made
   only of cancellations is ``"Cancelled"``. Group nesting is kept. Consequently, when a
   group leaves a cancelled scope, Trio's scope strips its ``Cancelled`` leaves and reports
   ``cancelled_caught == True`` while asyncbis's group carries none (False): the flag is not
   compared for a scope that an exception group leaves (:func:`caught_when_leaving`).
4. ``RuntimeError`` (spawning into a closed group, ``start()`` whose child never called
   ``started()``) -> ``"RuntimeError"``; the messages differ and are not compared.
5. The program's own errors, ``ProgramError(n)`` -> ``"E<n>"``.
6. ``cancel_called`` after a deadline was moved into the past: asyncbis cancels the scope at
   once; Trio only when its run loop next looks at deadlines, so a scope exited before that
   reads ``cancel_called == False`` although its deadline had passed (also when the deadline
   was moved back later before Trio noticed). Trio's value is read as ``cancel_called`` or
   "the deadline was at or before now at some moment while active" (:func:`trio_cancel_called`).

Known core bugs (docs/conformance.md, "Core bugs") are tolerated by the normalisations listed
in :data:`TOLERATED_CORE_BUGS`, each pinned by a strict-xfail regression test, so that the
fuzzer keeps finding *new* divergences. Remove a name once the core is fixed.

Anything else becomes ``"unexpected <type>: <message>"`` and always shows up as a divergence.
"""

from __future__ import annotations

import asyncio
from typing import Union

import trio

Outcome = Union[str, tuple, None]  # noqa: UP007


class ProgramError(Exception):
    """The error a program's ``Raise`` statement raises; ``args[0]`` is the statement id."""


CANCELLED = "Cancelled"

# Names of core bugs, each pinned by a strict xfail in tests/conformance/test_core_bugs.py,
# that the comparison tolerates. The ones found so far, now fixed, and how they were tolerated:
#   "body-error-not-grouped": a group whose body raised (and no child failed) lets the error
#       out bare instead of in an exception group. Tolerated: a one-error group reads as the
#       error itself.
#   "group-cancelled-caught": a group's cancel_scope.cancelled_caught stays False when the group
#       absorbed only its children's cancellations. Tolerated: the field is not compared.
#   "start-cancelled-starter": start() whose caller is cancelled while it waits loses the
#       child's error, leaves the child running and makes started() raise. Tolerated: a
#       divergence in a run where a start() caller got CancelledError is classified as this bug.
#   "group-exit-not-a-cancel-point": a group that still has children when its body ends
#       waits for them and then exits cleanly although its host is cancelled by an outer
#       scope; Trio raises Cancelled there. Tolerated: a divergence in a run where such a
#       group exited cleanly in a cancelled host is classified as this bug.
#   (the five above were fixed in deaff30; this one remains:)
#   "start-cancelled-starter" (again): a start() child that cancels its starter's group and
#       returns without started() — start() raises CancelledError; Trio: RuntimeError.
#   "group-cancelled-caught" (again): the body's own cancellation, caused by a failing child,
#       is not counted: cancelled_caught stays False when only the body was cancelled.
TOLERATED_CORE_BUGS: frozenset[str] = frozenset()
TIMEOUT = "Timeout"


# Intended divergences that the comparison recognises by a run condition (docs/conformance.md):
#   "start-child-placement": before started(), a start() child runs under the caller's cancel
#       scopes in Trio but in the target group in asyncbis (as in AnyIO), so a cancellation
#       reaches it differently (e.g. the caller is shielded, the group is cancelled). A
#       divergence in a run where a child was cancelled before started() is classified so.
#   "eager-deadline": asyncbis cancels a scope the moment its deadline is set at or before
#       "now" (moving a deadline into the past cancels); Trio only when its run loop next checks
#       deadlines, so moving the deadline into the past and back before a checkpoint cancels
#       in asyncbis and not in Trio. Recognised when the Trio run moved a passed, not yet
#       acted-on deadline.
INTENDED_DIVERGENCES: frozenset[str] = frozenset({"start-child-placement", "eager-deadline"})


def canonical(exc: BaseException | None) -> Outcome:
    """The runtime-independent description of an exception (None: no exception)."""
    if exc is None:
        return None
    if isinstance(exc, (trio.Cancelled, asyncio.CancelledError)):
        return CANCELLED
    if isinstance(exc, (trio.TooSlowError, TimeoutError)):
        return TIMEOUT
    if isinstance(exc, ProgramError):
        return f"E{exc.args[0]}"
    if isinstance(exc, BaseExceptionGroup):
        leaves = [canonical(e) for e in exc.exceptions]
        kept = [leaf for leaf in leaves if leaf != CANCELLED]
        if not kept:
            return CANCELLED
        if len(kept) == 1 and "body-error-not-grouped" in TOLERATED_CORE_BUGS:
            return kept[0]
        return ("group", tuple(sorted(kept, key=repr)))
    if isinstance(exc, RuntimeError):
        return "RuntimeError"
    return f"unexpected {type(exc).__name__}: {exc}"


def caught_when_leaving(cancelled_caught: bool, outcome: Outcome) -> bool | None:
    """A scope's ``cancelled_caught`` as compared, given the exception leaving it (mapping 3)."""
    return None if isinstance(outcome, tuple) else cancelled_caught


def catches(kind: str, outcome: Outcome) -> bool:
    """Whether a ``Try`` statement catching ``kind`` handles an exception with this outcome.

    ``except`` clauses are decided on the canonical form, so that a Trio group of only
    ``Cancelled`` is handled like asyncbis's bare ``CancelledError``.
    """
    if kind == "any":
        return True
    if kind == "cancelled":
        return outcome == CANCELLED
    if kind == "error":
        return outcome != CANCELLED
    raise ValueError(kind)


def trio_cancel_called(scope: trio.CancelScope, *, deadline_passed: bool = False) -> bool:
    """Trio's ``cancel_called`` as asyncbis defines it (mapping 6). ``deadline_passed``: the
    deadline was at or before "now" at some moment while the scope was active (it may have
    been moved later again before Trio's run loop noticed)."""
    return scope.cancel_called or deadline_passed or scope.deadline <= trio.current_time()
