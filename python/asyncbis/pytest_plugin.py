"""pytest plugin (entry point ``asyncbis``): inert unless ASYNCBIS_AUTOPATCH=1, then asyncio is
patched onto asyncbis as soon as pytest loads its plugins (before conftest files and test
modules are imported), for environments without the .pth file."""

from __future__ import annotations

import os

if os.environ.get("ASYNCBIS_AUTOPATCH") == "1":
    from . import _autopatch  # noqa: F401  (patches on import)
