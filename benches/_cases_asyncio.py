"""Cases for the asyncio-family runtimes: stock asyncio, asyncbis, and both on uvloop.

Every case is an ``async def case(api, size) -> dict`` returning at least
``seconds`` (perf_counter time of the measured section only). The stock and
asyncbis flavours share the code; where their APIs differ (cancelling a group,
a bare scope) each uses what it offers. Hot loops bind everything to locals
first so that no flavour pays for the indirection.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import resource
from os import getpgrp, getppid
from time import perf_counter, process_time

ECHO_PAYLOAD = b"x" * 64


class _Stop(Exception):
    """Raised in a stock TaskGroup body to cancel its children."""


class API:
    """The primitives one asyncio-family runtime uses."""

    def __init__(self, flavour: str) -> None:
        self.flavour = flavour
        if flavour == "asyncbis":
            import asyncbis

            self.TaskGroup = asyncbis.TaskGroup
            self.sleep = asyncbis.sleep
            self.timeout = asyncbis.timeout
            self.CancelScope = asyncbis.CancelScope
        else:
            self.TaskGroup = asyncio.TaskGroup
            self.sleep = asyncio.sleep
            self.timeout = asyncio.timeout
            self.CancelScope = None

    @property
    def stock(self) -> bool:
        return self.flavour == "stock"


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

    TaskGroup = api.TaskGroup
    t0 = _start()
    async with TaskGroup() as tg:
        create_task = tg.create_task
        for _ in range(n):
            create_task(child())
    return _elapsed(t0)


async def sleep0(api: API, n: int) -> dict:
    sleep = api.sleep
    t0 = _start()
    for _ in range(n):
        await sleep(0)
    return _elapsed(t0)


async def nested_timeouts(api: API, n: int) -> dict:
    timeout = api.timeout
    probe = timeout(10)
    t0 = _start()
    if hasattr(probe, "__aenter__"):
        for _ in range(n):
            async with timeout(10), timeout(10):
                pass
    else:
        for _ in range(n):
            with timeout(10), timeout(10):
                pass
    return {**_elapsed(t0), "form": type(probe).__qualname__}


async def bare_scopes(api: API, n: int) -> dict:
    if api.stock:
        timeout = asyncio.timeout
        t0 = _start()
        for _ in range(n):
            async with timeout(None):
                pass
        return {**_elapsed(t0), "form": "asyncio.timeout(None)"}
    CancelScope = api.CancelScope
    t0 = _start()
    for _ in range(n):
        with CancelScope():
            pass
    return {**_elapsed(t0), "form": "CancelScope()"}


async def _sleeping_group(api: API, n: int, measure_rss: bool) -> dict:
    """Spawn n tasks sleeping for an hour, wait until all of them sleep, cancel
    the group and wait for it. Times the cancel + wait; optionally records the
    peak RSS while all n tasks are alive."""
    sleep = api.sleep
    started = 0

    async def sleeper() -> None:
        nonlocal started
        started += 1
        await sleep(3600)

    out: dict = {}
    gc.collect()
    base = _maxrss_kib()
    if api.stock:
        try:
            async with asyncio.TaskGroup() as tg:
                create_task = tg.create_task
                for _ in range(n):
                    create_task(sleeper())
                while started < n:
                    await sleep(0)
                out["rss_kib"] = _maxrss_kib() - base
                t0 = _start()
                raise _Stop
        except* _Stop:
            pass
    else:
        async with api.TaskGroup() as tg:
            create_task = tg.create_task
            for _ in range(n):
                create_task(sleeper())
            while started < n:
                await sleep(0)
            out["rss_kib"] = _maxrss_kib() - base
            t0 = _start()
            tg.cancel()
    out.update(_elapsed(t0))
    if not measure_rss:
        del out["rss_kib"]
    return out


async def cancel_group(api: API, n: int) -> dict:
    return await _sleeping_group(api, n, measure_rss=False)


async def cancel_tasks(api: API, n: int) -> dict:
    """n tasks sleeping for an hour; once all of them sleep (untimed), time cancelling them
    and the group's exit. Stock: ``t.cancel()`` on each task (the list is what a stock
    program keeps to do that); asyncbis: ``tg.cancel()``, with the same list alive, so both
    free the tasks after the timed section."""
    sleep = api.sleep
    started = 0

    async def sleeper() -> None:
        nonlocal started
        started += 1
        await sleep(3600)

    gc.collect()
    async with api.TaskGroup() as tg:
        create_task = tg.create_task
        tasks = [create_task(sleeper()) for _ in range(n)]
        while started < n:
            await sleep(0)
        t0 = _start()
        if api.stock:
            for t in tasks:
                t.cancel()
        else:
            tg.cancel()
    out = _elapsed(t0)
    del tasks
    return out


async def memory(api: API, n: int) -> dict:
    return await _sleeping_group(api, n, measure_rss=True)


async def tcp_echo(api: API, size: tuple[int, int]) -> dict:
    clients, rounds = size

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        read = reader.read
        write = writer.write
        drain = writer.drain
        try:
            while True:
                data = await read(65536)
                if not data:
                    break
                write(data)
                await drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        read = reader.read
        write = writer.write
        drain = writer.drain
        want = len(ECHO_PAYLOAD)
        for _ in range(rounds):
            write(ECHO_PAYLOAD)
            await drain()
            got = 0
            while got < want:
                data = await read(want - got)
                if not data:
                    raise ConnectionError("echo server closed early")
                got += len(data)
        writer.close()
        await writer.wait_closed()

    t0 = _start()
    async with api.TaskGroup() as tg:
        for _ in range(clients):
            tg.create_task(client())
    elapsed = _elapsed(t0)
    server.close()
    await server.wait_closed()
    return elapsed


CASES = {
    "spawn": spawn,
    "sleep0": sleep0,
    "nested_timeouts": nested_timeouts,
    "bare_scopes": bare_scopes,
    "cancel_group": cancel_group,
    "cancel_tasks": cancel_tasks,
    "tcp_echo": tcp_echo,
    "memory": memory,
}


def run(runtime: str, case: str, size) -> dict:
    flavour = "asyncbis" if runtime.startswith("asyncbis") else "stock"
    api = API(flavour)
    fn = CASES[case]

    async def main() -> dict:
        result = await fn(api, size)
        task = asyncio.current_task()
        result["task_type"] = f"{type(task).__module__}.{type(task).__qualname__}"
        result["loop_type"] = type(asyncio.get_running_loop()).__module__
        return result

    loop_factory = None
    loop_module = runtime.removeprefix("asyncbis").removeprefix("-")
    if loop_module in ("uvloop", "rloop", "rsloop"):
        loop_factory = importlib.import_module(loop_module).new_event_loop
    if flavour == "asyncbis":
        import asyncbis

        if loop_factory is None:
            return asyncbis.run(main())
        return asyncbis.run(main(), loop_factory=loop_factory)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())
