"""Compare AnyIO's test results per backend from a JUnit XML file.

    python compare.py results.xml [known_differences.txt]

Counts passed/failed/skipped per backend (the ``[...]`` parameter id ``asyncio`` or
``asyncbis``), and lists every test that passed on asyncio but not on asyncbis. Tests named in
the known-differences file (one node id, with ``asyncbis`` in it, per line; ``#`` comments)
are reported separately; any other regression makes the exit status 1.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REFERENCE, CANDIDATE = "asyncio", "asyncbis"
_TOKEN = re.compile(r"(?<=[\[\-])(asyncio|asyncbis)(?=[\]\-])")


def outcomes(path: Path) -> dict[str, str]:
    result: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                status = "failed"
                break
            if child.tag == "skipped":
                status = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        # setup and call errors of one test appear as separate entries: keep the worst
        if result.get(name) != "failed":
            result[name] = status
    return result


def backend_of(name: str) -> str | None:
    m = _TOKEN.search(name)
    return m.group(1) if m else None


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    results = outcomes(Path(argv[0]))
    known: set[str] = set()
    if len(argv) == 2 and Path(argv[1]).exists():
        for line in Path(argv[1]).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                known.add(line)
    counts: dict[str, Counter[str]] = {REFERENCE: Counter(), CANDIDATE: Counter()}
    for name, status in results.items():
        b = backend_of(name)
        if b in counts:
            counts[b][status] += 1
    for b, c in counts.items():
        print(
            f"{b:9s} "
            + "  ".join(f"{k} {c[k]}" for k in ("passed", "failed", "skipped", "xfailed"))
        )
    regressions, expected = [], []
    for name, status in sorted(results.items()):
        if backend_of(name) != CANDIDATE or status in ("passed", "xfailed"):
            continue
        reference = _TOKEN.sub(REFERENCE, name)
        if results.get(reference) != "passed":
            continue
        short = name.split("::", 1)[1] if "::" in name else name
        (expected if (name in known or short in known) else regressions).append(name)
    only_reference = 0
    for name, status in results.items():
        if backend_of(name) != REFERENCE or status != "passed":
            continue
        twins = [
            name[: m.start()] + CANDIDATE + name[m.end() :]
            for m in _TOKEN.finditer(name)
            if m.group(1) == REFERENCE
        ]
        if not any(t in results for t in twins):
            only_reference += 1
    print(
        f"passed on {REFERENCE} in tests that exist only for it (e.g. anyio_backend fixed to "
        f"'asyncio', asyncio-native behaviour): {only_reference}"
    )
    print(
        f"passed on {REFERENCE} but not on {CANDIDATE}: {len(regressions) + len(expected)} "
        f"({len(expected)} listed as known differences)"
    )
    for name in regressions:
        print(f"  REGRESSION {name}")
    stale = sorted(k for k in known if not any(k in (n, n.split("::", 1)[-1]) for n in expected))
    for name in stale:
        print(f"  (listed but not failing: {name})")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
