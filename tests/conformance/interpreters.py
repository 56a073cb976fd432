"""Two interpreters of the conformance language: one on Trio, one on asyncbis.

Both walk the program the same way (:class:`Interpreter`); they differ only in the primitives
(sleep, checkpoint, scopes, groups, spawn, start, the clock), each written against its own
runtime's public API. Each run returns a :class:`Trace`: per task, the list of
``(virtual_time, event, ...)`` it recorded, and how the program ended.

Events (every one starts with the virtual time):
  ("slept", id) ("checkpoint", id) ("raise", id) ("caught", id, outcome)
  ("scope_exit", id, cancel_called, cancelled_caught, outcome)
  ("group_exit", id, group_scope_cancelled_caught, outcome)
  ("spawned", id) ("started", id) ("start_returned", id, value)
  ("cancel", id) ("shield", id) ("deadline", id) ("task_exit", outcome)
where ``outcome`` is :func:`mapping.canonical` of the exception (None: none).

Cross-task order within one virtual instant is not part of a trace (Trio randomises it on
purpose; asyncio is FIFO): traces are compared per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

import asyncbis

from . import mapping
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
    Stmt,
    Try,
)
from .mapping import (
    Outcome,
    ProgramError,
    canonical,
    catches,
    caught_when_leaving,
    trio_cancel_called,
)
from .virtual_clock import VirtualClockLoop

MAIN = "main"


def task_name(stmt_id: int) -> str:
    return f"t{stmt_id}"


@dataclass
class Trace:
    tasks: dict[str, list[tuple]] = field(default_factory=dict)
    outcome: Outcome = None  # how the whole program ended
    end_time: float = 0.0
    # conditions met during the run that a tolerated core bug needs (mapping.TOLERATED_...)
    conditions: set[str] = field(default_factory=set)

    def record(self, task: str, event: tuple) -> None:
        self.tasks.setdefault(task, []).append(event)

    def comparable(self) -> tuple:
        return (
            tuple(sorted((name, tuple(events)) for name, events in self.tasks.items())),
            self.outcome,
            self.end_time,
        )


class Interpreter:
    """The runtime-independent walk. Subclasses provide the primitives."""

    def before_started(self) -> None:
        """Hook run just before a child calls ``task_status.started()``."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.trace = Trace()
        self.scopes: dict[int, Any] = {}  # scope id -> the live scope object, once entered
        self.groups: dict[int, Any] = {}  # group id -> the group object, once entered
        self.group_scopes: dict[int, Any] = {}

    # -- primitives ------------------------------------------------------------------------
    def now(self) -> float:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    async def checkpoint(self) -> None:
        raise NotImplementedError

    def scope(self, stmt: Scope) -> contextlib.AbstractContextManager:
        """Enter the statement's scope; registers it in ``self.scopes`` and yields it."""
        raise NotImplementedError

    def group(self) -> contextlib.AbstractAsyncContextManager:
        raise NotImplementedError

    def spawn(self, group: Any, stmt: Spawn) -> None:
        raise NotImplementedError

    async def start(self, group: Any, stmt: Start) -> Any:
        raise NotImplementedError

    def group_scope(self, group: Any) -> Any:
        raise NotImplementedError

    def cancel_scope_explicitly(self, scope: Any, scope_id: int) -> None:
        scope.cancel()

    def cancel_called(self, scope: Any) -> bool:
        return scope.cancel_called

    def set_deadline(self, scope_id: int, deadline: float) -> None:
        self.scopes[scope_id].deadline = deadline

    # -- the walk --------------------------------------------------------------------------
    def record(self, task: str, *event: Any) -> None:
        self.trace.record(task, (self.now(), *event))

    async def run_main(self) -> None:
        try:
            await self.block(self.program.body, MAIN)
        except BaseException as exc:
            self.trace.outcome = canonical(exc)
            self.record(MAIN, "task_exit", self.trace.outcome)
        else:
            self.record(MAIN, "task_exit", None)
        self.trace.end_time = self.now()

    async def child(self, name: str, body: Block) -> None:
        try:
            await self.block(body, name)
        except BaseException as exc:
            self.record(name, "task_exit", canonical(exc))
            raise
        self.record(name, "task_exit", None)

    async def started_child(self, stmt: Start, task_status: Any) -> None:
        name = task_name(stmt.id)
        try:
            try:
                await self.block(stmt.before, name)
            except BaseException as exc:
                if canonical(exc) == mapping.CANCELLED:
                    self.trace.conditions.add("start-child-placement")
                raise
            if stmt.calls_started:
                self.record(name, "started", stmt.id)
                self.before_started()
                task_status.started(stmt.id)
                await self.block(stmt.after, name)
            else:
                try:
                    await self.block(stmt.after, name)
                except BaseException as exc:
                    # still not started: the placement decides who cancels it
                    if canonical(exc) == mapping.CANCELLED:
                        self.trace.conditions.add("start-child-placement")
                    raise
        except BaseException as exc:
            self.record(name, "task_exit", canonical(exc))
            raise
        self.record(name, "task_exit", None)

    async def block(self, block: Block, task: str) -> None:
        for stmt in block:
            await self.stmt(stmt, task)

    async def stmt(self, s: Stmt, task: str) -> None:
        if isinstance(s, Sleep):
            await self.sleep(s.seconds)
            self.record(task, "slept", s.id)
        elif isinstance(s, Checkpoint):
            await self.checkpoint()
            self.record(task, "checkpoint", s.id)
        elif isinstance(s, Raise):
            self.record(task, "raise", s.id)
            raise ProgramError(s.id)
        elif isinstance(s, Try):
            await self.try_stmt(s, task)
        elif isinstance(s, Scope):
            await self.scope_stmt(s, task)
        elif isinstance(s, Group):
            await self.group_stmt(s, task)
        elif isinstance(s, Spawn):
            self.spawn(self.groups[s.group], s)
            self.record(task, "spawned", s.id)
        elif isinstance(s, Start):
            value = await self.start(self.groups[s.group], s)
            self.record(task, "start_returned", s.id, value)
        elif isinstance(s, Cancel):
            if s.target in self.scopes:
                self.cancel_scope_explicitly(self.scopes[s.target], s.target)
            elif s.target in self.group_scopes:
                self.cancel_scope_explicitly(self.group_scopes[s.target], s.target)
            self.record(task, "cancel", s.id)
        elif isinstance(s, SetShield):
            if s.target in self.scopes:
                self.scopes[s.target].shield = s.value
            self.record(task, "shield", s.id)
        elif isinstance(s, SetDeadline):
            if s.target in self.scopes:
                self.set_deadline(s.target, math.inf if s.offset is None else self.now() + s.offset)
            self.record(task, "deadline", s.id)
        else:  # pragma: no cover
            raise TypeError(s)

    async def try_stmt(self, s: Try, task: str) -> None:
        try:
            await self.block(s.body, task)
        except BaseException as exc:
            outcome = canonical(exc)
            if not catches(s.catches, outcome):
                raise
            self.record(task, "caught", s.id, outcome)
            await self.block(s.handler, task)
            if s.reraise:
                raise

    async def scope_stmt(self, s: Scope, task: str) -> None:
        scope = None
        try:
            with self.scope(s) as scope:
                await self.block(s.body, task)
        except BaseException as exc:
            if scope is None:
                raise
            outcome = canonical(exc)
            caught = caught_when_leaving(scope.cancelled_caught, outcome)
            self.record(task, "scope_exit", s.id, self.cancel_called(scope), caught, outcome)
            raise
        self.record(
            task, "scope_exit", s.id, self.cancel_called(scope), scope.cancelled_caught, None
        )

    async def group_stmt(self, s: Group, task: str) -> None:
        group_scope = None
        try:
            async with self.group() as group:
                self.groups[s.id] = group
                group_scope = self.group_scopes[s.id] = self.group_scope(group)
                await self.block(s.body, task)
        except BaseException as exc:
            if group_scope is None:
                raise
            self.record(task, "group_exit", s.id, self.group_caught(group_scope), canonical(exc))
            raise
        self.after_clean_group_exit(s.id)
        self.record(task, "group_exit", s.id, self.group_caught(group_scope), None)

    def after_clean_group_exit(self, group_id: int) -> None:
        """Hook: the group ``group_id`` exited without an exception."""

    def group_caught(self, group_scope: Any) -> bool | None:
        if "group-cancelled-caught" in mapping.TOLERATED_CORE_BUGS:
            return None
        return group_scope.cancelled_caught


