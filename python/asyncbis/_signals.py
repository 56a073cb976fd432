"""Shutdown by signal (switch ``graceful-signals``, on by default), as a Runner installs it for
one run: the first SIGINT or SIGTERM cancels the root task group, so every task sees
CancelledError at its next yield point and shielded finalisers run to completion; the second
SIGINT or SIGTERM is a hard shutdown (KeyboardInterrupt raised wherever the loop is, or death
by SIGTERM). After a graceful SIGINT, run() raises KeyboardInterrupt; after a graceful SIGTERM
the runner closes its loop and the process ends the way a SIGTERM-killed process does (the
default handler is restored and the signal re-raised: exit status -15 / 143; atexit handlers
do not run, exactly as for a plain SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import _stats

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalWakeup:
    """A wakeup fd (``signal.set_wakeup_fd``) that wakes the loop when a signal arrives.

    A Python-level signal handler runs in the main thread at its next bytecode. If the main
    thread is blocked in the loop's select() when the signal comes, that is at once only if the
    syscall is interrupted, which it is not when the signal is delivered to another thread (a
    process-directed signal may go to any thread: an executor's, for instance) or arrives just
    before the main thread enters select(): then the handler waits for the select() timeout,
    which is as long as the longest sleep (the first or second Ctrl+C seemed ignored). The C
    handler writes the signal number to the wakeup fd; the loop reads it and the handler runs.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, rsock: Any, wsock: Any) -> None:
        self._loop = loop
        self._rsock = rsock
        self._wsock = wsock

    @classmethod
    def start(cls, loop: asyncio.AbstractEventLoop) -> SignalWakeup | None:
        """Install one, unless a wakeup fd is set already (loop.add_signal_handler() sets the
        loop's own, which wakes it as well) or the loop cannot watch a socket."""
        import socket

        rsock, wsock = socket.socketpair()
        rsock.setblocking(False)
        wsock.setblocking(False)
        try:
            loop.add_reader(rsock.fileno(), cls._drain, rsock)
        except (NotImplementedError, RuntimeError, ValueError):
            rsock.close()
            wsock.close()
            return None
        try:
            previous = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
        except ValueError:  # not the main thread of the main interpreter
            previous = -1
            ours = False
        else:
            ours = previous == -1
            if not ours:
                signal.set_wakeup_fd(previous)
        if not ours:
            loop.remove_reader(rsock.fileno())
            rsock.close()
            wsock.close()
            return None
        return cls(loop, rsock, wsock)

    @staticmethod
    def _drain(rsock: Any) -> None:
        with contextlib.suppress(OSError):
            while rsock.recv(4096):
                pass

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            current = signal.set_wakeup_fd(-1)
            if current != self._wsock.fileno():  # someone replaced ours meanwhile: keep theirs
                signal.set_wakeup_fd(current)
        if not self._loop.is_closed():
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._rsock.fileno())
        self._rsock.close()
        self._wsock.close()


class ShutdownSignals:
    """The SIGINT/SIGTERM handlers of one run. The first signal is remembered in ``received``
    and calls ``cancel(signum)`` from the loop; a second one calls ``hard_shutdown(signum)``
    and raises KeyboardInterrupt."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        cancel: Callable[[int], None],
        hard_shutdown: Callable[[int], None],
    ) -> None:
        self.received: int | None = None
        self._loop = loop
        self._cancel = cancel
        self._hard_shutdown = hard_shutdown
        self._active = False
        self._installed: dict[int, Any] = {}
        self._wakeup: SignalWakeup | None = None

    def install(self) -> None:
        self._active = True
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            current = signal.getsignal(sig)
            # Like the stock Runner: only take over signals nobody else handles.
            if sig == signal.SIGINT and current is not signal.default_int_handler:
                continue
            if sig == signal.SIGTERM and current != signal.SIG_DFL:
                continue
            try:
                signal.signal(sig, self._on_signal)
            except ValueError:  # embedded interpreter without signal support
                continue
            self._installed[sig] = current
        if self._installed:
            self._wakeup = SignalWakeup.start(self._loop)

    def restore(self) -> None:
        self._active = False
        for sig, previous in self._installed.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._installed = {}
        if self._wakeup is not None:
            self._wakeup.stop()
            self._wakeup = None

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.received is None and self._active:
            self.received = signum
            # Cancel from the loop (never from inside a signal handler), and wake the loop if
            # it is idle in select(): call_soon_threadsafe writes to its self-pipe.
            self._loop.call_soon_threadsafe(self._cancel, signum)
            return
        # The second signal: hard shutdown.
        self._hard_shutdown(signum)
        raise KeyboardInterrupt()


def die_by_sigterm(close: Callable[[], None]) -> None:
    """Ends the process as a SIGTERM does, after ``close()`` (the runner's loop)."""
    try:
        close()
    finally:
        _stats.write()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        os._exit(128 + signal.SIGTERM)  # not reached unless SIGTERM is blocked
