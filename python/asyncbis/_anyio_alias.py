"""Keep AnyIO working while sniffio reports "asyncbis".

AnyIO picks its backend module from sniffio's answer (``anyio._backends._<name>``). Until
asyncbis ships its own AnyIO backend, ``anyio._backends._asyncbis`` is AnyIO's asyncio backend
(which then runs on asyncbis tasks).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import Any

_NAME = "anyio._backends._asyncbis"


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return importlib.import_module("anyio._backends._asyncio")

    def exec_module(self, module: Any) -> None:
        pass


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != _NAME:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader())


_finder = _Finder()


def install() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.append(_finder)
