"""Hypothesis strategies for random well-formed programs of bounded size."""

from __future__ import annotations

import functools

from hypothesis import strategies as st

from .language import (
    Block,
    Cancel,
    Checkpoint,
    Group,
    Program,
    Raise,
    Scope,
    SetDeadline,
    SetShield,
    Sleep,
    Spawn,
    Start,
    Try,
    number,
)

MAX_DEPTH = 3
MAX_BLOCK = 4

whole_seconds = st.integers(min_value=0, max_value=4)
# None: no deadline; -1: already past at entry; else whole seconds (+ a distinct fraction)
deadline_seconds = st.one_of(st.none(), st.just(-1), st.integers(min_value=0, max_value=5))
target_index = st.integers(min_value=0, max_value=7)


SIMPLE = st.one_of(
    st.builds(Sleep, whole_seconds),
    st.builds(Checkpoint),
    st.builds(Raise),
    st.builds(Cancel, target_index),
    st.builds(SetShield, target_index, st.booleans()),
    st.builds(SetDeadline, target_index, deadline_seconds),
)


@functools.cache
def statement(depth: int, groups: int) -> st.SearchStrategy:
    """One statement, at nesting ``depth``, with ``groups`` lexically enclosing groups."""
    if depth >= MAX_DEPTH:
        return SIMPLE
    inner = st.deferred(lambda: block(depth + 1, groups))
    maybe_empty = st.deferred(lambda: block(depth + 1, groups, min_size=0))
    compound = [
        st.builds(
            Try, inner, st.sampled_from(["cancelled", "error", "any"]), maybe_empty, st.booleans()
        ),
        st.builds(Scope, inner, deadline_seconds, st.booleans(), st.booleans()),
        st.builds(Group, st.deferred(lambda: block(depth + 1, groups + 1))),
    ]
    if groups:
        group_depth = st.integers(min_value=0, max_value=groups - 1)
        compound += [
            st.builds(Spawn, group_depth, inner),
            st.builds(Start, group_depth, maybe_empty, maybe_empty, st.booleans()),
        ]
    # Simple statements first, so that Hypothesis shrinks towards them.
    return st.one_of(SIMPLE, *compound)


@functools.cache
def block(depth: int, groups: int, min_size: int = 1) -> st.SearchStrategy[Block]:
    return st.lists(statement(depth, groups), min_size=min_size, max_size=MAX_BLOCK).map(tuple)


def programs() -> st.SearchStrategy[Program]:
    """Random programs: a main body of nested scopes, groups, tasks, sleeps and cancels."""
    return block(0, 0).map(number)