# -- Trio ----------------------------------------------------------------------------------


class TrioInterpreter(Interpreter):
    """Trio with ``MockClock(autojump_threshold=0)`` (virtual time that jumps when idle).

    ``fail`` scopes follow the AnyIO/asyncbis rule (TooSlowError only when the scope's own
    deadline expired), not ``trio.fail_at``'s (any caught cancellation): see
    docs/conformance.md, intended divergences.
    """

    def __init__(self, program: Program) -> None:
        super().__init__(program)
        # The asyncbis notion of "the scope's own deadline expired" (its deadline_expired):
        # the deadline passed while the scope was active and before any explicit cancel().
        self.explicitly_cancelled: set[int] = set()
        self.deadline_expired: set[int] = set()
        # scopes whose deadline was at or before "now" at some point while active (mapping 6)
        self.deadline_passed: set[int] = set()

    def note_deadline(self, scope_id: int) -> None:
        scope = self.scopes.get(scope_id)
        if scope is None or scope.deadline > trio.current_time():
            return
        self.deadline_passed.add(scope_id)
        if scope_id not in self.explicitly_cancelled:
            self.deadline_expired.add(scope_id)

    def now(self) -> float:
        return trio.current_time()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()

    def before_started(self) -> None:
        # A deadline moved into the past that Trio has not acted on yet decides whether the
        # starter counts as cancelled at started() (asyncbis: it does, at once).
        now = trio.current_time()
        if any(s.deadline <= now and not s.cancel_called for s in self.scopes.values()):
            self.trace.conditions.add("eager-deadline")

    def cancel_called(self, scope: Any) -> bool:
        passed = any(self.scopes.get(i) is scope for i in self.deadline_passed)
        return trio_cancel_called(scope, deadline_passed=passed)

    def cancel_scope_explicitly(self, scope: Any, scope_id: int) -> None:
        self.note_deadline(scope_id)
        self.explicitly_cancelled.add(scope_id)
        scope.cancel()

    def set_deadline(self, scope_id: int, deadline: float) -> None:
        scope = self.scopes[scope_id]
        if scope.deadline <= trio.current_time() and not scope.cancel_called:
            # Trio has not acted on the passed deadline yet; asyncbis cancelled at once
            self.trace.conditions.add("eager-deadline")
        self.note_deadline(scope_id)
        super().set_deadline(scope_id, deadline)

    @contextlib.contextmanager
    def scope(self, stmt: Scope) -> Iterator[Any]:
        deadline = math.inf if stmt.offset is None else trio.current_time() + stmt.offset
        scope = trio.CancelScope(deadline=deadline, shield=stmt.shield)
        with scope:
            self.scopes[stmt.id] = scope
            try:
                yield scope
            finally:
                self.note_deadline(stmt.id)
        if stmt.fail and scope.cancelled_caught and stmt.id in self.deadline_expired:
            raise trio.TooSlowError

    def group(self) -> contextlib.AbstractAsyncContextManager:
        return trio.open_nursery()

    def group_scope(self, group: Any) -> Any:
        return group.cancel_scope

    def spawn(self, group: Any, stmt: Spawn) -> None:
        group.start_soon(self.child, task_name(stmt.id), stmt.body)

    async def start(self, group: Any, stmt: Start) -> Any:
        return await group.start(self.started_child, stmt)


