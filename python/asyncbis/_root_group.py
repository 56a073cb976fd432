"""The root task group: the group ``asyncbis.run()``/``Runner`` (and, after patch_asyncio(), a
patched ``run_until_complete(coro)``) opens around ``main``, which every task created outside a
group joins (switch root-task-group).

With ``structured-exit=loop`` (and ``loop-cancel``) a run's root group does not wait for its
tasks when ``main`` returns: it hands those still running over to the loop's next run, whose root
group adopts them; ``Runner.close()`` ends the chain with a last run that waits for them
(``loop-cancel``: cancels them, then waits) (docs/switches.md, "Structured exit at the end of the
loop's life")."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from . import _core, switches
from ._taskgroup import TaskGroup

T = TypeVar("T")

# loop -> its root task group (while a runner's main, or a patched run_until_complete, runs)
_root_groups: dict[Any, TaskGroup] = {}

# loop -> root groups of its earlier runs that handed tasks over (structured-exit=loop) and that
# no run has adopted yet. Strong: the loop's tasks are kept until its next run, Runner.close()
# or loop.close() (forget_leftovers) takes them.
_handed_over: dict[Any, list[TaskGroup]] = {}

# The structured-exit values whose runs hand their running tasks over to the loop's next run.
HAND_OVER = ("loop", "loop-cancel")


def root_group(loop: asyncio.AbstractEventLoop) -> TaskGroup | None:
    """The root task group of ``loop``, or None outside asyncbis.run()/Runner."""
    group = _root_groups.get(loop)
    if group is not None and not loop.is_running():
        # Left by a run that was interrupted before its root main could finish (a
        # KeyboardInterrupt or a test timeout's signal out of run_forever()): that group may be
        # cancelled, and tasks or a later run_until_complete() on the same loop must not join
        # it (aiohttp's suite reuses one loop: every test after a timeout got cancelled).
        del _root_groups[loop]
        return None
    return group


async def root_main(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], *, last: bool = False
) -> T:
    """The root task's body: main inside the root task group. The group adopts the tasks the
    loop's earlier runs handed over; ``last``: the loop's last run (Runner.close()), which never
    hands over: it waits for its tasks, and with structured-exit ``off`` or ``loop-cancel``
    cancels them first."""
    # A generator its consumer lets go of stops holding the consumer in its scopes at once
    # (docs/architecture.md, "Scopes held by generators across yield").
    _core._watch_left_generators()
    group = TaskGroup()
    # Which background failures the root group acts on (root-task-group: on or unretrieved*).
    policy = switches.value("root-task-group")
    group._set_orphan_policy("on" if policy == "off" else str(policy))
    exit_mode = switches.value("structured-exit")
    if not last and exit_mode in HAND_OVER:
        group._hand_over_at_exit()
    main_exc: BaseException | None = None
    try:
        async with group:
            _root_groups[loop] = group
            for earlier in _handed_over.pop(loop, ()):
                group._adopt(earlier)
            try:
                result = await coro
            except BaseException as exc:
                main_exc = exc
                raise
            if not switches.enabled("structured-exit"):
                # Stock asyncio.run(): leftover background tasks are cancelled when main returns.
                group.cancel("main returned (structured-exit is off)")
            elif last and exit_mode == "loop-cancel":
                # Stock Runner.close() cancels what is left (_cancel_all_tasks); here as the
                # root group's cancellation, so a failure of their cleanup reaches the caller.
                group.cancel("the runner is closing (structured-exit=loop-cancel)")
            return result
    except BaseExceptionGroup as eg:
        # main's own exception, alone, propagates unchanged (as asyncio.run and trio.run do)
        if main_exc is not None and len(eg.exceptions) == 1 and eg.exceptions[0] is main_exc:
            raise main_exc from None
        raise
    finally:
        # Runs cannot nest on one loop; a group registered since is a later run's (this run
        # was interrupted and resumed when the loop ran again): leave it.
        if _root_groups.get(loop) is group:
            del _root_groups[loop]
        if group._leftovers:
            _hand_over(loop, group)


def _hand_over(loop: asyncio.AbstractEventLoop, group: TaskGroup) -> None:
    current = root_group(loop)
    if current is not None and current.accepts_tasks:
        # The group of a run that was interrupted, exiting during a later run: that run's.
        current._adopt(group)
    else:
        _handed_over.setdefault(loop, []).append(group)


def has_leftovers(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether earlier runs on ``loop`` handed over tasks that no run has adopted yet."""
    return any(group._leftovers for group in _handed_over.get(loop, ()))


def forget_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """The loop is closed: let go of the tasks its runs handed over. They stay pending, as a
    closed stock loop's tasks do (asyncio logs them when they are collected: "Task was
    destroyed but it is pending!"; a failure they had: "exception was never retrieved")."""
    _handed_over.pop(loop, None)


async def leftovers_done() -> None:
    """The main of a loop's last run (Runner.close()): its root group adopts the tasks earlier
    runs handed over, and its exit waits for them (cancelled first with ``loop-cancel``)."""
