"""Behaviour switches: every deviation of asyncbis from stock asyncio can be turned off by name.

All switches are on by default. Turn some off for a whole process with the environment
variable ``ASYNCBIS_DISABLE=name,name`` (``all`` turns every switch off), or from Python
before ``run()``::

    from asyncbis import switches
    switches.disable("structured-exit")
    switches.set("task-cancel-level", "uncancel")

``ASYNCBIS_SWITCHES=name=value,...`` sets values (``on``/``off``, and for task-cancel-level
also ``uncancel``). See docs/switches.md for what each switch changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from . import _core

#: Every switch, in the order of DESIGN §2 (plus the later additions at the end).
NAMES: tuple[str, ...] = (
    "root-task-group",
    "level-cancellation",
    "task-cancel-level",
    "inline-shield",
    "scoped-timeouts",
    "graceful-signals",
    "no-loop-policies",
    "no-task-factory",
    "structured-exit",
    # asyncio.TaskGroup is the asyncbis (cancel-scope) task group; off: stock TaskGroup
    "scoped-taskgroups",
    # sniffio reports "asyncbis" inside asyncbis loops; off: it reports "asyncio"
    "sniffio-name",
)

_TASK_CANCEL_VALUES = ("off", "on", "uncancel")

_values: dict[str, object] = {}
_listeners: list[Callable[[], None]] = []


def _check_name(name: object) -> str:
    if name not in NAMES:
        raise ValueError(
            f"unknown asyncbis switch {name!r}; valid switches are: {', '.join(NAMES)}"
        )
    return name  # type: ignore[return-value]


def _normalise(name: str, value: object) -> object:
    if name == "task-cancel-level":
        if isinstance(value, bool):
            return "on" if value else "off"
        if value in _TASK_CANCEL_VALUES:
            return value
        raise ValueError(
            f"task-cancel-level takes True/False or one of {', '.join(_TASK_CANCEL_VALUES)};"
            f" got {value!r}"
        )
    if isinstance(value, bool):
        return value
    if value in ("on", "off"):
        return value == "on"
    raise ValueError(f"switch {name!r} takes True/False (or 'on'/'off'); got {value!r}")


def value(name: str) -> object:
    """The switch's value: a bool, or for task-cancel-level 'off', 'on' or 'uncancel'."""
    return _values[_check_name(name)]


def enabled(name: str) -> bool:
    """Whether the asyncbis behaviour ``name`` is on (task-cancel-level: any value but 'off')."""
    v = _values[_check_name(name)]
    return v != "off" if isinstance(v, str) else bool(v)


def set(name: str, value: object) -> None:  # noqa: A001  (the documented name)
    """Set one switch. Takes effect for tasks and calls made afterwards."""
    _values[_check_name(name)] = _normalise(name, value)
    _changed()


def disable(*names: str) -> None:
    """Turn the named switches off (stock asyncio behaviour)."""
    for n in names:
        _check_name(n)
    for n in names:
        _values[n] = _normalise(n, False)
    _changed()


def enable(*names: str) -> None:
    """Turn the named switches on (asyncbis behaviour; task-cancel-level becomes 'on')."""
    for n in names:
        _check_name(n)
    for n in names:
        _values[n] = _normalise(n, True)
    _changed()


def disabled() -> list[str]:
    """Names of the switches that are not at their default (on) value."""
    return [n for n in NAMES if _values[n] is not True and _values[n] != "on"]


def snapshot() -> dict[str, object]:
    return dict(_values)


def restore(state: dict[str, object]) -> None:
    """Restore a snapshot() (used by tests)."""
    for n, v in state.items():
        _values[_check_name(n)] = _normalise(n, v)
    _changed()


def _on_change(fn: Callable[[], None]) -> None:
    _listeners.append(fn)


def _changed() -> None:
    _core._set_core_switch("level-cancellation", enabled("level-cancellation"))
    _core._set_core_switch("scoped-timeouts", enabled("scoped-timeouts"))
    _core._set_core_switch("task-cancel-level", _values["task-cancel-level"])
    for fn in list(_listeners):
        fn()


def _from_environment() -> None:
    for n in NAMES:
        _values[n] = _normalise(n, True)
    raw = os.environ.get("ASYNCBIS_DISABLE", "").strip()
    if raw:
        names = [s.strip() for s in raw.split(",") if s.strip()]
        if "all" in names:
            names = list(NAMES)
        for n in names:
            if n not in NAMES:
                raise ValueError(
                    f"ASYNCBIS_DISABLE names an unknown switch {n!r}; valid switches are: "
                    f"{', '.join(NAMES)} (or 'all')"
                )
            _values[n] = _normalise(n, False)
    raw = os.environ.get("ASYNCBIS_SWITCHES", "").strip()
    for item in filter(None, (s.strip() for s in raw.split(","))):
        n, sep, v = item.partition("=")
        if not sep:
            raise ValueError(f"ASYNCBIS_SWITCHES entries look like name=value, got {item!r}")
        _values[_check_name(n.strip())] = _normalise(n.strip(), v.strip())
    _changed()


_from_environment()
