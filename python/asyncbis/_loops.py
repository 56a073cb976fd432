"""get_event_loop() and the loop-policy functions (switch no-loop-policies).

With the switch on, asyncbis has no implicit loops: ``get_event_loop()`` works only inside a
running loop (where it returns that loop), and the policy functions raise. ``deprecated``: the
policy functions work and emit DeprecationWarning (what CPython 3.14 itself does), and
``get_event_loop()`` is stock. Off: stock asyncio.

3.14 deprecates the policy system (DeprecationWarning, removal planned for 3.16) and its
``get_event_loop()`` no longer creates a loop when none is set: there ``on`` previews 3.16 for
the policy functions and differs from stock only by its message for ``get_event_loop()``.

Loops a policy makes are asyncbis-ready under patch_asyncio() whatever the policy: the patched
``BaseEventLoop`` makes asyncbis tasks (in the root group of a patched
``run_until_complete()``) and applies the no-task-factory switch to ``set_task_factory()``.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from . import _stock, switches

_HOW = (
    "start the program with asyncbis.run(main()) (or asyncio.run(), patched) and call "
    "asyncio.get_running_loop() inside it; create a loop explicitly with "
    "asyncio.new_event_loop(); or turn the switch off with "
    "asyncbis.switches.disable('no-loop-policies') / ASYNCBIS_DISABLE=no-loop-policies"
)


def get_event_loop() -> asyncio.AbstractEventLoop:
    """The running loop; outside one, RuntimeError (switch no-loop-policies) or stock."""
    loop = asyncio.events._get_running_loop()
    if loop is not None:
        return loop
    if switches.value("no-loop-policies") == "on":
        raise RuntimeError(
            "asyncbis: get_event_loop() outside a running event loop is not supported "
            f"(switch no-loop-policies): {_HOW}"
        )
    return _stock.get_event_loop()


_DEPRECATED = (
    "{name}() is deprecated (asyncbis switch no-loop-policies=deprecated; CPython 3.14 "
    "deprecates it too): pass loop_factory= to asyncio.run()/asyncio.Runner instead"
)

# 3.14+: stock's public policy functions warn themselves; the private ones do not (one warning,
# ours, whose stacklevel points at the caller).
_stock_get_policy = getattr(asyncio.events, "_get_event_loop_policy", None)
_stock_set_policy = getattr(asyncio.events, "_set_event_loop_policy", None)


def get_event_loop_policy() -> Any:
    """Stock (deprecated: with a DeprecationWarning), unless the no-loop-policies switch is on
    (then RuntimeError)."""
    mode = switches.value("no-loop-policies")
    if mode == "deprecated":
        warnings.warn(
            _DEPRECATED.format(name="get_event_loop_policy"), DeprecationWarning, stacklevel=2
        )
        if _stock_get_policy is not None:
            return _stock_get_policy()
    elif mode == "on":
        raise RuntimeError(
            f"asyncbis: event loop policies are not supported (switch no-loop-policies): {_HOW}"
        )
    elif _stock_get_policy is not None:
        # Off, 3.14+: stock's own warning, pointing at our caller as stock's points at its own
        # (warnings._deprecated warns with stacklevel 3 from the function that calls it).
        warnings._deprecated("asyncio.get_event_loop_policy", remove=(3, 16))  # type: ignore[attr-defined]
        return _stock_get_policy()
    return _stock.get_event_loop_policy()


def set_event_loop_policy(policy: Any) -> None:
    """Stock (deprecated: with a DeprecationWarning), unless the no-loop-policies switch is on
    (then RuntimeError)."""
    mode = switches.value("no-loop-policies")
    if mode == "deprecated":
        warnings.warn(
            _DEPRECATED.format(name="set_event_loop_policy"), DeprecationWarning, stacklevel=2
        )
        if _stock_set_policy is not None:
            _stock_set_policy(policy)
            return
    elif mode == "on":
        raise RuntimeError(
            "asyncbis: event loop policies are not supported (switch no-loop-policies); to "
            "use another loop implementation pass loop_factory= to asyncbis.run()/Runner "
            "(e.g. loop_factory=uvloop.new_event_loop), or turn the switch off with "
            "asyncbis.switches.disable('no-loop-policies') / ASYNCBIS_DISABLE=no-loop-policies"
        )
    elif _stock_set_policy is not None:
        warnings._deprecated("asyncio.set_event_loop_policy", remove=(3, 16))  # type: ignore[attr-defined]
        _stock_set_policy(policy)
        return
    _stock.set_event_loop_policy(policy)
