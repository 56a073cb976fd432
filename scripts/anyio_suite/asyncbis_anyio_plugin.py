"""pytest plugin for AnyIO's own test suite: adds the AnyIO backend "asyncbis".

Loaded with ``-p asyncbis_anyio_plugin`` (scripts/anyio_suite.sh puts this directory on
PYTHONPATH). AnyIO's tests are parametrised by the ``anyio_backend`` fixture that their
``tests/conftest.py`` defines; when that conftest is registered, this plugin replaces the
fixture with one whose parameters are the backends named in ``ANYIO_SUITE_BACKENDS``
(comma-separated; default ``asyncio,asyncbis``), so the asyncio runs stay in the same session
for comparison. Test ids keep AnyIO's form: ``test_x[asyncio]`` / ``test_x[asyncbis]``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import asyncbis  # noqa: F401  (registers anyio._backends._asyncbis)


def _uvloop_factory() -> Any:
    import uvloop

    return uvloop.new_event_loop


def _eager_factory() -> Any:
    def factory() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        return loop

    return factory


# id -> (backend name, options factory)
_BACKENDS: dict[str, tuple[str, Any]] = {
    "asyncio": ("asyncio", dict),
    "asyncio+uvloop": ("asyncio", lambda: {"loop_factory": _uvloop_factory()}),
    "asyncio+eager": ("asyncio", lambda: {"loop_factory": _eager_factory()}),
    "trio": ("trio", None),
    "asyncbis": ("asyncbis", dict),
    "asyncbis+uvloop": ("asyncbis", lambda: {"loop_factory": _uvloop_factory()}),
}


def _params() -> list[Any]:
    names = [
        n.strip() for n in os.environ.get("ANYIO_SUITE_BACKENDS", "asyncio,asyncbis").split(",")
    ]
    params = []
    for name in filter(None, names):
        if name not in _BACKENDS:
            raise pytest.UsageError(
                f"ANYIO_SUITE_BACKENDS: unknown backend {name!r}; known: {', '.join(_BACKENDS)}"
            )
        backend, options = _BACKENDS[name]
        if options is None:
            params.append(pytest.param(backend, id=name))
        else:
            # AnyIO's conftest runs asyncio with debug=True; do the same for every backend.
            params.append(pytest.param((backend, {"debug": True, **options()}), id=name))
    return params


@pytest.hookimpl(tryfirst=True)
def pytest_plugin_registered(plugin: object, manager: pytest.PytestPluginManager) -> None:
    # AnyIO's tests/conftest.py: it defines backend_params and the anyio_backend fixture.
    if not (hasattr(plugin, "backend_params") and hasattr(plugin, "anyio_backend")):
        return

    @pytest.fixture(params=_params(), name="anyio_backend")
    def anyio_backend(request: pytest.FixtureRequest) -> Any:
        return request.param

    plugin.anyio_backend = anyio_backend  # type: ignore[attr-defined]
