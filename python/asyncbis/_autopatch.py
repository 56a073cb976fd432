"""Activation for whole test runs: imported at start-up by ``asyncbis-autopatch.pth`` (and by
the pytest plugin) when ``ASYNCBIS_AUTOPATCH=1``. Patches asyncio and, with
``ASYNCBIS_STATS_DIR``, writes the process's stats file at exit."""

from __future__ import annotations

import os


def activate() -> bool:
    """Patch asyncio if ASYNCBIS_AUTOPATCH=1; returns whether it did."""
    if os.environ.get("ASYNCBIS_AUTOPATCH") != "1":
        return False
    from . import _patch, _stats, patch_asyncio

    patch_asyncio()
    # Modules imported before us (other pytest plugins) may hold stock names already.
    _patch.rebind_imported()
    if os.environ.get("ASYNCBIS_STATS_DIR"):
        _stats.enable_at_exit()
    return True


activate()
