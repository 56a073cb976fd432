"""Task creation policy: every task is an asyncbis task, in the loop's root group when there is
one. The loop's task factory (plain and eager), ``create_task()``, directly constructed tasks,
and the guard that refuses foreign task factories (switch no-task-factory)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import weakref
from typing import Any

from . import _core, _stats, _stock, switches
from ._root_group import root_group


def _patched_active() -> bool:
    from . import _patch

    return _patch.is_patched()


def init_direct_task(
    task: asyncio.Future,
    coro: Any,
    loop: asyncio.AbstractEventLoop,
    *,
    name=None,
    context=None,
    eager_start: bool = False,
) -> None:
    """Initialise a directly constructed Task (``asyncbis.Task(coro)``, and after
    patch_asyncio() ``asyncio.Task(coro)``): it joins the loop's root group like the tasks of
    create_task(), so that its failure is not lost (switch root-task-group). ``eager_start``
    (3.12+) runs the first step at once when the loop is running."""
    if _stats.counting:
        _stats.count_task(loop)
    group = root_group(loop)
    if group is None or not group.accepts_tasks or not switches.enabled("root-task-group"):
        group = None
    _core._init_task(task, coro, loop, name, context, eager_start=eager_start, group=group)


def new_task(
    loop: asyncio.AbstractEventLoop,
    coro: Any,
    name: Any = None,
    context: Any = None,
    eager_start: bool | None = None,
):
    """An asyncbis task on ``loop``: in the loop's root group when there is one (and the
    root-task-group switch is on), else ungrouped. ``eager_start`` None: eager when the loop's
    task factory is the eager one."""
    if _stats.counting:
        _stats.count_task(loop)
    group = root_group(loop)
    if group is not None and group.accepts_tasks and switches.enabled("root-task-group"):
        return group.create_task(coro, name=name, context=context, eager_start=eager_start)
    return _core.spawn(loop, coro, name=name, context=context, eager_start=eager_start)


def task_factory(
    loop: asyncio.AbstractEventLoop, coro: Any, *, name=None, context=None, eager_start=None
) -> asyncio.Future:
    """The loop's task factory: tasks created outside a group join the root group."""
    return new_task(loop, coro, name, context, eager_start)


def _task_constructor(
    coro: Any,
    *,
    loop: asyncio.AbstractEventLoop,
    name: Any = None,
    context: Any = None,
    eager_start: bool = False,
) -> asyncio.Future:
    """A task constructor in the shape ``asyncio.create_eager_task_factory()`` expects: makes
    the task the loop's ``create_task()`` would (root group when there is one)."""
    return new_task(loop, coro, name, context, eager_start=eager_start)


if sys.version_info >= (3, 12):
    # The loop's task factory for eager tasks (what loop.set_task_factory(asyncio.
    # eager_task_factory) installs): every task of the loop, TaskGroup children included, runs
    # its first step at once, inside create_task(), when the loop is running (stock eager-task
    # semantics); a task spawned into a cancelled group still runs to its first yield point and
    # is cancelled there. Made by stock's create_eager_task_factory(), so code that recognises
    # an eager factory by its shape sees the same one: AnyIO (4.x) spawns its own tasks through
    # the factory's task constructor, lazily, to set up their task state first.
    eager_task_factory: Any = asyncio.create_eager_task_factory(_task_constructor)  # type: ignore[arg-type]
else:  # no eager tasks before 3.12

    def eager_task_factory(
        loop: asyncio.AbstractEventLoop, coro: Any, *, name=None, context=None
    ) -> asyncio.Future:
        return new_task(loop, coro, name, context)


_core._register_eager_factory(eager_task_factory)

# Factories a loop may be given while no-task-factory is on: asyncbis's own, and stock's eager
# factory (3.12+), which becomes asyncbis's eager one. Any other makes foreign tasks: refused.
_OWN_FACTORIES = (task_factory, eager_task_factory)


def _eager_factories() -> tuple[Any, ...]:
    stock_eager = getattr(asyncio, "eager_task_factory", None)
    return (eager_task_factory,) if stock_eager is None else (eager_task_factory, stock_eager)


def is_own_factory(factory: Any) -> bool:
    return any(factory is own for own in _OWN_FACTORIES)


def create_task(coro: Any, *, name: Any = None, context: Any = None) -> asyncio.Future:
    """``asyncio.create_task()`` that always makes an asyncbis task (root group if any)."""
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    if factory is not None and not is_own_factory(factory):
        # A foreign factory the user installed (no-task-factory off): stock behaviour.
        return _stock.create_task(coro, name=name, context=context)
    return new_task(loop, coro, name, context)


def accepted_task_factory(loop: Any, factory: Any) -> Any:
    """The factory to install when ``factory`` is set on ``loop`` with no-task-factory on:
    None and asyncbis's own unchanged, an eager factory becomes asyncbis's eager one; any other
    is refused (its tasks would not be asyncbis tasks)."""
    if factory is None or factory is task_factory:
        return factory
    if any(factory is eager for eager in _eager_factories()):
        return eager_task_factory
    raise RuntimeError(
        f"asyncbis refuses the task factory {factory!r}: every task must be an asyncbis task "
        "for cancel scopes and task groups to work (switch no-task-factory). Create tasks "
        "with TaskGroup.create_task() or asyncio.create_task() (asyncio.eager_task_factory is "
        "accepted: it makes eager asyncbis tasks); or turn the switch off with "
        "asyncbis.switches.disable('no-task-factory') or ASYNCBIS_DISABLE=no-task-factory."
    )


# loops driven by a Runner: their run_until_complete() calls are not root-group wrapped
_runner_loops: weakref.WeakSet[Any] = weakref.WeakSet()


def runner_managed(loop: Any) -> bool:
    try:
        return loop in _runner_loops
    except TypeError:
        return False


def install_on_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Give ``loop`` the asyncbis task machinery (idempotent)."""
    _stats.count_loop(loop)
    with contextlib.suppress(TypeError):
        _runner_loops.add(loop)
    if _patched_active() and isinstance(loop, _stock.BaseEventLoop):
        # The patched BaseEventLoop.create_task already makes asyncbis tasks, and the loop's
        # get_task_factory() keeps answering None like a stock loop.
        return
    current = loop.get_task_factory()
    if not is_own_factory(current):
        # A loop a loop_factory set up with stock's eager factory keeps eager tasks.
        eager = current is not None and any(current is e for e in _eager_factories())
        factory = eager_task_factory if eager else task_factory
        if isinstance(loop, _stock.BaseEventLoop):
            _stock.loop_set_task_factory(loop, factory)
        else:
            loop.set_task_factory(factory)
    # Not vars(loop): on 3.11/3.12 that materialises the instance dict, and every later
    # attribute access of the loop's own code (call_soon, _run_once) loses its fast path.
    own_method = getattr(loop.set_task_factory, "__self__", None) is loop
    if own_method:
        # An unpatched stock loop, or any other loop (uvloop, rloop): guard its
        # set_task_factory with an instance attribute that calls the class's method.
        original = (
            _stock.loop_set_task_factory
            if isinstance(loop, _stock.BaseEventLoop)
            else type(loop).set_task_factory
        )

        def set_task_factory(factory: Any, _loop: Any = loop, _original: Any = original) -> None:
            if switches.enabled("no-task-factory"):
                factory = accepted_task_factory(_loop, factory) or task_factory
            _original(_loop, factory)

        try:
            loop.set_task_factory = set_task_factory  # type: ignore[method-assign]
        except AttributeError:
            # A loop type whose instances take no attributes (no __dict__): the switch cannot
            # be enforced on it (docs/loops.md).
            pass
