"""Behaviour switches: every deviation of asyncbis from stock asyncio can be turned off by name.

All switches are on by default. Turn some off for a whole process with the environment
variable ``ASYNCBIS_DISABLE=name,name`` (``all`` turns every switch off), or from Python
before ``run()``::

    from asyncbis import switches
    switches.disable("structured-exit")
    switches.set("task-cancel-level", "uncancel")

``ASYNCBIS_SWITCHES=name=value,...`` sets values (``on``/``off``, and the further values in
``VALUES``, e.g. ``task-cancel-level=uncancel``). ``ASYNCBIS_PROFILE=name`` (or
``use_profile(name)``) starts from a named set of values (``PROFILES``); ASYNCBIS_DISABLE and
ASYNCBIS_SWITCHES apply on top of it. See docs/switches.md for what each switch changes.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable

from . import _core


def _load() -> tuple[tuple[str, ...], dict[str, tuple[str, ...]], dict[str, dict[str, object]]]:
    """NAMES, VALUES and PROFILES from switches.toml, the list the study tool compiles in."""
    with open(os.path.join(os.path.dirname(__file__), "switches.toml"), "rb") as f:
        data = tomllib.load(f)
    names = tuple(s["name"] for s in data["switch"])
    values = {s["name"]: tuple(s["values"]) for s in data["switch"] if "values" in s}
    profiles: dict[str, dict[str, object]] = {}
    for p in data["profile"]:
        if "only" in p:  # these on, every other switch off
            profiles[p["name"]] = {n: False for n in names if n not in p["only"]}
        else:  # switch=value pairs, every other switch on
            pairs = (item.partition("=") for item in p.get("set", ()))
            profiles[p["name"]] = {n: v for n, _, v in pairs}
    return names, values, profiles


#: Every switch (docs/switches.md): the behaviours under study first, later additions at the end.
NAMES: tuple[str, ...]

#: Switches that take more values than on/off, and those values ('on' is the seed's
#: behaviour, 'off' is stock asyncio; the others are migration paths, see docs/switches.md).
VALUES: dict[str, tuple[str, ...]]

#: Named sets of switch values (ASYNCBIS_PROFILE=name, use_profile(name)); a switch a profile
#: does not name is on. Rationale of each in docs/switches.md, "Profiles".
PROFILES: dict[str, dict[str, object]]

NAMES, VALUES, PROFILES = _load()

_values: dict[str, object] = {}
_profile = "seed"
_listeners: list[Callable[[], None]] = []


def _check_name(name: object) -> str:
    if name not in NAMES:
        raise ValueError(
            f"unknown asyncbis switch {name!r}; valid switches are: {', '.join(NAMES)}"
        )
    return name  # type: ignore[return-value]


def _normalise(name: str, value: object) -> object:
    allowed = VALUES.get(name)
    if allowed is not None:
        if isinstance(value, bool):
            return "on" if value else "off"
        if value in allowed:
            return value
        raise ValueError(f"{name} takes True/False or one of {', '.join(allowed)}; got {value!r}")
    if isinstance(value, bool):
        return value
    if value in ("on", "off"):
        return value == "on"
    raise ValueError(f"switch {name!r} takes True/False (or 'on'/'off'); got {value!r}")


def _check_profile(name: object) -> dict[str, object]:
    if name not in PROFILES:
        raise ValueError(
            f"unknown asyncbis profile {name!r}; valid profiles are: {', '.join(PROFILES)}"
        )
    return PROFILES[name]  # type: ignore[index]


def _profile_values(name: str) -> dict[str, object]:
    chosen = _check_profile(name)
    return {n: _normalise(n, chosen.get(n, True)) for n in NAMES}


def value(name: str) -> object:
    """The switch's value: a bool, or for the switches in VALUES one of their values."""
    return _values[_check_name(name)]


def enabled(name: str) -> bool:
    """Whether the asyncbis behaviour ``name`` is on (switches in VALUES: any value but 'off')."""
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
    """Turn the named switches on (the seed's asyncbis behaviour: multi-valued ones become 'on')."""
    for n in names:
        _check_name(n)
    for n in names:
        _values[n] = _normalise(n, True)
    _changed()


def disabled() -> list[str]:
    """Names of the switches that are not at their default (on) value."""
    return [n for n in NAMES if _values[n] is not True and _values[n] != "on"]


def snapshot() -> dict[str, object]:
    return {**_values, _PROFILE_KEY: _profile}


def restore(state: dict[str, object]) -> None:
    """Restore a snapshot() (used by tests)."""
    global _profile
    for n, v in state.items():
        if n == _PROFILE_KEY:
            _profile = str(v)
            continue
        _values[_check_name(n)] = _normalise(n, v)
    _changed()


_PROFILE_KEY = "(profile)"


def use_profile(name: str) -> None:
    """Set every switch to the values of the named profile (see PROFILES); takes effect for
    tasks and calls made afterwards, like set()."""
    global _profile
    _values.update(_profile_values(name))
    _profile = name
    _changed()


def profile() -> str:
    """The profile the switches started from (ASYNCBIS_PROFILE or use_profile(); 'seed' if
    neither). Switches set since may differ from it."""
    return _profile


def _on_change(fn: Callable[[], None]) -> None:
    _listeners.append(fn)


def _changed() -> None:
    _core._set_core_switch("level-cancellation", enabled("level-cancellation"))
    _core._set_core_switch("scoped-timeouts", enabled("scoped-timeouts"))
    _core._set_core_switch("task-cancel-level", _values["task-cancel-level"])
    for fn in list(_listeners):
        fn()


def _from_environment() -> None:
    global _profile
    raw = os.environ.get("ASYNCBIS_PROFILE", "").strip() or "seed"
    if raw not in PROFILES:
        raise ValueError(
            f"ASYNCBIS_PROFILE names an unknown profile {raw!r}; valid profiles are: "
            f"{', '.join(PROFILES)}"
        )
    _values.update(_profile_values(raw))
    _profile = raw
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
