"""The activation hook imports asyncbis before pytest starts; suites that turn warnings into
errors must still run (pytest must not complain that it cannot rewrite asyncbis)."""

from __future__ import annotations

import subprocess
import sys


def test_pytest_with_warnings_as_errors_after_an_early_import(tmp_path):
    (tmp_path / "test_trivial.py").write_text("def test_ok():\n    assert True\n")
    code = (
        "import asyncbis, pytest, sys; "
        "sys.exit(pytest.main(['-W', 'error', '-q', '-p', 'no:cacheprovider', "
        "'-p', 'no:asyncio', 'test_trivial.py']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
