"""get_event_loop() and the loop-policy functions (switch no-loop-policies).

With the switch on, asyncbis has no implicit loops: ``get_event_loop()`` works only inside a
running loop (where it returns that loop), and the policy functions raise. Off: stock asyncio.
"""

from __future__ import annotations

import asyncio
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
    if switches.enabled("no-loop-policies"):
        raise RuntimeError(
            "asyncbis: get_event_loop() outside a running event loop is not supported "
            f"(switch no-loop-policies): {_HOW}"
        )
    return _stock.get_event_loop()


def get_event_loop_policy() -> Any:
    """Stock, unless the no-loop-policies switch is on (then RuntimeError)."""
    if switches.enabled("no-loop-policies"):
        raise RuntimeError(
            f"asyncbis: event loop policies are not supported (switch no-loop-policies): {_HOW}"
        )
    return _stock.get_event_loop_policy()


def set_event_loop_policy(policy: Any) -> None:
    """Stock, unless the no-loop-policies switch is on (then RuntimeError)."""
    if switches.enabled("no-loop-policies"):
        raise RuntimeError(
            "asyncbis: event loop policies are not supported (switch no-loop-policies); to "
            "use another loop implementation pass loop_factory= to asyncbis.run()/Runner "
            "(e.g. loop_factory=uvloop.new_event_loop), or turn the switch off with "
            "asyncbis.switches.disable('no-loop-policies') / ASYNCBIS_DISABLE=no-loop-policies"
        )
    _stock.set_event_loop_policy(policy)
