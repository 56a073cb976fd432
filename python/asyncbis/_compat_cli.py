"""Console entry point of the breakage study (the tool itself is Rust, in asyncbis._core)."""

import sys

from . import _core


def main() -> None:
    sys.exit(_core.compat_main(sys.argv[1:]))
