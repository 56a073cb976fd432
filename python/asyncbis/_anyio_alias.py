"""Make ``anyio._backends._asyncbis`` importable: AnyIO's backend "asyncbis".

AnyIO picks its backend module from the backend name (``anyio.run(..., backend="asyncbis")``)
or from sniffio's answer (``anyio._backends._<name>``); inside asyncbis loops sniffio reports
"asyncbis" (switch sniffio-name). ``install()`` (called when asyncbis is imported) adds a
meta-path finder that answers that one module name with ``asyncbis._anyio_backend``; AnyIO
itself is imported only when something asks for the backend.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import Any

_NAME = "anyio._backends._asyncbis"
_IMPLEMENTATION = "asyncbis._anyio_backend"


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return importlib.import_module(_IMPLEMENTATION)

    def exec_module(self, module: Any) -> None:
        pass


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != _NAME:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader())


_finder = _Finder()


def install() -> None:
    """Register the finder (idempotent)."""
    if _finder not in sys.meta_path:
        sys.meta_path.append(_finder)
