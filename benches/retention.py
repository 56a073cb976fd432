#!/usr/bin/env python3
"""Retention of tasks nobody can wake: what a server keeps when its handlers leak tasks.

A request/response server on asyncio streams, and a bounded client (``--connections``
connections, one request at a time each) in the same loop. Every request's handler spawns,
with ``asyncio.create_task()`` and without keeping a reference, a background task that awaits
a future nothing else references: a task no one can ever wake (a program bug; stock asyncio
logs "Task was destroyed but it is pending!" when the GC collects it). ``--leak-every N``
leaks one task per N requests (0: none, the control run).

Each mode runs in a child process (``--modes``, comma-separated):

- ``stock``: ``asyncio.run()``;
- ``asyncbis-run``: ``asyncbis.run()``: the leaked tasks join the root task group;
- ``patched-forever``: ``asyncbis.patch_asyncio()``, the server started with
  ``loop.run_until_complete()`` and then served by ``loop.run_forever()`` (no root group).

At 10 checkpoints the server reports, after ``gc.collect()``: live tasks
(``asyncio.all_tasks()``), asyncbis's scope-tree tasks (``_core._tree_stats()``), RSS
(``/proc/self/statm``) and how many times the loop's exception handler was called (the
"destroyed but it is pending" reports). At the end: how many leaked tasks ran their
``finally`` block inside their own task (cancelled by their group at shutdown: they can still
``await``) rather than from the GC (stock: the coroutine is closed wherever a collection
happens, and an ``await`` there fails).

    python benches/retention.py                                 # 100,000 requests, all modes
    python benches/retention.py --requests 20000 --modes asyncbis-run --leak-every 0

Numbers are for information (docs/architecture.md quotes them); the exit status is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys

MODES = ("stock", "asyncbis-run", "patched-forever")
CHECKPOINTS = 10


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def serve(mode: str, requests: int, connections: int, leak_every: int) -> None:
    if mode != "stock":
        import asyncbis

        if mode == "patched-forever":
            asyncbis.patch_asyncio()
    tree_stats = None if mode == "stock" else asyncbis._core._tree_stats
    reports = [0]  # a count: keeping the messages would grow the RSS being measured
    rows: list[dict[str, int]] = []

    finalised = {"in its task": 0, "elsewhere": 0}

    async def stuck() -> None:
        me = asyncio.current_task()
        try:
            await asyncio.get_running_loop().create_future()  # nobody holds it: never woken
        finally:
            finalised["in its task" if asyncio.current_task() is me else "elsewhere"] += 1

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                n = int(line)
                if leak_every and n % leak_every == 0:
                    asyncio.create_task(stuck())  # dropped while pending
                await asyncio.sleep(0)
                writer.write(b"%d\n" % n)
                await writer.drain()
        finally:
            writer.close()

    def checkpoint(done: int) -> None:
        gc.collect()
        rows.append(
            {
                "requests": done,
                "all_tasks": len(asyncio.all_tasks()),
                # the scope tree's tasks (asyncbis): the group's children are not under the
                # cyclic GC while it holds them, so gc.get_objects() does not list them
                "tree_tasks": tree_stats()[1] if tree_stats else 0,
                "rss_kib": _rss_kib(),
                "reports": reports[0],
            }
        )

    async def client(port: int) -> None:
        per_checkpoint = requests // CHECKPOINTS
        counter = iter(range(1, requests + 1))

        async def connection() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for n in counter:
                writer.write(b"%d\n" % n)
                await writer.drain()
                assert int(await reader.readline()) == n
                if n % per_checkpoint == 0:
                    checkpoint(n)
            writer.close()
            await writer.wait_closed()

        await asyncio.gather(*(connection() for _ in range(connections)))

    def on_exception(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        reports[0] += 1

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(on_exception)
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        await client(server.sockets[0].getsockname()[1])
        server.close()

    if mode == "stock":
        asyncio.run(main())
    elif mode == "asyncbis-run":
        try:
            asyncbis.run(main())
        except BaseException:
            pass  # the leaked tasks keep the root group open: see the checkpoints
    else:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(on_exception)
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        task = loop.create_task(client(port))
        task.add_done_callback(lambda _t: loop.stop())
        loop.run_forever()
        task.result()
        server.close()
    gc.collect()
    rows[-1]["finalised"] = finalised
    print(json.dumps(rows), flush=True)


def _structured_exit_off() -> dict[str, str]:
    # asyncbis.run() waits for the root group (structured-exit): with leaked tasks it would
    # never return, so the measured run lets main's return cancel what is left.
    return {"ASYNCBIS_DISABLE": "structured-exit"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--leak-every", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.requests, args.connections, args.leak_every)
        return 0
    for mode in args.modes.split(","):
        env = {**os.environ, **(_structured_exit_off() if mode == "asyncbis-run" else {})}
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--serve",
                mode,
                "--requests",
                str(args.requests),
                "--connections",
                str(args.connections),
                "--leak-every",
                str(args.leak_every),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if out.returncode != 0 or not out.stdout.strip():
            print(f"{mode}: failed (status {out.returncode})\n{out.stderr[-2000:]}")
            continue
        rows = json.loads(out.stdout.strip().splitlines()[-1])
        first, last = rows[0], rows[-1]
        leaked = last["requests"] // args.leak_every if args.leak_every else 0
        print(
            f"{mode:16} requests {last['requests']:>7}  leaked {leaked:>7}  "
            f"live tasks {first['all_tasks']:>6} -> {last['all_tasks']:>6}  "
            f"tree tasks {first['tree_tasks']:>6} -> {last['tree_tasks']:>6}  "
            f"RSS {first['rss_kib'] / 1024:6.1f} -> {last['rss_kib'] / 1024:6.1f} MiB  "
            f"destroyed-pending reports {last['reports']}  finalised {last['finalised']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
