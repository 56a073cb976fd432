"""The AnyIO backend "asyncbis": AnyIO's API with asyncbis's level-cancelling scopes and groups."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import subprocess
import sys
from typing import Any

import pytest

import asyncbis

anyio = pytest.importorskip("anyio")
sniffio = pytest.importorskip("sniffio")
if not hasattr(anyio, "TaskHandle"):
    pytest.skip("the asyncbis AnyIO backend needs AnyIO >= 4.14", allow_module_level=True)


def run(func: Any, *args: Any, **options: Any) -> Any:
    return anyio.run(func, *args, backend="asyncbis", backend_options=options)


def test_anyio_run_uses_asyncbis() -> None:
    async def main(x: int) -> tuple[str, bool, int]:
        task = asyncio.current_task()
        return sniffio.current_async_library(), isinstance(task, asyncbis.Task), x

    assert run(main, 5) == ("asyncbis", True, 5)


def test_anyio_code_under_asyncbis_run_gets_the_backend() -> None:
    async def main() -> tuple[str, int]:
        # AnyIO's own scope, created by AnyIO code that knows nothing about asyncbis
        delivered = 0
        with anyio.CancelScope() as scope:
            scope.cancel()
            for _ in range(2):
                try:
                    await anyio.sleep(0)
                except anyio.get_cancelled_exc_class():
                    delivered += 1
        return sniffio.current_async_library(), delivered

    # level cancellation (every checkpoint), which AnyIO's asyncio backend would not give
    # an asyncbis task that swallows its cancellation
    assert asyncbis.run(main()) == ("asyncbis", 2)


def test_level_cancellation_in_anyio_scope() -> None:
    async def main() -> list[str]:
        seen = []
        with anyio.CancelScope() as scope:
            scope.cancel("stop")
            try:
                await anyio.sleep(1)
            except anyio.get_cancelled_exc_class() as exc:
                seen.append(str(exc))
            try:
                await anyio.lowlevel.checkpoint()
            except anyio.get_cancelled_exc_class():
                seen.append("again")
                raise
        assert scope.cancelled_caught
        return seen

    first, second = run(main)
    assert "stop" in first
    assert second == "again"


def test_anyio_and_asyncbis_scopes_nest() -> None:
    async def main() -> tuple[bool, bool, float]:
        with asyncbis.CancelScope() as outer:
            with anyio.CancelScope(deadline=anyio.current_time() + 100) as inner:
                deadline = anyio.current_effective_deadline()
                outer.cancel()
                await anyio.sleep(5)
        return outer.cancelled_caught, inner.cancelled_caught, deadline

    outer_caught, inner_caught, deadline = run(main)
    assert outer_caught and not inner_caught
    assert math.isfinite(deadline)


def test_shielded_anyio_scope() -> None:
    async def main() -> list[str]:
        events = []
        with anyio.CancelScope() as outer:
            outer.cancel()
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.01)
                events.append("shielded")
            events.append("after shield")
            await anyio.sleep(0)
            events.append("not reached")
        return events

    assert run(main) == ["shielded", "after shield"]


def test_move_on_after_and_fail_after() -> None:
    async def main() -> bool:
        with anyio.move_on_after(0.02) as scope:
            await anyio.sleep(5)
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.02):
                await anyio.sleep(5)
        return scope.cancelled_caught

    assert run(main)


def test_effective_deadline() -> None:
    async def main() -> tuple[float, float, float]:
        no_deadline = anyio.current_effective_deadline()
        with anyio.move_on_after(10):
            with_deadline = anyio.current_effective_deadline() - anyio.current_time()
            with anyio.CancelScope() as scope:
                scope.cancel()
                cancelled = anyio.current_effective_deadline()
        return no_deadline, with_deadline, cancelled

    no_deadline, with_deadline, cancelled = run(main)
    assert no_deadline == math.inf
    assert 9 < with_deadline <= 10
    assert cancelled == -math.inf


def test_task_group_failure_cancels_and_groups() -> None:
    cancelled = []

    async def sleeper() -> None:
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    async def fail() -> None:
        await anyio.sleep(0.01)
        raise ValueError("boom")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            tg.start_soon(fail)

    with pytest.raises(ExceptionGroup) as info:
        run(main)
    assert [str(e) for e in info.value.exceptions] == ["boom"]
    assert cancelled == [True]


def test_body_exception_is_grouped_like_anyio() -> None:
    async def main() -> None:
        async with anyio.create_task_group():
            raise KeyError("body")

    with pytest.raises(ExceptionGroup) as info:
        run(main)
    assert [type(e) for e in info.value.exceptions] == [KeyError]


def test_spawn_into_cancelled_group_runs_to_first_yield() -> None:
    reached = []

    async def child() -> None:
        reached.append("started")
        await anyio.sleep(0)
        reached.append("not reached")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.cancel_scope.cancel()
            tg.start_soon(child)

    run(main)
    assert reached == ["started"]


def test_start_with_task_status() -> None:
    async def server(port: int, *, task_status: Any) -> None:
        task_status.started(port + 1)
        await anyio.sleep(0)

    async def failing(*, task_status: Any) -> None:
        raise OSError("before started")

    async def silent(*, task_status: Any) -> None:
        pass

    async def main() -> list[Any]:
        results: list[Any] = []
        async with anyio.create_task_group() as tg:
            results.append(await tg.start(server, 41))
            with pytest.raises(OSError, match="before started"):
                await tg.start(failing)
            with pytest.raises(RuntimeError, match="without calling task_status.started"):
                await tg.start(silent)
            handle = await tg.start(server, 1, return_handle=True)
            results.append(handle.start_value)
        return results

    assert run(main) == [42, 2]


def test_task_handles() -> None:
    async def work(x: int) -> int:
        await anyio.sleep(0)
        return x * 2

    async def main() -> tuple[int, Any]:
        async with anyio.create_task_group() as tg:
            handle = tg.start_soon(work, 21)
            forever = tg.start_soon(anyio.sleep_forever)
            value = await handle
            forever.cancel()
        return value, forever.status

    value, status = run(main)
    assert value == 42
    assert status is anyio.TaskHandle.Status.CANCELLED


def test_task_group_refuses_bad_input() -> None:
    async def main() -> None:
        tg = anyio.create_task_group()
        with pytest.raises(RuntimeError, match="not active"):
            tg.start_soon(anyio.sleep, 0)
        async with tg:
            with pytest.raises(TypeError, match="coroutine"):
                tg.start_soon(lambda: None)  # type: ignore[arg-type,return-value]
        with pytest.raises(RuntimeError, match="more than once"):
            async with tg:
                pass

    run(main)


def test_unknown_backend_option_is_refused() -> None:
    async def main() -> None:
        pass

    with pytest.raises(TypeError, match="unknown backend option"):
        run(main, use_uvlop=True)


def test_worker_threads_see_cancellation() -> None:
    def in_thread(started: Any) -> str:
        anyio.from_thread.run_sync(started.set)
        while True:
            try:
                anyio.from_thread.check_cancelled()
                # a call back into the loop runs in the caller's scope: cancelled with it
                anyio.from_thread.run(anyio.sleep, 0.001)
            except (asyncio.CancelledError, concurrent.futures.CancelledError):
                return "saw the cancellation"

    async def main() -> tuple[int, str]:
        value = await anyio.to_thread.run_sync(lambda: 6 * 7)
        started = anyio.Event()
        result = ""

        async def call() -> None:
            nonlocal result
            result = await anyio.to_thread.run_sync(in_thread, started)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await started.wait()
            tg.cancel_scope.cancel()
        return value, result

    assert run(main) == (42, "saw the cancellation")


def test_from_thread_run_keeps_the_backend() -> None:
    async def library() -> str:
        return sniffio.current_async_library()

    async def main() -> str:
        return await anyio.to_thread.run_sync(anyio.from_thread.run, library)

    assert run(main) == "asyncbis"


def test_tcp_echo_and_cancelled_receive() -> None:
    async def main() -> tuple[bytes, bool]:
        async def handle(stream: Any) -> None:
            async with stream:
                await stream.send(await stream.receive())

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(b"ping")
                echoed = await client.receive()
            async with await anyio.connect_tcp("127.0.0.1", port) as idle:
                with anyio.move_on_after(0.05) as scope:
                    await idle.receive()  # the server waits for us: nothing arrives
            tg.cancel_scope.cancel()
        return echoed, scope.cancelled_caught

    assert run(main) == (b"ping", True)


def test_subprocess() -> None:
    async def main() -> bytes:
        result = await anyio.run_process(
            [sys.executable, "-c", "import sys; print(sys.stdin.read().upper(), end='')"],
            input=b"abc",
        )
        return result.stdout

    assert run(main) == b"ABC"


def test_get_current_task_parent() -> None:
    async def child(parent_id: int, seen: list[bool]) -> None:
        seen.append(anyio.get_current_task().parent_id == parent_id)

    async def main() -> list[bool]:
        seen: list[bool] = []
        me = anyio.get_current_task()
        async with anyio.create_task_group() as tg:
            tg.start_soon(child, me.id, seen)
        return seen

    assert run(main) == [True]


def test_uvloop_backend_option() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> type:
        return type(asyncio.get_running_loop())

    assert run(main, use_uvloop=True) is uvloop.Loop
    assert run(main, loop_factory=uvloop.new_event_loop) is uvloop.Loop


def test_pytest_plugin_backend_name(tmp_path: Any) -> None:
    (tmp_path / "test_it.py").write_text(
        """
import asyncio
import pytest
import sniffio
import asyncbis

pytestmark = pytest.mark.anyio

@pytest.fixture
def anyio_backend():
    return "asyncbis"

async def test_on_asyncbis():
    assert sniffio.current_async_library() == "asyncbis"
    assert isinstance(asyncio.current_task(), asyncbis.Task)
"""
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "anyio",
            "-p",
            "no:asyncio",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_it.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
