"""Adversarial API-use programs for the runtime fuzzer, their interpreter and its invariants.

A program is the body of the main task (a tuple of statements) plus one run-level choice, the
eager task factory. Statements: sleeps and checkpoints, ``Raise`` (a ``ProgramError`` carrying
the statement id), ``Try`` (``except*`` ProgramError or TimeoutError, or ``except
CancelledError``, optionally re-raising), ``Scope`` (``CancelScope``, ``move_on_after``,
``fail_after`` or ``async with asyncbis.timeout``, with a deadline that may already have
passed, optionally shielded), ``Group``, ``Spawn`` and ``ThreadSpawn`` (into an enclosing
group, which may have exited by then; the latter from a worker thread through
``loop.call_soon_threadsafe``), ``Start`` (``await tg.start()`` with ``task_status.started()``
called or not), ``Cancel`` (any scope or group of the program: maybe not entered yet, maybe
exited, maybe in another task), ``CancelTask`` (``Task.cancel()`` on a spawned task),
``Shield`` (``await asyncbis.shield(coro)``) and ``AsyncGen`` (an async generator that holds a
scope across its ``yield``; the consumer may leave it with ``break``, so the loop's finalizer
closes it later, in another task).

The statements it shares with the conformance language (tests/conformance/language.py: Sleep,
Checkpoint, Raise, Try, Group, Spawn, Start, Cancel) are that language's, as are the numbering
and the listing, which this module extends with its own statements.

The interpreter runs a program with ``asyncbis.run()`` on a virtual clock (sleeps take no
real time) and checks, whatever the program does:

- **no hang**: the loop runs at most ``MAX_LOOP_ITERATIONS`` iterations, and never waits with
  nothing scheduled (``VirtualClockDeadlock``);
- **no crash**: ``run()`` returns, or raises only what the program raised (ProgramError,
  TimeoutError from a fail scope, in exception groups) or a documented usage error (spawning
  into an exited group, a ``start()`` child that never called ``started()``);
- **no exception lost**: every ProgramError raised was caught by a ``Try`` or left ``run()``
  (directly, in a group, or as the ``__context__`` of what left);
- **no leak**: the scope tree has as many nodes and tasks as before the run, no asyncbis task
  is left pending, and neither the loop's exception handler nor ``sys.unraisablehook`` was
  called ("Task exception was never retrieved", "Task was destroyed but it is pending!",
  errors in callbacks).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from conformance import language
from conformance.language import (
    Cancel,
    Checkpoint,
    Group,
    Raise,
    Sleep,  # whole seconds only: this numbering adds no fractions (timers may coincide)
    Spawn,
    Start,
    Statement,
    Try,
)
from conformance.virtual_clock import VirtualClockDeadlock, VirtualClockLoop

import asyncbis

MAX_LOOP_ITERATIONS = 20_000

ScopeKind = Literal["cancel", "move_on", "fail", "timeout"]
Catches = Literal["error", "timeout", "cancelled"]  # the words of Try.catches here


class ProgramError(Exception):
    """Raised by a ``Raise`` statement; ``args[0]`` is the statement id."""


class Hang(RuntimeError):
    """The program ran more loop iterations than any terminating program of its size needs."""


# -- the language: the conformance language's statements, and these -----------------------


@dataclass(frozen=True)
class Scope(Statement):
    blocks = ("body",)
    body: Block
    kind: ScopeKind
    deadline: int | None  # seconds from entry; None: none; -1: already past
    shield: bool
    id: int = 0


@dataclass(frozen=True)
class ThreadSpawn(Spawn):
    """A Spawn made from a worker thread (``loop.call_soon_threadsafe``)."""


@dataclass(frozen=True)
class CancelTask(Statement):
    target_index: int
    id: int = 0
    target: int = 0


@dataclass(frozen=True)
class Shield(Statement):
    blocks = ("body",)
    body: Block
    id: int = 0


@dataclass(frozen=True)
class AsyncGen(Statement):
    """``async for`` over a generator that enters a scope and yields ``items`` times in it;
    the consumer runs ``body`` per item and breaks after ``break_after`` items (None: never)."""

    blocks = ("body",)
    kind: ScopeKind
    deadline: int | None
    items: int
    break_after: int | None
    body: Block
    id: int = 0


Stmt = Union[  # noqa: UP007  (a runtime alias)
    Sleep,
    Checkpoint,
    Raise,
    Try,
    Scope,
    Group,
    Spawn,
    ThreadSpawn,
    Start,
    Cancel,
    CancelTask,
    Shield,
    AsyncGen,
]
Block = tuple[Stmt, ...]


@dataclass(frozen=True)
class Program(language.Program):
    eager: bool = False


class _Numbering(language.Numbering):
    """Spawn targets are the lexically enclosing groups, Cancel targets any scope or group,
    CancelTask targets any spawned task; no timer fractions."""

    def fraction(self) -> float:
        return 0.0

    def is_scope(self, s: Statement) -> bool:
        return isinstance(s, (Scope, AsyncGen))

    def target(self, s: Statement) -> int | None:
        if isinstance(s, CancelTask):
            return self.spawn_ids[s.target_index % len(self.spawn_ids)] if self.spawn_ids else None
        return super().target(s)


def number(body: Block, eager: bool = False) -> Program:
    """Assign ids in pre-order, resolve spawn targets (lexically enclosing groups) and
    cancel targets (any scope or group; any spawned task)."""
    return Program(**_Numbering().program(body), eager=eager)


class _Listing(language.Listing):
    def text(self) -> str:
        return f"# eager task factory: {self.program.eager}\n" + super().text()

    def except_clause(self, catches: str) -> str:
        return {
            "error": "except* ProgramError",
            "timeout": "except* TimeoutError",
            "cancelled": "except CancelledError",
        }[catches]

    def stmt(self, s: Statement, pad: str, depth: int) -> None:
        tag = f"  # [{s.id}]"
        add = self.lines.append
        if isinstance(s, Scope):
            add(f"{pad}{_scope_text(s.kind, s.deadline, s.shield)} as s{s.id}:")
            self.block(s.body, depth + 1)
        elif isinstance(s, ThreadSpawn):
            add(f"{pad}async def child{s.id}():")
            self.block(s.body, depth + 1)
            add(
                f"{pad}in_thread(loop.call_soon_threadsafe, "
                f"g{s.group}.create_task, child{s.id}())  # t{s.id}"
            )
        elif isinstance(s, CancelTask):
            add(f"{pad}t{s.target}.cancel(){tag}")
        elif isinstance(s, Shield):
            add(f"{pad}async def shielded{s.id}():")
            self.block(s.body, depth + 1)
            add(f"{pad}await shield(shielded{s.id}()){tag}")
        elif isinstance(s, AsyncGen):
            add(f"{pad}async def agen{s.id}():")
            add(f"{pad}    {_scope_text(s.kind, s.deadline, False)} as s{s.id}:")
            add(f"{pad}        for i in range({s.items}):")
            add(f"{pad}            yield i")
            add(f"{pad}async for i in agen{s.id}():")
            self.block(s.body, depth + 1)
            if s.break_after is not None:
                add(f"{pad}    if i + 1 >= {s.break_after}: break")
        else:
            super().stmt(s, pad, depth)


def render(program: Program) -> str:
    """The program as (pseudo-)Python, for failure reports."""
    return _Listing(program).text()


def _scope_text(kind: ScopeKind, deadline: int | None, shield: bool) -> str:
    d = "inf" if deadline is None else str(deadline)
    if kind == "cancel":
        return f"with CancelScope(deadline=now+{d}, shield={shield})"
    if kind == "move_on":
        return f"with move_on_after({d}, shield={shield})"
    if kind == "fail":
        return f"with fail_after({d}, shield={shield})"
    return f"async with timeout({d})"


# -- the interpreter ------------------------------------------------------------------------


class FuzzLoop(VirtualClockLoop):
    """The virtual-clock loop, bounded in iterations, recording exception-handler calls."""

    def __init__(self) -> None:
        super().__init__()
        self.iterations = 0
        self.handler_calls: list[dict[str, Any]] = []

    def _run_once(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise Hang(f"more than {MAX_LOOP_ITERATIONS} loop iterations")
        super()._run_once()

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.handler_calls.append(context)


def _leaves(exc: BaseException | None, seen: set[int] | None = None) -> list[BaseException]:
    """Every exception reachable from ``exc``: group members, causes and contexts."""
    seen = set() if seen is None else seen
    out: list[BaseException] = []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        if isinstance(exc, BaseExceptionGroup):
            for e in exc.exceptions:
                out += _leaves(e, seen)
        if exc.__cause__ is not None:
            out += _leaves(exc.__cause__, seen)
        exc = exc.__context__
    return out


# Known defects, fixed elsewhere and pinned by strict xfail tests in tests/fuzz/test_findings.py:
# a run that meets the condition and shows the signature is "known", not a new finding (so the
# fuzzer keeps looking for new ones). Remove an entry when its fix lands (the xfail then fails).
KNOWN_DEFECTS: dict[str, str] = {}

# Documented outcomes that look like failures (docs/architecture.md, "Scopes held by
# generators across yield"): while a generator is suspended inside its scope, that scope
# applies to the consumer's code too (as stock asyncio.timeout and Trio), so its cancellation
# (a Cancel, or its deadline) can reach the consumer, leave the `async for` as CancelledError
# (the generator's scope, which would catch it, is not on the way out) and end the run.
CONSUMER_UNDER_GENERATOR_SCOPE = "consumer-ran-under-generator-scope"


def _members(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and, for a group, its members (recursively): what was raised, not contexts."""
    if exc is None:
        return []
    out = [exc]
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            out += _members(e)
    return out


