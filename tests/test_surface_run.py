"""asyncbis.run()/Runner: root task group, real loop (every kind of I/O), sniffio, loop_factory."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import socket
import sys
import threading

import pytest

import asyncbis
from asyncbis import switches


@pytest.fixture(autouse=True)
def _restore_switches():
    state = switches.snapshot()
    yield
    switches.restore(state)


def test_run_returns_main_result_and_main_runs_in_an_asyncbis_task():
    async def main():
        assert isinstance(asyncio.current_task(), asyncbis.Task)
        return 42

    assert asyncbis.run(main()) == 42


def test_tasks_created_outside_a_group_join_the_root_group():
    async def child():
        await asyncio.sleep(0)

    async def main():
        loop = asyncio.get_running_loop()
        root = asyncbis.root_group(loop)
        assert root is not None
        t1 = asyncio.create_task(child())
        t2 = asyncio.ensure_future(child())
        t3 = loop.create_task(child())
        t4 = asyncbis.create_task(child())
        for t in (t1, t2, t3, t4):
            assert isinstance(t, asyncbis.Task)
        assert root.live_tasks == 4
        await asyncio.gather(t1, t2, t3, t4)

    asyncbis.run(main())


def test_failing_background_task_cancels_root_group_and_reaches_caller():
    reached = []

    async def failing():
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    async def main():
        asyncio.create_task(failing())
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            reached.append("main cancelled")
            raise

    with pytest.raises(BaseExceptionGroup) as info:
        asyncbis.run(main())
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert reached == ["main cancelled"]


def test_mains_own_exception_propagates_unchanged():
    async def main():
        await asyncio.sleep(0)
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        asyncbis.run(main())


def test_run_waits_for_background_tasks_structured_exit():
    done = []

    async def bg():
        await asyncio.sleep(0.02)
        done.append(True)

    async def main():
        asyncio.create_task(bg())
        return "main"

    assert asyncbis.run(main()) == "main"
    assert done == [True]


def test_run_refuses_running_loop_and_non_coroutines():
    async def main():
        coro = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="running event loop"):
            asyncbis.run(coro)

    asyncbis.run(main())
    # As stock: 3.14 takes any awaitable and says so (tests/test_runner_awaitables_314.py).
    expected = (
        (TypeError, "awaitable is required")
        if sys.version_info >= (3, 14)
        else (ValueError, "coroutine was expected")
    )
    with pytest.raises(expected[0], match=expected[1]):
        asyncbis.Runner().run(lambda: None)  # type: ignore[arg-type]


def test_runner_reuses_loop_and_context_across_runs():
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)

    async def setter():
        var.set(5)

    async def getter():
        return var.get(), asyncio.get_running_loop()

    with asyncbis.Runner() as runner:
        runner.run(setter())
        value, loop = runner.run(getter())
        assert loop is runner.get_loop()
    assert value == 5
    assert loop.is_closed()


def test_debug_flag_reaches_the_loop():
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert asyncbis.run(main(), debug=True) is True


def test_sniffio_reports_asyncbis():
    sniffio = pytest.importorskip("sniffio")

    async def main():
        inner = await asyncio.create_task(probe())
        return sniffio.current_async_library(), inner

    async def probe():
        return sniffio.current_async_library()

    assert asyncbis.run(main()) == ("asyncbis", "asyncbis")
    with pytest.raises(sniffio.AsyncLibraryNotFoundError):
        sniffio.current_async_library()


def test_sniffio_switch_off_reports_asyncio():
    sniffio = pytest.importorskip("sniffio")
    switches.disable("sniffio-name")

    async def main():
        return sniffio.current_async_library()

    assert asyncbis.run(main()) == "asyncio"


def test_anyio_keeps_working_while_sniffio_says_asyncbis():
    anyio = pytest.importorskip("anyio")

    async def main():
        with anyio.move_on_after(0.01) as scope:
            await anyio.sleep(1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 0)
        return scope.cancelled_caught

    assert asyncbis.run(main()) is True


# -- the real loop: every kind of I/O (a proxy loop wrapping the real one broke them all) --


def test_streams_and_server():
    async def handle(reader, writer):
        data = await reader.readline()
        writer.write(data.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello\n")
            await writer.drain()
            line = await reader.readline()
            writer.close()
            await writer.wait_closed()
        return line

    assert asyncbis.run(main()) == b"HELLO\n"


def test_low_level_server_and_sock_methods():
    async def main():
        loop = asyncio.get_running_loop()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        with listener, client:
            accept = asyncio.create_task(loop.sock_accept(listener))
            await loop.sock_connect(client, listener.getsockname())
            conn, _ = await accept
            with conn:
                conn.setblocking(False)
                await loop.sock_sendall(client, b"ping")
                data = await loop.sock_recv(conn, 4)
        return data

    assert asyncbis.run(main()) == b"ping"


def test_run_in_executor_and_to_thread():
    async def main():
        loop = asyncio.get_running_loop()
        a = await loop.run_in_executor(None, sum, [1, 2, 3])
        b = await asyncio.to_thread(lambda: threading.current_thread().name)
        return a, b

    a, b = asyncbis.run(main())
    assert a == 6 and b != threading.current_thread().name


def test_getaddrinfo():
    async def main():
        return await asyncio.get_running_loop().getaddrinfo("127.0.0.1", 80)

    infos = asyncbis.run(main())
    assert any(info[4][0] == "127.0.0.1" for info in infos)


def test_subprocess_exec():
    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('hi')", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return proc.returncode, out

    assert asyncbis.run(main()) == (0, b"hi\n")


def test_async_generator_finalisation_on_shutdown():
    finalised = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            finalised.append(True)

    holder = []

    async def main():
        g = agen()
        holder.append(g)  # keep it alive: only shutdown_asyncgens() can finalise it
        assert await g.__anext__() == 1

    asyncbis.run(main())
    assert finalised == [True]
    del holder[:]
    gc.collect()


def test_call_soon_threadsafe_from_a_thread_wakes_the_loop():
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        threading.Timer(0.05, lambda: loop.call_soon_threadsafe(fut.set_result, "woke")).start()
        return await fut

    assert asyncbis.run(main()) == "woke"


def test_stock_loop_factory():
    async def main():
        return type(asyncio.get_running_loop()), type(asyncio.current_task())

    loop_type, task_type = asyncbis.run(main(), loop_factory=asyncio.SelectorEventLoop)
    assert loop_type is asyncio.SelectorEventLoop and task_type is asyncbis.Task


def test_uvloop_loop_factory():
    uvloop = pytest.importorskip("uvloop")

    async def child():
        await asyncio.sleep(0)
        return type(asyncio.current_task())

    async def main():
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        asyncio.create_task(child())
        async with asyncbis.timeout(0.01):
            with pytest.raises(asyncio.CancelledError):
                await asyncio.sleep(1)
            await asyncio.sleep(0)  # level: still cancelled -> leaves as TimeoutError

    with pytest.raises(TimeoutError):
        asyncbis.run(main(), loop_factory=uvloop.new_event_loop)

    async def main2():
        return await asyncio.create_task(child())

    assert asyncbis.run(main2(), loop_factory=uvloop.new_event_loop) is asyncbis.Task


def test_set_task_factory_refused_on_runner_loop():
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(RuntimeError, match="no-task-factory"):
            loop.set_task_factory(lambda loop, coro, **kw: asyncio.tasks._PyTask(coro, loop=loop))
        loop.set_task_factory(None)  # allowed: tasks stay asyncbis tasks
        t = asyncio.create_task(asyncio.sleep(0))
        assert isinstance(t, asyncbis.Task)
        await t

    asyncbis.run(main())
