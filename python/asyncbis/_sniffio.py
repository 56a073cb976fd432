"""sniffio's answer inside asyncbis runners: "asyncbis" (switch sniffio-name), which also makes
AnyIO pick its "asyncbis" backend there."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from . import switches

# sniffio, imported once for every thread (None: not installed). Under a lock, and by an
# import statement rather than sys.modules: while a first run imports it, sys.modules already
# holds the half-initialised module, and another thread's first run would read its
# thread_local before it exists.
_sniffio_lock = threading.Lock()
_sniffio_module: Any = None
_sniffio_loaded = False


def _load_sniffio() -> Any:
    global _sniffio_module, _sniffio_loaded
    if not _sniffio_loaded:
        with _sniffio_lock:
            if not _sniffio_loaded:
                try:
                    import sniffio
                except ImportError:
                    sniffio = None
                _sniffio_module = sniffio
                _sniffio_loaded = True
    return _sniffio_module


@contextlib.contextmanager
def sniffio_name() -> Iterator[None]:
    """sniffio reports "asyncbis" on this thread while the loop runs (switch sniffio-name)."""
    # Never yield inside an except block: the run's exceptions would get its ImportError as
    # their context.
    sniffio = _load_sniffio()
    if sniffio is None or not switches.enabled("sniffio-name"):
        yield
        return
    from . import _anyio_alias

    _anyio_alias.install()
    local = sniffio.thread_local
    previous = getattr(local, "name", None)
    local.name = "asyncbis"
    try:
        yield
    finally:
        local.name = previous
