"""``python -m asyncbis script.py [args]`` (or ``-m module [args]``): run a program with
asyncio patched onto asyncbis (see patch_asyncio())."""

from __future__ import annotations

import runpy
import sys

USAGE = "usage: python -m asyncbis script.py [args...] | -m module [args...]"


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        sys.exit(2 if not args else 0)
    from . import _stats, patch_asyncio

    patch_asyncio()
    _stats.enable_at_exit()
    if args[0] == "-m":
        if len(args) < 2:
            print(USAGE, file=sys.stderr)
            sys.exit(2)
        sys.argv = args[1:]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
