"""Cases for Trio and for AnyIO (its own primitives, asyncio backend).

Their APIs mirror each other, so one set of case functions serves both through
a small namespace; hot loops bind everything to locals first.
"""

from __future__ import annotations

import functools
import gc
import resource
from os import getpgrp, getppid
from time import perf_counter, process_time

ECHO_PAYLOAD = b"x" * 64


class API:
    def __init__(self, runtime: str) -> None:
        self.runtime = runtime
        if runtime == "trio":
            import trio

            self.mod = trio
            self.open_group = trio.open_nursery
        else:
            import anyio

            self.mod = anyio
            self.open_group = anyio.create_task_group
        self.sleep = self.mod.sleep
        self.fail_after = self.mod.fail_after
        self.CancelScope = self.mod.CancelScope


def _start() -> tuple[float, float]:
    getppid()  # section marker for instructions.py --timed (callgrind --zero-before)
    return perf_counter(), process_time()


def _elapsed(t0: tuple[float, float]) -> dict:
    """Wall time and CPU time (user+sys of this process) since _start()."""
    out = {"seconds": perf_counter() - t0[0], "cpu_seconds": process_time() - t0[1]}
    getpgrp()  # section end marker (callgrind --dump-before)
    return out


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def spawn(api: API, n: int) -> dict:
    async def child() -> None:
        pass

    open_group = api.open_group
    t0 = _start()
    async with open_group() as group:
        start_soon = group.start_soon
        for _ in range(n):
            start_soon(child)
    return _elapsed(t0)


async def sleep0(api: API, n: int) -> dict:
    sleep = api.sleep
    t0 = _start()
    for _ in range(n):
        await sleep(0)
    return _elapsed(t0)


async def nested_timeouts(api: API, n: int) -> dict:
    fail_after = api.fail_after
    t0 = _start()
    for _ in range(n):
        with fail_after(10), fail_after(10):
            pass
    return {**_elapsed(t0), "form": "fail_after(10)"}


async def bare_scopes(api: API, n: int) -> dict:
    CancelScope = api.CancelScope
    t0 = _start()
    for _ in range(n):
        with CancelScope():
            pass
    return {**_elapsed(t0), "form": "CancelScope()"}


async def _sleeping_group(api: API, n: int, measure_rss: bool) -> dict:
    sleep = api.sleep
    started = 0

    async def sleeper() -> None:
        nonlocal started
        started += 1
        await sleep(3600)

    out: dict = {}
    gc.collect()
    base = _maxrss_kib()
    async with api.open_group() as group:
        start_soon = group.start_soon
        for _ in range(n):
            start_soon(sleeper)
        while started < n:
            await sleep(0)
        if measure_rss:
            out["rss_kib"] = _maxrss_kib() - base
        t0 = _start()
        group.cancel_scope.cancel()
    out.update(_elapsed(t0))
    return out


async def cancel_group(api: API, n: int) -> dict:
    return await _sleeping_group(api, n, measure_rss=False)


async def memory(api: API, n: int) -> dict:
    return await _sleeping_group(api, n, measure_rss=True)


async def _tcp_echo_trio(api: API, clients: int, rounds: int) -> dict:
    trio = api.mod

    async def handle(stream) -> None:
        receive_some = stream.receive_some
        send_all = stream.send_all
        try:
            while True:
                data = await receive_some(65536)
                if not data:
                    break
                await send_all(data)
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    async def client(port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        receive_some = stream.receive_some
        send_all = stream.send_all
        want = len(ECHO_PAYLOAD)
        for _ in range(rounds):
            await send_all(ECHO_PAYLOAD)
            got = 0
            while got < want:
                data = await receive_some(want - got)
                if not data:
                    raise ConnectionError("echo server closed early")
                got += len(data)
        await stream.aclose()

    async with trio.open_nursery() as server_group:
        serve = functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        listeners = await server_group.start(serve)
        port = listeners[0].socket.getsockname()[1]
        t0 = _start()
        async with trio.open_nursery() as group:
            for _ in range(clients):
                group.start_soon(client, port)
        elapsed = _elapsed(t0)
        server_group.cancel_scope.cancel()
    return elapsed


async def _tcp_echo_anyio(api: API, clients: int, rounds: int) -> dict:
    anyio = api.mod
    from anyio.abc import SocketAttribute

    async def handle(stream) -> None:
        receive = stream.receive
        send = stream.send
        async with stream:
            while True:
                try:
                    data = await receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
                await send(data)

    async def client(port: int) -> None:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        receive = stream.receive
        send = stream.send
        want = len(ECHO_PAYLOAD)
        async with stream:
            for _ in range(rounds):
                await send(ECHO_PAYLOAD)
                got = 0
                while got < want:
                    got += len(await receive(want - got))

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    async with anyio.create_task_group() as server_group:
        server_group.start_soon(listener.serve, handle)
        t0 = _start()
        async with anyio.create_task_group() as group:
            for _ in range(clients):
                group.start_soon(client, port)
        elapsed = _elapsed(t0)
        server_group.cancel_scope.cancel()
    await listener.aclose()
    return elapsed


async def tcp_echo(api: API, size: tuple[int, int]) -> dict:
    clients, rounds = size
    if api.runtime == "trio":
        return await _tcp_echo_trio(api, clients, rounds)
    return await _tcp_echo_anyio(api, clients, rounds)


CASES = {
    "spawn": spawn,
    "sleep0": sleep0,
    "nested_timeouts": nested_timeouts,
    "bare_scopes": bare_scopes,
    "cancel_group": cancel_group,
    "cancel_tasks": cancel_group,  # one cancel of the whole group: their only way
    "tcp_echo": tcp_echo,
    "memory": memory,
}


def run(runtime: str, case: str, size) -> dict:
    api = API(runtime)
    fn = CASES[case]

    async def main() -> dict:
        return await fn(api, size)

    if runtime == "trio":
        import trio

        result = trio.run(main)
        result["loop_type"] = "trio"
        return result
    import anyio

    result = anyio.run(main, backend="asyncio")
    result["loop_type"] = "asyncio (anyio backend)"
    return result
