"""A tiny structured-concurrency language: the programs both interpreters run.

A program is the body of the main task: a tuple of statements. Every statement carries a
unique ``id`` (assigned in pre-order by :func:`number`), which the event traces use to say
what happened where. Child tasks are named by the id of the ``Spawn``/``Start`` that made
them; the main task is ``"main"``.

Virtual time: every sleep and every finite deadline gets a distinct binary fraction added to
its whole number of seconds (see :func:`number`), so no two timers ever fire at the same
virtual instant. Tasks then only run "at the same time" when one of them wakes the other
(a cancellation, a failing sibling), which is exactly the interaction we want to compare.

The runtime fuzzer (tests/fuzz/runtime.py) extends this language with statements of its own
and reuses its statements, numbering and listing; its timers get no fractions, so they may
fire at the same virtual instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, Union

# At most this many timed statements get a distinct fraction. Fractions are 2**-(k+2), so the
# smallest is 2**-23 s, well above the virtual loop's clock resolution (2**-30 s).
MAX_DISTINCT_TIMERS = 22

Catches = Literal["cancelled", "error", "any"]


class Statement:
    """A statement; ``blocks`` names its fields that hold nested blocks, in execution order."""

    blocks: ClassVar[tuple[str, ...]] = ()
    id: int


@dataclass(frozen=True)
class Sleep(Statement):
    """``await sleep(seconds)``: a checkpoint that blocks for virtual time."""

    whole_seconds: int
    id: int = 0
    seconds: float = 0.0  # whole_seconds + this statement's distinct fraction


@dataclass(frozen=True)
class Checkpoint(Statement):
    """``await checkpoint()``: yield once, zero virtual time (a cancel point)."""

    id: int = 0


@dataclass(frozen=True)
class Raise(Statement):
    """``raise ProgramError(id)``."""

    id: int = 0


@dataclass(frozen=True)
class Try(Statement):
    """``try: body / except <catches>: handler; [raise]``."""

    blocks = ("body", "handler")
    body: Block
    catches: str  # Catches here; the fuzzer has words of its own
    handler: Block
    reraise: bool
    id: int = 0


@dataclass(frozen=True)
class Scope(Statement):
    """``with CancelScope(deadline=now + offset, shield=...)`` (``fail``: fail_at)."""

    blocks = ("body",)
    body: Block
    # None: no deadline; negative: already past at entry; else whole seconds (+ a fraction)
    whole_seconds: int | None
    shield: bool
    fail: bool
    id: int = 0
    offset: float | None = None  # the relative deadline actually used


@dataclass(frozen=True)
class Group(Statement):
    """``async with TaskGroup()`` / ``async with trio.open_nursery()``."""

    blocks = ("body",)
    body: Block
    id: int = 0


@dataclass(frozen=True)
class Spawn(Statement):
    """Start a child running ``body`` in an enclosing group (``create_task``/``start_soon``)."""

    blocks = ("body",)
    group_depth: int  # 0: the innermost enclosing group, 1: the next one out, ...
    body: Block
    id: int = 0
    group: int = 0  # the target group's id, resolved by number()


@dataclass(frozen=True)
class Start(Statement):
    """``await group.start(child)``: the child runs ``before``, calls ``started()`` (if
    ``calls_started``), then runs ``after``."""

    blocks = ("before", "after")
    group_depth: int
    before: Block
    after: Block
    calls_started: bool
    id: int = 0
    group: int = 0


@dataclass(frozen=True)
class Cancel(Statement):
    """Cancel a scope or a group, chosen among all in the program (maybe not entered yet,
    maybe exited already, maybe in another task)."""

    target_index: int
    id: int = 0
    target: int = 0


@dataclass(frozen=True)
class SetShield(Statement):
    """``scope.shield = value`` on any scope of the program."""

    target_index: int
    value: bool
    id: int = 0
    target: int = 0


@dataclass(frozen=True)
class SetDeadline(Statement):
    """``scope.deadline = now + offset`` (None: no deadline) on any scope of the program."""

    target_index: int
    whole_seconds: int | None
    id: int = 0
    target: int = 0
    offset: float | None = None


Stmt = Union[  # noqa: UP007  (a runtime alias used in isinstance checks and the strategy)
    Sleep, Checkpoint, Raise, Try, Scope, Group, Spawn, Start, Cancel, SetShield, SetDeadline
]
Block = tuple[Stmt, ...]


@dataclass(frozen=True)
class Program:
    body: Block
    scope_ids: tuple[int, ...] = field(default=())
    group_ids: tuple[int, ...] = field(default=())
    spawn_ids: tuple[int, ...] = field(default=())  # Spawn statements (their child tasks)


# -- numbering: ids, targets, distinct timer fractions -------------------------------------


class Numbering:
    """Assigns ids in pre-order, resolves spawn targets (the lexically enclosing groups) and
    the targets of statements that name any scope or group, and gives timers their distinct
    fractions. A language that extends this one subclasses it for its own statements."""

    def __init__(self) -> None:
        self.next_id = 1
        self.timers = 0
        self.scope_ids: list[int] = []
        self.group_ids: list[int] = []
        self.spawn_ids: list[int] = []

    def program(self, body: Block) -> dict[str, Any]:
        """The fields of the numbered Program."""
        numbered = self.resolve(self.block(body, ()))
        return {
            "body": numbered,
            "scope_ids": tuple(self.scope_ids),
            "group_ids": tuple(self.group_ids),
            "spawn_ids": tuple(self.spawn_ids),
        }

    def fraction(self) -> float:
        k = self.timers
        self.timers += 1
        return 2.0 ** -(k + 2) if k < MAX_DISTINCT_TIMERS else 0.0

    def is_scope(self, s: Statement) -> bool:
        return isinstance(s, Scope)

    def timing(self, s: Statement) -> dict[str, Any]:
        """A timed statement's seconds or offset (whole seconds + a distinct fraction)."""
        if isinstance(s, Sleep):
            return {"seconds": s.whole_seconds + self.fraction()}
        if isinstance(s, (Scope, SetDeadline)) and s.whole_seconds is not None:
            return {"offset": -1.0 if s.whole_seconds < 0 else s.whole_seconds + self.fraction()}
        return {}

    def block(self, block: Block, groups: tuple[int, ...]) -> Block:
        return tuple(self.stmt(s, groups) for s in block)

    def stmt(self, s: Statement, groups: tuple[int, ...]) -> Any:
        sid = self.next_id
        self.next_id += 1
        changes = {"id": sid, **self.timing(s)}  # the statement's fractions before its body's
        inner = groups
        if self.is_scope(s):
            self.scope_ids.append(sid)
        elif isinstance(s, Group):
            self.group_ids.append(sid)
            inner = (sid, *groups)
        if isinstance(s, (Spawn, Start)):
            changes["group"] = groups[min(s.group_depth, len(groups) - 1)]
        if isinstance(s, Spawn):
            self.spawn_ids.append(sid)
        for name in s.blocks:
            changes[name] = self.block(getattr(s, name), inner)
        return replace(s, **changes)

    def target(self, s: Statement) -> int | None:
        """The id a statement that names a target resolves to (None: it names none, or there
        is nothing to name)."""
        everything = sorted(self.scope_ids + self.group_ids)
        if isinstance(s, Cancel) and everything:
            return everything[s.target_index % len(everything)]
        if isinstance(s, (SetShield, SetDeadline)) and everything:
            scopes = sorted(self.scope_ids)
            return scopes[s.target_index % len(scopes)] if scopes else 0
        return None

    def resolve(self, block: Block) -> Block:
        out = []
        for s in block:
            target = self.target(s)
            changes: dict[str, Any] = {} if target is None else {"target": target}
            for name in s.blocks:
                changes[name] = self.resolve(getattr(s, name))
            out.append(replace(s, **changes) if changes else s)
        return tuple(out)