ALLOWED_RUNTIME_ERRORS = (
    "this TaskGroup has exited; no new tasks can be spawned into it",
    "the task exited without calling task_status.started()",
    "the task was cancelled before calling task_status.started()",
)


@dataclass
class Outcome:
    program: Program
    result: BaseException | None = None  # what run() raised (None: it returned)
    raised: set[int] = field(default_factory=set)
    caught: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    iterations: int = 0
    conditions: set[str] = field(default_factory=set)
    known: str | None = None  # the known defect this run hit (its problems are not findings)

    def report(self) -> str:
        import traceback

        text = [render(self.program), "", "problems:"]
        text += [f"  - {p}" for p in self.problems]
        if self.result is not None:
            text.append("run() raised:")
            text.append("".join(traceback.format_exception(self.result))[-6000:])
        return "\n".join(text)


class Interpreter:
    def __init__(self, program: Program) -> None:
        self.program = program
        self.outcome = Outcome(program)
        self.scopes: dict[int, Any] = {}  # made up front, entered by their statement
        self.groups: dict[int, asyncbis.TaskGroup] = {}
        self.tasks: dict[int, asyncio.Future] = {}
        self.entered: set[int] = set()  # "cancel" Scope statements whose scope was entered
        self.active_timeouts: dict[int, Any] = {}  # asyncbis.timeout() objects, while entered
        self.spawn_errors: list[BaseException] = []

    # -- statements

    async def block(self, block: Block) -> None:
        for s in block:
            await self.stmt(s)

    async def stmt(self, s: Stmt) -> None:
        if isinstance(s, Sleep):
            await asyncbis.sleep(s.seconds)
        elif isinstance(s, Checkpoint):
            await asyncbis.checkpoint()
        elif isinstance(s, Raise):
            self.outcome.raised.add(s.id)
            raise ProgramError(s.id)
        elif isinstance(s, Try):
            await self.try_stmt(s)
        elif isinstance(s, Scope):
            await self.scope_stmt(s)
        elif isinstance(s, Group):
            async with asyncbis.TaskGroup() as tg:
                self.groups[s.id] = tg
                await self.block(s.body)
        elif isinstance(s, ThreadSpawn):  # before Spawn: a ThreadSpawn is one
            self.thread_spawn(s)
        elif isinstance(s, Spawn):
            tg = self.groups[s.group]
            self.tasks[s.id] = tg.create_task(self.block(s.body))
        elif isinstance(s, Start):
            await self.groups[s.group].start(self.started_child, s)
        elif isinstance(s, Cancel):
            if s.target in self.groups:
                self.groups[s.target].cancel()
            elif s.target in self.active_timeouts:
                # asyncio's Timeout API has no cancel(): expire it now instead
                timeout = self.active_timeouts[s.target]
                try:
                    timeout.reschedule(asyncio.get_running_loop().time())
                except RuntimeError as e:
                    # Stock's contract: an expiring, expired or finished Timeout (e.g. one in a
                    # generator the consumer let go of) refuses to be rescheduled.
                    if not str(e).startswith("Cannot change state of "):
                        raise
            elif s.target in self.scopes and hasattr(self.scopes[s.target], "cancel"):
                self.scopes[s.target].cancel()
        elif isinstance(s, CancelTask):
            task = self.tasks.get(s.target)
            if task is not None:
                task.cancel()
        elif isinstance(s, Shield):
            await asyncbis.shield(self.block(s.body))
        elif isinstance(s, AsyncGen):
            await self.agen_stmt(s)
        else:  # pragma: no cover
            raise TypeError(s)

    async def try_stmt(self, s: Try) -> None:
        if s.catches == "cancelled":
            try:
                await self.block(s.body)
            except asyncio.CancelledError:
                await self.block(s.handler)
                if s.reraise:
                    raise
            return
        kind: type[Exception] = ProgramError if s.catches == "error" else TimeoutError
        try:
            await self.block(s.body)
        except* kind as group:
            for leaf in _leaves(group):
                if isinstance(leaf, ProgramError):
                    self.outcome.caught.add(leaf.args[0])
            await self.block(s.handler)
            if s.reraise:
                raise

    def _scope_cm(self, kind: ScopeKind, deadline: int | None, shield: bool) -> Any:
        """The *_at forms: a deadline of -1 s is one that has already passed."""
        when = float("inf") if deadline is None else asyncio.get_running_loop().time() + deadline
        if kind == "timeout":
            return asyncbis.timeout_at(None if deadline is None else when)
        if kind == "fail":
            return asyncbis.fail_at(when, shield=shield)
        return asyncbis.move_on_at(when, shield=shield)

    async def scope_stmt(self, s: Scope) -> None:
        if s.kind == "cancel":
            scope = self.scopes[s.id]
            if s.id in self.entered:
                # Run again (a body of an `async for`): a CancelScope is entered only once.
                scope = self.scopes[s.id] = asyncbis.CancelScope()
            self.entered.add(s.id)
            if s.deadline is not None:
                scope.deadline = asyncio.get_running_loop().time() + s.deadline
            scope.shield = s.shield
            with scope:
                await self.block(s.body)
        elif s.kind == "timeout":
            async with self._scope_cm(s.kind, s.deadline, s.shield) as cm:
                self.scopes[s.id] = cm
                self.active_timeouts[s.id] = cm
                try:
                    await self.block(s.body)
                finally:
                    del self.active_timeouts[s.id]
        else:
            with self._scope_cm(s.kind, s.deadline, s.shield) as scope:
                self.scopes[s.id] = scope
                await self.block(s.body)

    async def agen_stmt(self, s: AsyncGen) -> None:
        state = {"entered": False, "closed": False}

        async def agen() -> Any:
            try:
                if s.kind == "cancel":
                    cm: Any = asyncbis.CancelScope()
                    self.scopes[s.id] = cm
                else:
                    cm = self._scope_cm(s.kind, s.deadline, False)
                if s.kind == "timeout":
                    async with cm as scope:
                        self.scopes[s.id] = scope
                        self.active_timeouts[s.id] = scope
                        state["entered"] = True
                        for i in range(s.items):
                            yield i
                    del self.active_timeouts[s.id]
                else:
                    with cm as scope:
                        self.scopes[s.id] = scope
                        state["entered"] = True
                        for i in range(s.items):
                            yield i
            finally:
                state["closed"] = True

        try:
            async for i in agen():
                if s.body:
                    self.outcome.conditions.add(CONSUMER_UNDER_GENERATOR_SCOPE)
                await self.block(s.body)
                if s.break_after is not None and i + 1 >= s.break_after:
                    break
        finally:
            if state["entered"] and not state["closed"]:
                # left (break or an exception) while the generator is suspended in its scope
                self.outcome.conditions.add("asyncgen-left-in-scope")

    async def started_child(self, s: Start, task_status: Any) -> None:
        await self.block(s.before)
        if s.calls_started:
            task_status.started()
        await self.block(s.after)

    def thread_spawn(self, s: ThreadSpawn) -> None:
        loop = asyncio.get_running_loop()
        tg = self.groups[s.group]

        def in_loop() -> None:
            coro = self.block(s.body)
            try:
                self.tasks[s.id] = tg.create_task(coro)
            except RuntimeError as e:
                coro.close()
                self.spawn_errors.append(e)

        worker = threading.Thread(target=loop.call_soon_threadsafe, args=(in_loop,))
        worker.start()
        worker.join()

    # -- the run and its checks

    async def main(self) -> None:
        if self.program.eager:
            asyncio.get_running_loop().set_task_factory(asyncbis.eager_task_factory)
        await self.block(self.program.body)


