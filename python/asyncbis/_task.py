"""The asyncbis Task: an ``asyncio.Future`` subclass whose step lives in Rust.

The class is Python only because a native type cannot inherit from the C ``asyncio.Future``;
everything on the hot path (step, wake-up, cancellation delivery) is ``_core.TaskCore``, which
the loop calls directly. The methods here are the stock ``asyncio.Task`` API.
"""

from __future__ import annotations

import asyncio
import types
from asyncio import base_tasks
from typing import Any

from . import _core

_PENDING = "PENDING"


class Task(asyncio.Future):
    """A task whose cancellation follows the enclosing cancel scopes (Trio/AnyIO model)."""

    __slots__ = ("_core", "_log_destroy")

    _core: _core.TaskCore

    def __init__(
        self,
        coro: Any,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        name: str | None = None,
        context: Any = None,
        eager_start: bool = False,
    ) -> None:
        super().__init__(loop=loop)
        # Direct construction (stock API): the task joins the loop's root group when there is
        # one, like create_task()'s tasks, so that its failure is not lost.
        from ._task_factory import init_direct_task

        init_direct_task(
            self, coro, self.get_loop(), name=name, context=context, eager_start=eager_start
        )

    # -- stock asyncio.Task API -----------------------------------------------------------
    def get_coro(self) -> Any:
        return self._core.coro

    def get_context(self) -> Any:
        return self._core.context

    def get_name(self) -> str:
        return self._core.get_name()

    def set_name(self, value: object) -> None:
        # 3.13.0's loop.create_task() calls task.set_name(name) even when name is None (custom
        # task factories only); keep the default "Task-N" name then.
        if value is not None:
            self._core.set_name(value)

    def cancel(self, msg: Any = None) -> bool:
        self._log_traceback = False
        return self._core.cancel(msg)

    def cancelling(self) -> int:
        return self._core.cancelling()

    def uncancel(self) -> int:
        return self._core.uncancel()

    def get_stack(self, *, limit: int | None = None) -> list[types.FrameType]:
        return base_tasks._task_get_stack(self, limit)

    def print_stack(self, *, limit: int | None = None, file: Any = None) -> None:
        return base_tasks._task_print_stack(self, limit, file)

    def set_result(self, result: Any) -> None:
        raise RuntimeError("Task does not support set_result operation")

    def set_exception(self, exception: Any) -> None:
        raise RuntimeError("Task does not support set_exception operation")

    def __repr__(self) -> str:
        return base_tasks._task_repr(self)

    __class_getitem__ = classmethod(types.GenericAlias)

    # -- attributes stock helpers (repr, stack, run_until_complete) read -----------------
    @property
    def _coro(self) -> Any:
        return self._core.coro

    @property
    def _fut_waiter(self) -> Any:
        return self._core.fut_waiter

    @property
    def _must_cancel(self) -> bool:
        return self._core.must_cancel

    @property
    def _log_destroy_pending(self) -> bool:
        return getattr(self, "_log_destroy", True)

    @_log_destroy_pending.setter
    def _log_destroy_pending(self, value: bool) -> None:
        self._log_destroy = value

    def __del__(self) -> None:
        if self._state == _PENDING and self._log_destroy_pending:
            context: dict[str, Any] = {
                "task": self,
                "message": "Task was destroyed but it is pending!",
            }
            if self._source_traceback:
                context["source_traceback"] = self._source_traceback
            self._loop.call_exception_handler(context)
        elif self._log_traceback:
            # Never retrieved: the root group may take the failure (root-task-group=unretrieved);
            # if it does, the exception counts as retrieved and stock's log below stays quiet.
            self._core._collected(self)
        super().__del__()


_core._register_task_class(Task)