def number(body: Block) -> Program:
    """Assign ids, resolve group/scope targets and timer fractions; return the program."""
    return Program(**Numbering().program(body))


# -- a readable listing, for divergence reports --------------------------------------------


class Listing:
    """The program as (pseudo-)Python, each statement tagged with its id. A language that
    extends this one subclasses it for its own statements."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.lines: list[str] = []

    def text(self) -> str:
        self.lines = ["async def main():"]
        self.block(self.program.body, 1)
        return "\n".join(self.lines)

    def block(self, block: Block, depth: int) -> None:
        pad = "    " * depth
        if not block:
            self.lines.append(f"{pad}pass")
        for s in block:
            self.stmt(s, pad, depth)

    def except_clause(self, catches: str) -> str:
        return f"except {catches}"

    def stmt(self, s: Statement, pad: str, depth: int) -> None:
        tag = f"  # [{s.id}]"
        add = self.lines.append
        if isinstance(s, Sleep):
            add(f"{pad}await sleep({s.seconds!r}){tag}")
        elif isinstance(s, Checkpoint):
            add(f"{pad}await checkpoint(){tag}")
        elif isinstance(s, Raise):
            add(f"{pad}raise ProgramError({s.id}){tag}")
        elif isinstance(s, Try):
            add(f"{pad}try:{tag}")
            self.block(s.body, depth + 1)
            add(f"{pad}{self.except_clause(s.catches)}:")
            self.block(s.handler, depth + 1)
            if s.reraise:
                add(f"{pad}    raise")
        elif isinstance(s, Scope):
            kind = "fail_at" if s.fail else "CancelScope"
            deadline = "inf" if s.offset is None else f"now + {s.offset!r}"
            add(f"{pad}with {kind}(deadline={deadline}, shield={s.shield}) as s{s.id}:")
            self.block(s.body, depth + 1)
        elif isinstance(s, Group):
            add(f"{pad}async with TaskGroup() as g{s.id}:")
            self.block(s.body, depth + 1)
        elif isinstance(s, Spawn):
            add(f"{pad}async def child{s.id}():")
            self.block(s.body, depth + 1)
            add(f"{pad}t{s.id} = g{s.group}.create_task(child{s.id}()){tag}")
        elif isinstance(s, Start):
            add(f"{pad}async def child{s.id}(task_status):")
            self.block(s.before, depth + 1)
            if s.calls_started:
                add(f"{pad}    task_status.started()")
            self.block(s.after, depth + 1)
            add(f"{pad}await g{s.group}.start(child{s.id}){tag}")
        elif isinstance(s, Cancel):
            name = (
                f"g{s.target}.cancel_scope"
                if s.target in self.program.group_ids
                else f"s{s.target}"
            )
            add(f"{pad}{name}.cancel(){tag}")
        elif isinstance(s, SetShield):
            add(f"{pad}s{s.target}.shield = {s.value}{tag}")
        elif isinstance(s, SetDeadline):
            deadline = "inf" if s.offset is None else f"now + {s.offset!r}"
            add(f"{pad}s{s.target}.deadline = {deadline}{tag}")
        else:  # pragma: no cover
            raise TypeError(s)


def render(program: Program) -> str:
    return Listing(program).text()
