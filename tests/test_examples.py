"""The demos in examples/ run and show what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "level_cancellation.py": ["attempt 3: CancelledError (swallowed)", "cancelled_caught=True"],
    "shielding.py": ["worker finaliser: state saved", "shielded call: state saved"],
    "timeouts.py": ["TimeoutError (expired=True)", "inner TimeoutError", "outer expired=False"],
    "spawn_after_cancel.py": [
        "child 2: cancelled at its first await",
        "run() raised ValueError('background task failed')",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for line in EXPECTED[name]:
        assert line in proc.stdout
