"""The key asyncbis semantics on every installed event loop implementation.

``asyncbis.run(main, loop_factory=...)`` puts the asyncbis task machinery on the loop object
itself, so any asyncio loop works: the stock loop, uvloop, rloop, rsloop. Each test runs once
per loop factory; a loop that is not installed is skipped. See docs/loops.md.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

import asyncbis


def _factory(module: str, attribute: str = "new_event_loop") -> Any:
    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError:
        return None


_LOOPS: list[tuple[str, Any]] = [
    ("asyncio", asyncio.new_event_loop),
    ("uvloop", _factory("uvloop")),
    ("rloop", _factory("rloop")),
    ("rsloop", _factory("rsloop")),
]


@pytest.fixture(
    params=[
        pytest.param(
            factory,
            id=name,
            marks=[pytest.mark.skip(reason=f"{name} is not installed")] if factory is None else [],
        )
        for name, factory in _LOOPS
    ]
)
def loop_factory(request: pytest.FixtureRequest) -> Callable[[], asyncio.AbstractEventLoop]:
    return request.param


def run(main: Any, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> Any:
    return asyncbis.run(main, loop_factory=loop_factory)


def test_runs_on_the_requested_loop(loop_factory: Any) -> None:
    expected = type(loop_factory())

    async def main() -> tuple[type, bool]:
        loop = asyncio.get_running_loop()
        return type(loop), isinstance(asyncio.current_task(), asyncbis.Task)

    loop_type, is_asyncbis_task = run(main(), loop_factory)
    assert loop_type is expected
    assert is_asyncbis_task


def test_level_cancellation(loop_factory: Any) -> None:
    async def main() -> int:
        delivered = 0
        with asyncbis.CancelScope() as scope:
            scope.cancel()
            for _ in range(3):
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    delivered += 1
            await asyncio.sleep(0)  # the fourth one reaches the scope, which absorbs it
        assert scope.cancelled_caught
        return delivered

    assert run(main(), loop_factory) == 3


def test_shield_blocks_outer_cancellation(loop_factory: Any) -> None:
    async def main() -> list[str]:
        events = []
        with asyncbis.CancelScope() as outer:
            outer.cancel()
            with asyncbis.CancelScope(shield=True):
                await asyncio.sleep(0.01)
                events.append("shielded sleep finished")
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                events.append("cancelled after the shield")
                raise
        return events

    assert run(main(), loop_factory) == ["shielded sleep finished", "cancelled after the shield"]


def test_timeouts(loop_factory: Any) -> None:
    async def main() -> None:
        with asyncbis.move_on_after(0.02) as scope:
            await asyncio.sleep(5)
        assert scope.cancelled_caught

        with pytest.raises(TimeoutError):
            with asyncbis.fail_after(0.02):
                await asyncio.sleep(5)

        with pytest.raises(TimeoutError):
            async with asyncbis.timeout(0.02):
                await asyncio.sleep(5)

        # a timer re-armed to a later deadline does not fire early
        with asyncbis.move_on_after(0.01) as scope:
            scope.deadline = asyncio.get_running_loop().time() + 0.05
            await asyncio.sleep(0.03)
        assert not scope.cancelled_caught

    run(main(), loop_factory)


def test_task_group_failure_cancels_siblings(loop_factory: Any) -> None:
    sibling_cancelled = False

    async def fail() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    async def sibling() -> None:
        nonlocal sibling_cancelled
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            sibling_cancelled = True
            raise

    async def main() -> None:
        async with asyncbis.TaskGroup() as tg:
            tg.create_task(fail())
            tg.create_task(sibling())

    with pytest.raises(BaseExceptionGroup) as info:
        run(main(), loop_factory)
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert sibling_cancelled


def test_spawn_after_cancel(loop_factory: Any) -> None:
    reached: list[str] = []

    async def child() -> None:
        reached.append("first step")
        await asyncio.sleep(0)
        reached.append("after the first yield")

    async def main() -> None:
        async with asyncbis.TaskGroup() as tg:
            tg.cancel()
            tg.create_task(child())

    run(main(), loop_factory)
    assert reached == ["first step"]


def test_start_returns_the_started_value(loop_factory: Any) -> None:
    async def server(*, task_status: Any) -> None:
        task_status.started("ready")
        await asyncio.sleep(0)

    async def main() -> Any:
        async with asyncbis.TaskGroup() as tg:
            return await tg.start(server)

    assert run(main(), loop_factory) == "ready"


def test_tcp_echo(loop_factory: Any) -> None:
    async def main() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        with asyncbis.fail_after(5):
            data = await reader.readexactly(5)
        writer.close()
        server.close()
        await server.wait_closed()
        return data

    assert run(main(), loop_factory) == b"hello"


def test_cancelled_socket_read_is_cancelled(loop_factory: Any) -> None:
    async def main() -> bool:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with asyncbis.move_on_after(0.05) as scope:
            await reader.read(1)  # the server never writes
        writer.close()
        server.close()
        await server.wait_closed()
        return scope.cancelled_caught

    assert run(main(), loop_factory)


def test_subprocess(loop_factory: Any) -> None:
    async def main() -> tuple[bytes, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; sys.stdout.write(sys.stdin.read().upper())",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        with asyncbis.fail_after(20):
            out, _ = await proc.communicate(b"abc")
        return out, proc.returncode or 0

    assert run(main(), loop_factory) == (b"ABC", 0)


def test_to_thread(loop_factory: Any) -> None:
    async def main() -> tuple[int, bool]:
        main_thread = threading.get_ident()
        ident = await asyncio.to_thread(threading.get_ident)
        value = await asyncio.to_thread(sum, [1, 2, 3])
        return value, ident != main_thread

    assert run(main(), loop_factory) == (6, True)


def test_background_task_failure_reaches_run(loop_factory: Any) -> None:
    async def background() -> None:
        await asyncio.sleep(0)
        raise LookupError("from the background")

    async def main() -> None:
        asyncio.create_task(background())
        await asyncio.sleep(5)

    with pytest.raises(BaseExceptionGroup) as info:
        run(main(), loop_factory)
    assert info.group_contains(LookupError)


def test_anyio_on_the_loop(loop_factory: Any) -> None:
    anyio = pytest.importorskip("anyio")

    async def main() -> tuple[bool, int]:
        with anyio.move_on_after(0.02) as scope:
            await anyio.sleep(5)
        return scope.cancelled_caught, await anyio.to_thread.run_sync(lambda: 7)

    assert anyio.run(main, backend="asyncbis", backend_options={"loop_factory": loop_factory}) == (
        True,
        7,
    )


def _foreign_task_factory(loop: Any, coro: Any, **kwargs: Any) -> asyncio.Future:
    return asyncio.tasks._PyTask(coro, loop=loop, **kwargs)  # type: ignore[attr-defined]


def test_no_task_factory_is_enforced(loop_factory: Any) -> None:
    # Issue 13 defect 8: uvloop and rloop took any factory, and their tasks were foreign tasks
    # (outside every group, no cancel scopes).
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(RuntimeError, match="no-task-factory"):
            loop.set_task_factory(_foreign_task_factory)
        assert loop.get_task_factory() is not _foreign_task_factory
        loop.set_task_factory(None)  # allowed: tasks stay asyncbis tasks
        task = asyncio.create_task(asyncio.sleep(0))
        assert isinstance(task, asyncbis.Task)
        assert task._core.group is asyncbis.root_group(loop)
        await task

    run(main(), loop_factory)


def test_no_task_factory_off_accepts_a_foreign_factory(loop_factory: Any) -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(_foreign_task_factory)
        task = asyncio.create_task(asyncio.sleep(0))
        await task
        return isinstance(task, asyncbis.Task)

    state = asyncbis.switches.snapshot()
    asyncbis.switches.disable("no-task-factory")
    try:
        assert run(main(), loop_factory) is False
    finally:
        asyncbis.switches.restore(state)
