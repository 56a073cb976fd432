"""A tiny structured-concurrency language: the programs both interpreters run.

A program is the body of the main task: a tuple of statements. Every statement carries a
unique ``id`` (assigned in pre-order by :func:`number`), which the event traces use to say
what happened where. Child tasks are named by the id of the ``Spawn``/``Start`` that made
them; the main task is ``"main"``.

Virtual time: every sleep and every finite deadline gets a distinct binary fraction added to
its whole number of seconds (see :func:`number`), so no two timers ever fire at the same
virtual instant. Tasks then only run "at the same time" when one of them wakes the other
(a cancellation, a failing sibling), which is exactly the interaction we want to compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Union

# At most this many timed statements get a distinct fraction. Fractions are 2**-(k+2), so the
# smallest is 2**-23 s, well above the virtual loop's clock resolution (2**-30 s).
MAX_DISTINCT_TIMERS = 22

Catches = Literal["cancelled", "error", "any"]


@dataclass(frozen=True)
class Sleep:
    """``await sleep(seconds)``: a checkpoint that blocks for virtual time."""

    whole_seconds: int
    id: int = 0
    seconds: float = 0.0  # whole_seconds + this statement's distinct fraction


@dataclass(frozen=True)
class Checkpoint:
    """``await checkpoint()``: yield once, zero virtual time (a cancel point)."""

    id: int = 0


@dataclass(frozen=True)
class Raise:
    """``raise ProgramError(id)``."""

    id: int = 0


@dataclass(frozen=True)
class Try:
    """``try: body / except <catches>: handler; [raise]``."""

    body: Block
    catches: Catches
    handler: Block
    reraise: bool
    id: int = 0


@dataclass(frozen=True)
class Scope:
    """``with CancelScope(deadline=now + offset, shield=...)`` (``fail``: fail_at)."""

    body: Block
    # None: no deadline; negative: already past at entry; else whole seconds (+ a fraction)
    whole_seconds: int | None
    shield: bool
    fail: bool
    id: int = 0
    offset: float | None = None  # the relative deadline actually used


@dataclass(frozen=True)
class Group:
    """``async with TaskGroup()`` / ``async with trio.open_nursery()``."""

    body: Block
    id: int = 0


@dataclass(frozen=True)
class Spawn:
    """Start a child running ``body`` in an enclosing group (``create_task``/``start_soon``)."""

    group_depth: int  # 0: the innermost enclosing group, 1: the next one out, ...
    body: Block
    id: int = 0
    group: int = 0  # the target group's id, resolved by number()


@dataclass(frozen=True)
class Start:
    """``await group.start(child)``: the child runs ``before``, calls ``started()`` (if
    ``calls_started``), then runs ``after``."""

    group_depth: int
    before: Block
    after: Block
    calls_started: bool
    id: int = 0
    group: int = 0


@dataclass(frozen=True)
class Cancel:
    """Cancel a scope or a group, chosen among all in the program (maybe not entered yet,
    maybe exited already, maybe in another task)."""

    target_index: int
    id: int = 0
    target: int = 0


@dataclass(frozen=True)
class SetShield:
    """``scope.shield = value`` on any scope of the program."""

    target_index: int
    value: bool
    id: int = 0
    target: int = 0


@dataclass(frozen=True)
class SetDeadline:
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


# -- numbering: ids, targets, distinct timer fractions -------------------------------------


class _Numbering:
    def __init__(self) -> None:
        self.next_id = 1
        self.timers = 0
        self.scope_ids: list[int] = []
        self.group_ids: list[int] = []
        self.pending: list[tuple[int, object]] = []

    def fraction(self) -> float:
        k = self.timers
        self.timers += 1
        return 2.0 ** -(k + 2) if k < MAX_DISTINCT_TIMERS else 0.0

    def take_id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i

    def block(self, block: Block, groups: tuple[int, ...]) -> Block:
        return tuple(self.stmt(s, groups) for s in block)

    def stmt(self, s: Stmt, groups: tuple[int, ...]) -> Stmt:
        sid = self.take_id()
        if isinstance(s, Sleep):
            return replace(s, id=sid, seconds=s.whole_seconds + self.fraction())
        if isinstance(s, (Checkpoint, Raise)):
            return replace(s, id=sid)
        if isinstance(s, Try):
            body = self.block(s.body, groups)
            return replace(s, id=sid, body=body, handler=self.block(s.handler, groups))
        if isinstance(s, Scope):
            self.scope_ids.append(sid)
            offset = None
            if s.whole_seconds is not None:
                offset = -1.0 if s.whole_seconds < 0 else s.whole_seconds + self.fraction()
            return replace(s, id=sid, offset=offset, body=self.block(s.body, groups))
        if isinstance(s, Group):
            self.group_ids.append(sid)
            return replace(s, id=sid, body=self.block(s.body, (sid, *groups)))
        if isinstance(s, Spawn):
            target = groups[min(s.group_depth, len(groups) - 1)]
            return replace(s, id=sid, group=target, body=self.block(s.body, groups))
        if isinstance(s, Start):
            target = groups[min(s.group_depth, len(groups) - 1)]
            before = self.block(s.before, groups)
            return replace(
                s, id=sid, group=target, before=before, after=self.block(s.after, groups)
            )
        if isinstance(s, SetDeadline):
            offset = None
            if s.whole_seconds is not None:
                offset = -1.0 if s.whole_seconds < 0 else s.whole_seconds + self.fraction()
            return replace(s, id=sid, offset=offset)
        if isinstance(s, (Cancel, SetShield)):
            return replace(s, id=sid)
        raise TypeError(f"not a statement: {s!r}")


def _resolve_targets(block: Block, scopes: list[int], everything: list[int]) -> Block:
    out = []
    for s in block:
        if isinstance(s, Cancel):
            s = replace(s, target=everything[s.target_index % len(everything)])
        elif isinstance(s, (SetShield, SetDeadline)):
            s = replace(s, target=scopes[s.target_index % len(scopes)] if scopes else 0)
        elif isinstance(s, Try):
            s = replace(
                s,
                body=_resolve_targets(s.body, scopes, everything),
                handler=_resolve_targets(s.handler, scopes, everything),
            )
        elif isinstance(s, (Scope, Group, Spawn)):
            s = replace(s, body=_resolve_targets(s.body, scopes, everything))
        elif isinstance(s, Start):
            s = replace(
                s,
                before=_resolve_targets(s.before, scopes, everything),
                after=_resolve_targets(s.after, scopes, everything),
            )
        out.append(s)
    return tuple(out)


def number(body: Block) -> Program:
    """Assign ids, resolve group/scope targets and timer fractions; return the program."""
    n = _Numbering()
    numbered = n.block(body, ())
    everything = sorted(n.scope_ids + n.group_ids)
    if everything:
        numbered = _resolve_targets(numbered, sorted(n.scope_ids), everything)
    return Program(numbered, tuple(n.scope_ids), tuple(n.group_ids))


# -- a readable listing, for divergence reports --------------------------------------------


def render(program: Program) -> str:
    lines: list[str] = ["async def main():"]
    _render_block(program.body, 1, lines, set(program.group_ids))
    return "\n".join(lines)


def _render_block(block: Block, depth: int, lines: list[str], groups: set[int]) -> None:
    pad = "    " * depth
    if not block:
        lines.append(f"{pad}pass")
    for s in block:
        tag = f"  # [{s.id}]"
        if isinstance(s, Sleep):
            lines.append(f"{pad}await sleep({s.seconds!r}){tag}")
        elif isinstance(s, Checkpoint):
            lines.append(f"{pad}await checkpoint(){tag}")
        elif isinstance(s, Raise):
            lines.append(f"{pad}raise ProgramError({s.id}){tag}")
        elif isinstance(s, Try):
            lines.append(f"{pad}try:{tag}")
            _render_block(s.body, depth + 1, lines, groups)
            lines.append(f"{pad}except {s.catches}:")
            _render_block(s.handler, depth + 1, lines, groups)
            if s.reraise:
                lines.append(f"{pad}    raise")
        elif isinstance(s, Scope):
            kind = "fail_at" if s.fail else "CancelScope"
            deadline = "inf" if s.offset is None else f"now + {s.offset!r}"
            lines.append(f"{pad}with {kind}(deadline={deadline}, shield={s.shield}) as s{s.id}:")
            _render_block(s.body, depth + 1, lines, groups)
        elif isinstance(s, Group):
            lines.append(f"{pad}async with TaskGroup() as g{s.id}:")
            _render_block(s.body, depth + 1, lines, groups)
        elif isinstance(s, Spawn):
            lines.append(f"{pad}async def child{s.id}():  # spawned into g{s.group}")
            _render_block(s.body, depth + 1, lines, groups)
            lines.append(f"{pad}g{s.group}.create_task(child{s.id}())")
        elif isinstance(s, Start):
            lines.append(f"{pad}async def child{s.id}(task_status):")
            _render_block(s.before, depth + 1, lines, groups)
            if s.calls_started:
                lines.append(f"{pad}    task_status.started()")
            _render_block(s.after, depth + 1, lines, groups)
            lines.append(f"{pad}await g{s.group}.start(child{s.id}){tag}")
        elif isinstance(s, Cancel):
            name = f"g{s.target}.cancel_scope" if s.target in groups else f"s{s.target}"
            lines.append(f"{pad}{name}.cancel(){tag}")
        elif isinstance(s, SetShield):
            lines.append(f"{pad}s{s.target}.shield = {s.value}{tag}")
        elif isinstance(s, SetDeadline):
            deadline = "inf" if s.offset is None else f"now + {s.offset!r}"
            lines.append(f"{pad}s{s.target}.deadline = {deadline}{tag}")
        else:  # pragma: no cover
            raise TypeError(s)
