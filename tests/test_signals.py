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


# A signal delivered to another thread than the main one (a process-directed signal may go to
# any thread, an executor's for instance) does not interrupt the loop's select(); before the
# runner set a wakeup fd, its handler waited for the select() timeout, i.e. the longest sleep.
OTHER_THREAD = """
import asyncio, signal, sys, threading, time
import asyncbis

signals = [getattr(signal, name) for name in sys.argv[2:]]
finalising = threading.Event()

def sender():
    for n, sig in enumerate(signals):
        if n:
            finalising.wait()
        time.sleep(0.3)  # the main thread is idle in select() by then
        signal.pthread_kill(threading.get_ident(), sig)  # to this thread, not the main one

async def worker():
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        with asyncbis.CancelScope(shield=True):
            print("finalising", flush=True)
            asyncio.get_running_loop().call_soon(finalising.set)
            await asyncio.sleep(3600)
        raise

async def main():
    asyncio.create_task(worker())
    await asyncio.sleep(0.2)  # the worker is waiting; main and the loop go idle next
    threading.Thread(target=sender).start()
    await asyncio.sleep(3600)

factory = None
if sys.argv[1] == "uvloop":
    import uvloop
    factory = uvloop.new_event_loop
asyncbis.run(main(), loop_factory=factory)
"""


@pytest.mark.parametrize(
    ("signals", "expected_rc"),
    [
        (["SIGINT"], None),  # graceful: but the worker's shielded finaliser never ends
        (["SIGTERM", "SIGTERM"], -signal.SIGTERM),
        (["SIGINT", "SIGINT"], -signal.SIGINT),
    ],
)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_signal_delivered_to_another_thread_wakes_the_idle_loop(loop, signals, expected_rc):
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    proc = subprocess.Popen(
        [sys.executable, "-c", OTHER_THREAD, loop, *signals],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()  # the first signal has cancelled the root group
        assert line == "finalising\n", line + proc.communicate(timeout=30)[1]
        if expected_rc is None:
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)  # the shielded finaliser holds the process
            return
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == expected_rc, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
