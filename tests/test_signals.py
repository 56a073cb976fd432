"""Shutdown by signal (switch graceful-signals): real signals sent to subprocesses.

The program (examples/signals_demo.py) is idle in the loop when the signal arrives, so these
also check that a signal wakes an idle loop (an early version hung there on 3.11/3.12).

Every child is started through ``PRELUDE``, which gives SIGINT and SIGTERM their default
dispositions back: a process started with SIGINT ignored (a background job, nohup, some CI
runners) passes that on, and Python then installs no KeyboardInterrupt handler, so neither
asyncbis nor the stock Runner would take the signal over. Every child is killed at the end of
its test, whatever the outcome. Instead of sleeping, the tests wait until the child's main
thread is blocked in the loop's selector (Linux: /proc/<pid>/task/<tid>/wchan).
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

DEMO = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "signals_demo.py")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def thread_is_idle_in_selector(pid: int, tid: int) -> bool | None:
    """Whether thread ``tid`` of process ``pid`` sleeps in a selector (an idle event loop);
    None where that cannot be seen (no /proc). A running thread's wait channel is "0"."""
    try:
        with open(f"/proc/{pid}/task/{tid}/wchan") as f:
            wchan = f.read()
    except OSError:
        return None
    return any(name in wchan for name in ("epoll", "select", "poll"))


def wait_until_idle_in_selector(pid: int, tid: int, alive=lambda: True) -> None:
    import time

    for _ in range(2000):  # a kernel that hides wait channels: go on after 10 s
        idle = thread_is_idle_in_selector(pid, tid)
        if idle is None:
            time.sleep(0.3)  # cannot be seen: give the loop time to go idle
            return
        if idle or not alive():
            return
        time.sleep(0.005)


# The children use the same probe (OTHER_THREAD waits for its own main thread).
IDLE_PROBE = "\n".join(
    inspect.getsource(f) for f in (thread_is_idle_in_selector, wait_until_idle_in_selector)
)

PRELUDE = (
    "import signal\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n" + IDLE_PROBE
)

RUN_DEMO = "import runpy, sys\nsys.argv[0] = DEMO\nrunpy.run_path(DEMO, run_name='__main__')\n"

Spawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Starts ``python -c PRELUDE+code args...``; kills whatever is left at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def start_demo(spawn: Spawn, finalise: float, env: dict[str, str] | None = None):
    proc = spawn(f"DEMO = {DEMO!r}\n" + RUN_DEMO, str(finalise), env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), line + proc.communicate(timeout=30)[1]
    wait_until_idle_in_selector(proc.pid, proc.pid, lambda: proc.poll() is None)
    return proc


def read_until(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:  # the child ended first
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"the child ended (status {proc.returncode}) before {text!r}: {err}")
        if text in line:
            return


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_cancels_root_group_and_shielded_finalisers_complete(spawn, sig):
    proc = start_demo(spawn, 0.3)
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
def test_second_signal_is_a_hard_shutdown(spawn, second):
    proc = start_demo(spawn, 3600)
    proc.send_signal(signal.SIGINT)
    read_until(proc, "cancelled")  # the workers are finalising now
    proc.send_signal(second)
    rc, out, err = finish(proc)
    assert "finalised" not in out
    if second == signal.SIGTERM:
        assert rc == -signal.SIGTERM  # a second SIGTERM is not ignored (prototype bug)
    else:
        assert rc == -signal.SIGINT and "KeyboardInterrupt" in err


def test_switch_off_gives_stock_behaviour(spawn):
    # Stock Runner: SIGINT cancels the main task only (background tasks are cancelled at
    # close, without being able to finish a shielded finaliser... they still can: the scope
    # is shielded), and SIGTERM kills at once.
    proc = start_demo(spawn, 0.3, env={"ASYNCBIS_DISABLE": "graceful-signals"})
    proc.send_signal(signal.SIGTERM)
    rc, out, _ = finish(proc)
    assert rc == -signal.SIGTERM and "main: leaving" not in out

    proc = start_demo(spawn, 0.3, env={"ASYNCBIS_DISABLE": "graceful-signals"})
    proc.send_signal(signal.SIGINT)
    rc, out, err = finish(proc)
    assert rc == -signal.SIGINT and "KeyboardInterrupt" in err and "main: leaving" in out


def test_children_take_sigint_even_when_the_test_process_ignores_it(spawn):
    # What a background job, nohup or a CI runner does to the test process: children inherit
    # the ignored SIGINT. Before PRELUDE, each case waited out its 30 s timeouts and left the
    # demo running.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = start_demo(spawn, 0.1)
    finally:
        signal.signal(signal.SIGINT, previous)
    proc.send_signal(signal.SIGINT)
    rc, out, err = finish(proc)
    assert rc == -signal.SIGINT and out.count("finalised") == 2, (rc, out, err)


# A signal delivered to another thread than the main one (a process-directed signal may go to
# any thread, an executor's for instance) does not interrupt the loop's select(); before the
# runner set a wakeup fd, its handler waited for the select() timeout, i.e. the longest sleep.
OTHER_THREAD = """
import asyncio, os, sys, threading
import asyncbis

signals = [getattr(signal, name) for name in sys.argv[2:]]
finalising = threading.Event()
main_tid = threading.main_thread().native_id

def sender():
    for n, sig in enumerate(signals):
        if n:
            finalising.wait()
        wait_until_idle_in_selector(os.getpid(), main_tid)
        signal.pthread_kill(threading.get_ident(), sig)  # to this thread, not the main one
    if len(signals) == 1:
        finalising.wait()
        wait_until_idle_in_selector(os.getpid(), main_tid)
        print("idle while finalising", flush=True)

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
    await asyncio.sleep(0)  # the worker is waiting; main and the loop go idle next
    threading.Thread(target=sender, daemon=True).start()
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
def test_signal_delivered_to_another_thread_wakes_the_idle_loop(spawn, loop, signals, expected_rc):
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    proc = spawn(OTHER_THREAD, loop, *signals)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the first signal has cancelled the root group
    assert line == "finalising\n", line + proc.communicate(timeout=30)[1]
    if expected_rc is None:
        # The loop went idle again with the shielded finaliser pending: run() did not end.
        assert proc.stdout.readline() == "idle while finalising\n"
        assert proc.poll() is None
        return
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == expected_rc, err


def test_idle_probe_sees_a_sleeping_selector():
    # The probe the tests synchronise on: a child blocked in select() is seen as idle.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import select; print('go', flush=True); select.select([], [], [], 60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "go\n"
        if thread_is_idle_in_selector(proc.pid, proc.pid) is None:
            pytest.skip("no /proc here")
        while not thread_is_idle_in_selector(proc.pid, proc.pid):
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
