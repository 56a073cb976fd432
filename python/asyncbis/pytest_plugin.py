"""pytest plugin: inert unless ASYNCBIS_AUTOPATCH=1 (then asyncio runs on asyncbis)."""
