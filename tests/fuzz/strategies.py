"""Hypothesis strategies for the runtime fuzzer's programs (tests/fuzz/runtime.py)."""

from __future__ import annotations

import functools
import sys

from hypothesis import strategies as st

from .runtime import (
    AsyncGen,
    Block,
    Cancel,
    CancelTask,
    Checkpoint,
    Group,
    Program,
    Raise,
    Scope,
    Shield,
    Sleep,
    Spawn,
    Start,
    ThreadSpawn,
    Try,
    number,
)

MAX_DEPTH = 3
MAX_BLOCK = 4

seconds = st.integers(min_value=0, max_value=3)
deadlines = st.one_of(st.none(), st.just(-1), st.integers(min_value=0, max_value=4))
scope_kinds = st.sampled_from(["cancel", "move_on", "fail", "timeout"])
target = st.integers(min_value=0, max_value=7)

SIMPLE = st.one_of(
    st.builds(Sleep, seconds),
    st.builds(Checkpoint),
    st.builds(Raise),
    st.builds(Cancel, target),
    st.builds(CancelTask, target),
)


@functools.cache
def statement(depth: int, groups: int) -> st.SearchStrategy:
    if depth >= MAX_DEPTH:
        return SIMPLE
    inner = st.deferred(lambda: block(depth + 1, groups))
    maybe_empty = st.deferred(lambda: block(depth + 1, groups, min_size=0))
    compound = [
        st.builds(
            Try,
            inner,
            st.sampled_from(["error", "timeout", "cancelled"]),
            maybe_empty,
            st.booleans(),
        ),
        st.builds(Scope, inner, scope_kinds, deadlines, st.booleans()),
        st.builds(Group, st.deferred(lambda: block(depth + 1, groups + 1))),
        st.builds(Shield, inner),
        st.builds(
            AsyncGen,
            scope_kinds,
            deadlines,
            st.integers(min_value=0, max_value=3),
            st.one_of(st.none(), st.integers(min_value=1, max_value=2)),
            maybe_empty,
        ),
    ]
    if groups:
        group_depth = st.integers(min_value=0, max_value=groups - 1)
        compound += [
            st.builds(Spawn, group_depth, inner),
            st.builds(ThreadSpawn, group_depth, inner),
            st.builds(Start, group_depth, maybe_empty, maybe_empty, st.booleans()),
        ]
    return st.one_of(SIMPLE, *compound)


@functools.cache
def block(depth: int, groups: int, min_size: int = 1) -> st.SearchStrategy[Block]:
    return st.lists(statement(depth, groups), min_size=min_size, max_size=MAX_BLOCK).map(tuple)


def programs() -> st.SearchStrategy[Program]:
    """Random programs; the eager task factory only where it exists (3.12+)."""
    eager = st.booleans() if sys.version_info >= (3, 12) else st.just(False)
    return st.builds(number, block(0, 0), eager)
