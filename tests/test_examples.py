"""The demos in examples/ and the README's example run and show what they claim."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

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


def test_readme_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    found = re.search(
        r"^## What changes compared to asyncio\n\n```python\n(.*?)^```", readme, re.S | re.M
    )
    assert found, "README.md: no python example under 'What changes compared to asyncio'"
    script = tmp_path / "readme_example.py"
    script.write_text(found.group(1))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n") == [
        "worker 1 cancelled",
        "worker 2 cancelled",
        "timed out",
        "",
    ]
