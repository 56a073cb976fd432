"""An asyncio event loop with virtual time, for deterministic and instant deadline tests.

``loop.time()`` returns a counter that starts at 0.0. The loop never really waits: when
``BaseEventLoop._run_once`` has nothing ready and would block in ``selector.select(timeout)``
until the next timer, our selector polls the real selector without blocking and, if nothing
is ready, advances the counter by ``timeout`` instead — so the next timer is due at once.
(``_run_once`` computes ``timeout`` as the next timer's ``when - time()``, capped at one day,
and then runs every timer whose ``when`` is below ``time() + _clock_resolution``.)

Use it as ``asyncbis.run(main(), loop_factory=VirtualClockLoop)``.

``VirtualClockLoop(shuffle_seed=n)`` also runs the callbacks that are ready at the same
moment in a (seeded) random order instead of FIFO, like Trio does with its tasks: the
conformance comparison uses it to tell scheduling-order effects from semantic differences.
"""

from __future__ import annotations

import asyncio
import random
import selectors


class VirtualClockDeadlock(RuntimeError):
    """Nothing is ready and no timer is scheduled: the program would wait forever."""


class _VirtualTimeSelector(selectors.DefaultSelector):
    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            # Only another thread could wake us (call_soon_threadsafe): give it a real second.
            ready = super().select(1.0)
            if not ready:
                raise VirtualClockDeadlock("nothing is ready and no timer is scheduled")
            return ready
        self._loop.advance(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock only moves when the loop would otherwise wait."""

    # Far below any duration the conformance programs use (2**-23 s), far above float noise.
    CLOCK_RESOLUTION = 2.0**-30

    def __init__(self, shuffle_seed: int | None = None) -> None:
        self._virtual_now = 0.0
        self._shuffle = None if shuffle_seed is None else random.Random(shuffle_seed)
        super().__init__(selector=_VirtualTimeSelector(self))
        self._clock_resolution = self.CLOCK_RESOLUTION

    def _run_once(self) -> None:
        ready = self._ready  # BaseEventLoop's deque of ready handles
        if self._shuffle is not None and len(ready) > 1:
            batch = list(ready)
            self._shuffle.shuffle(batch)
            ready.clear()
            ready.extend(batch)
        super()._run_once()

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move virtual time forward (never backward)."""
        if seconds > 0:
            self._virtual_now += seconds
