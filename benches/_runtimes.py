"""Runtime descriptions shared by the driver (bench.py) and the child (_worker.py).

A *runtime* is an event loop plus the primitives used on it. Each one names the
runtime that its ratios are computed against (stock asyncio on the same loop).
"""

from __future__ import annotations

import importlib
import importlib.metadata

# name -> (baseline for ratios, description)
RUNTIMES: dict[str, tuple[str | None, str]] = {
    "asyncio": (None, "stock asyncio.run + asyncio primitives"),
    "asyncbis": ("asyncio", "asyncbis.run + asyncbis primitives"),
    "anyio": ("asyncio", "anyio.run (asyncio backend) + anyio primitives"),
    "trio": ("asyncio", "trio.run + trio primitives"),
    "uvloop": ("asyncio", "stock asyncio on uvloop (asyncio.Runner loop_factory)"),
    "asyncbis-uvloop": ("uvloop", "asyncbis.run(loop_factory=uvloop.new_event_loop)"),
    "rloop": ("asyncio", "stock asyncio on rloop (asyncio.Runner loop_factory)"),
    "asyncbis-rloop": ("rloop", "asyncbis.run(loop_factory=rloop.new_event_loop)"),
    "rsloop": ("asyncio", "stock asyncio on rsloop (built from its sdist; docs/loops.md)"),
    "asyncbis-rsloop": ("rsloop", "asyncbis.run(loop_factory=rsloop.new_event_loop)"),
}

# modules each runtime needs, in import order
REQUIRES: dict[str, tuple[str, ...]] = {
    "asyncio": (),
    "asyncbis": ("asyncbis",),
    "anyio": ("anyio",),
    "trio": ("trio",),
    "uvloop": ("uvloop",),
    "asyncbis-uvloop": ("asyncbis", "uvloop"),
    "rloop": ("rloop",),
    "asyncbis-rloop": ("asyncbis", "rloop"),
    "rsloop": ("rsloop",),
    "asyncbis-rsloop": ("asyncbis", "rsloop"),
}

# attributes the benchmark uses from asyncbis (docs/architecture.md contract)
ASYNCBIS_API = ("run", "TaskGroup", "CancelScope", "timeout", "sleep")

# distributions whose versions are recorded
PACKAGES = ("asyncbis", "anyio", "trio", "uvloop", "rloop", "rsloop", "sniffio", "outcome")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def probe(runtime: str) -> str | None:
    """Return None when ``runtime`` can run here, else the reason it cannot."""
    if runtime not in RUNTIMES:
        return f"unknown runtime {runtime!r}"
    for mod in REQUIRES[runtime]:
        try:
            module = importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - any import failure means n/a
            return f"import {mod} failed: {type(exc).__name__}: {exc}"
        if mod == "asyncbis":
            missing = [a for a in ASYNCBIS_API if not hasattr(module, a)]
            if missing:
                return "asyncbis lacks " + ", ".join(missing)
    return None
