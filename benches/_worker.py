"""Child process of bench.py: runs one measurement (or a probe) and prints one
JSON line prefixed with ``@@RESULT``.

    python benches/_worker.py probe RUNTIME
    python benches/_worker.py run RUNTIME CASE SIZE_JSON
"""

from __future__ import annotations

import json
import os
import platform
import sys
import traceback

from _runtimes import package_versions, probe

MARK = "@@RESULT "


def _emit(obj: dict) -> None:
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "probe":
        runtime = argv[1]
        reason = probe(runtime)
        _emit(
            {
                "runtime": runtime,
                "available": reason is None,
                "reason": reason,
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "executable": sys.executable,
                "packages": package_versions(),
            }
        )
        return 0
    if len(argv) != 4 or argv[0] != "run":
        sys.stderr.write(__doc__ or "")
        return 2
    runtime, case, size = argv[1], argv[2], json.loads(argv[3])
    if isinstance(size, list):
        size = tuple(size)
    try:
        if runtime in ("trio", "anyio"):
            import _cases_structured as cases
        else:
            import _cases_asyncio as cases
        result = cases.run(runtime, case, size)
    except BaseException as exc:  # noqa: BLE001 - report, never crash the suite
        tb = traceback.format_exception(exc)
        leaf = exc
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        _emit(
            {
                "error": f"{type(leaf).__name__}: {leaf}"[:500],
                "traceback": "".join(tb)[-4000:],
            }
        )
        return 1
    result["pid"] = os.getpid()
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