class _SchedulingOrder:
    """Stands in for Trio's scheduler randomness (``trio._core._run._r``) to pick an order."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.rng = random.Random(mode)

    def random(self) -> float:  # Trio's default path: reverse the batch if < 0.5
        if self.mode == "forward":
            return 0.0
        if self.mode == "backward":
            return 1.0
        return self.rng.random()

    def shuffle(self, batch: list) -> None:  # the path Trio takes once Hypothesis is imported
        if self.mode == "forward":
            batch.reverse()  # Trio pops from the end
        elif self.mode != "backward":
            self.rng.shuffle(batch)

    def uniform(self, a: float, b: float) -> float:
        return self.rng.uniform(a, b)


TRIO_ORDERS = ("forward", "backward", "shuffle-1", "shuffle-2")


@contextlib.contextmanager
def _trio_scheduling(mode: str) -> Iterator[None]:
    run_module = trio._core._run
    saved = run_module._r
    run_module._r = _SchedulingOrder(mode)
    try:
        yield
    finally:
        run_module._r = saved


def run_on_trio(program: Program, order: str = "forward") -> Trace:
    interpreter = TrioInterpreter(program)
    with _trio_scheduling(order):
        trio.run(
            interpreter.run_main,
            clock=trio.testing.MockClock(autojump_threshold=0),
            strict_exception_groups=True,
        )
    return interpreter.trace


# -- asyncbis ------------------------------------------------------------------------------


class AsyncbisInterpreter(Interpreter):
    """asyncbis on :class:`VirtualClockLoop`."""

    def __init__(self, program: Program) -> None:
        super().__init__(program)
        self.groups_with_children: set[int] = set()

    def after_clean_group_exit(self, group_id: int) -> None:
        core = asyncbis._core.current_task_core()
        if group_id in self.groups_with_children and core is not None:
            if core.effectively_cancelled:
                self.trace.conditions.add("group-exit-not-a-cancel-point")

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def checkpoint(self) -> None:
        await asyncbis.checkpoint()

    @contextlib.contextmanager
    def scope(self, stmt: Scope) -> Iterator[Any]:
        deadline = math.inf if stmt.offset is None else self.now() + stmt.offset
        make = asyncbis.fail_at if stmt.fail else asyncbis.move_on_at
        with make(deadline, shield=stmt.shield) as scope:
            self.scopes[stmt.id] = scope
            yield scope

    def group(self) -> contextlib.AbstractAsyncContextManager:
        return asyncbis.TaskGroup()

    def group_scope(self, group: Any) -> Any:
        return group.cancel_scope

    def spawn(self, group: Any, stmt: Spawn) -> None:
        group.create_task(self.child(task_name(stmt.id), stmt.body))
        self.groups_with_children.add(stmt.group)

    async def start(self, group: Any, stmt: Start) -> Any:
        self.groups_with_children.add(stmt.group)
        try:
            return await group.start(self.started_child, stmt)
        except asyncio.CancelledError:
            self.trace.conditions.add("start-cancelled-starter")
            raise


def run_on_asyncbis(program: Program, shuffle_seed: int | None = None) -> Trace:
    """Run on asyncbis; ``shuffle_seed``: run same-moment callbacks in a seeded random order."""
    interpreter = AsyncbisInterpreter(program)
    asyncbis.run(
        interpreter.run_main(),
        loop_factory=functools.partial(VirtualClockLoop, shuffle_seed=shuffle_seed),
    )
    return interpreter.trace
