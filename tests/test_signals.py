"""Shutdown by signal (switch graceful-signals): real signals sent to subprocesses.

The program (examples/signals_demo.py) is idle in the loop when the signal arrives, so these
also check that a signal wakes an idle loop (the prototype hung on 3.11/3.12, DESIGN §4.4).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

DEMO = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "signals_demo.py")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def start(finalise: float, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, DEMO, str(finalise)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), line + proc.stderr.read()
    time.sleep(0.2)  # let the loop go idle in select()
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_cancels_root_group_and_shielded_finalisers_complete(sig):
    proc = start(0.3)
    proc.send_signal(sig)
    rc, out, err = finish(proc)
    assert out.count("finalised") == 2, out + err
    assert "main: leaving" in out
    if sig == signal.SIGINT:
        # an uncaught KeyboardInterrupt ends Python by SIGINT (exit status -2 / 130)
        assert rc == -signal.SIGINT and err.rstrip().endswith("KeyboardInterrupt"), err
    else:
        assert rc == -signal.SIGTERM, (rc, err)


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_second_signal_is_a_hard_shutdown(second):
    proc = start(30)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    while "cancelled" not in proc.stdout.readline():  # the workers are finalising now
        pass
    proc.send_signal(second)
    rc, out, err = finish(proc)
    assert "finalised" not in out
    if second == signal.SIGTERM:
        assert rc == -signal.SIGTERM  # a second SIGTERM is not ignored (prototype bug)
    else:
        assert rc == -signal.SIGINT and "KeyboardInterrupt" in err


def test_switch_off_gives_stock_behaviour():
    # Stock Runner: SIGINT cancels the main task only (background tasks are cancelled at
    # close, without being able to finish a shielded finaliser... they still can: the scope
    # is shielded), and SIGTERM kills at once.
    proc = start(0.3, env={"ASYNCBIS_DISABLE": "graceful-signals"})
    proc.send_signal(signal.SIGTERM)
    rc, out, _ = finish(proc)
    assert rc == -signal.SIGTERM and "main: leaving" not in out

    proc = start(0.3, env={"ASYNCBIS_DISABLE": "graceful-signals"})
    proc.send_signal(signal.SIGINT)
    rc, out, err = finish(proc)
    assert rc == -signal.SIGINT and "KeyboardInterrupt" in err and "main: leaving" in out