def run_program(program: Program) -> Outcome:
    """Run ``program`` on asyncbis and check the invariants (``Outcome.problems``)."""
    interp = Interpreter(program)
    out = interp.outcome
    # Every scope exists from the start, so that Cancel can reach one not entered yet (allowed:
    # it is entered cancelled); statements that make their own scope object (move_on_at, ...)
    # replace theirs on entry.
    for sid in program.scope_ids:
        interp.scopes[sid] = asyncbis.CancelScope()
    unraisable: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    gc.collect()
    before = asyncbis._core._tree_stats()
    loops: list[FuzzLoop] = []

    def factory() -> FuzzLoop:
        loop = FuzzLoop()
        loops.append(loop)
        return loop

    try:
        try:
            asyncbis.run(interp.main(), loop_factory=factory)
        except BaseException as exc:  # noqa: BLE001 - judged below
            out.result = exc
        interp.scopes.clear()
        interp.groups.clear()
        interp.tasks.clear()
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    loop = loops[0] if loops else None
    out.iterations = loop.iterations if loop else 0
    problems = out.problems

    # no hang
    leaves = _leaves(out.result)
    if any(isinstance(e, (Hang, VirtualClockDeadlock)) for e in leaves):
        problems.append(f"hang: {out.result!r}")
    # no crash: only what the program raised, or a documented usage error
    escaped = {e.args[0] for e in leaves if isinstance(e, ProgramError)}
    for e in _members(out.result):
        if isinstance(e, (ProgramError, BaseExceptionGroup)):
            continue
        elif isinstance(e, TimeoutError):
            continue
        elif isinstance(e, RuntimeError) and str(e) in ALLOWED_RUNTIME_ERRORS:
            continue
        elif isinstance(e, (Hang, VirtualClockDeadlock)):
            continue
        elif (
            isinstance(e, asyncio.CancelledError)
            and CONSUMER_UNDER_GENERATOR_SCOPE in out.conditions
        ):
            continue
        else:
            problems.append(f"unexpected exception out of run(): {type(e).__name__}: {e}")
    # no exception lost
    lost = out.raised - out.caught - escaped
    if lost:
        problems.append(f"ProgramError(s) {sorted(lost)} neither caught nor raised by run()")
    # no leak
    after = asyncbis._core._tree_stats()
    if after != before:
        problems.append(f"scope tree (nodes, tasks) {before} before the run, {after} after")
    pending = [o for o in gc.get_objects() if isinstance(o, asyncbis.Task) and not o.done()]
    if pending:
        problems.append(f"{len(pending)} asyncbis task(s) still pending after run()")
    for ctx in loop.handler_calls if loop else ():
        problems.append(f"loop exception handler: {ctx.get('message')} {ctx.get('exception')!r}")
    for u in unraisable:
        problems.append(f"unraisable: {u.err_msg} {u.exc_value!r}")
    for condition in out.conditions:
        signature = KNOWN_DEFECTS.get(condition)
        if signature and problems and any(signature in p for p in problems):
            out.known = condition
    return out
