#!/usr/bin/env python3
"""Soak test: a request/response server on asyncio streams, N requests over loopback.

Each mode runs the server in its own process; this process is the client (stock asyncio),
with a fixed number of connections each sending one request at a time (bounded
concurrency), reconnecting every ``--reconnect`` requests so that connection-handler tasks
come and go too. Every request is handled in a task group under a timeout:

    async with TaskGroup() as tg:          # asyncbis's, or stock's for the baseline
        watchdog = tg.create_task(sleep(3600))
        async with timeout(5):
            reply = await tg.create_task(compute(request))
        if request is a slow one (1 in 50):     # a timeout that fires
            try: async with timeout(0.001): await sleep(1)
            except TimeoutError: reply += b" timeout"
        watchdog.cancel()

Modes (``--modes``, comma-separated):

- ``stock``: ``asyncio.run()``, stock TaskGroup and timeout (the baseline);
- ``asyncbis-run``: ``asyncbis.run()``, asyncbis.TaskGroup and asyncbis.timeout;
- ``patched-forever``: ``asyncbis.patch_asyncio()``, then the server on
  ``loop.run_forever()``, written with asyncio.TaskGroup and asyncio.timeout (patched).

At 11 checkpoints (after the warm-up, the first 10% of the requests, then every 9%) the
client pauses with all its connections open and idle and asks the server, over a control
connection, for its RSS (``/proc/self/statm``, after ``gc.collect()``), its live tasks
(``asyncio.all_tasks()``, Task objects the GC sees, and asyncbis's scope-tree nodes and tasks,
``asyncbis._core._tree_stats()``) and the number of exception-handler calls. The verdict per
mode, after the run:

- RSS at the end within ``--rss-limit`` (default 5%) of the first checkpoint;
- live tasks (all three counts) and scope-tree nodes at the end equal to the first
  checkpoint's;
- no "was never retrieved" / "destroyed but it is pending" line on the server's stderr and
  no call of the loop's exception handler;
- every reply correct.

    python benches/soak.py                            # 200,000 requests, all three modes
    python benches/soak.py --requests 20000 --modes asyncbis-run
    python benches/soak.py --json soak.json

Exit status 1 when a mode fails a check. Timings are printed for information only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODES = ("stock", "asyncbis-run", "patched-forever")
BAD_LINES = ("was never retrieved", "destroyed but it is pending")
SLOW_EVERY = 50  # one request in SLOW_EVERY waits on a timeout that fires
CHECKPOINTS = 11


# ---------------------------------------------------------------------------------------------
# Server (runs in a child process: python soak.py --serve MODE)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def serve(mode: str) -> int:
    import gc
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    tree_stats = None
    if mode == "stock":
        TaskGroup, timeout, sleep = asyncio.TaskGroup, asyncio.timeout, asyncio.sleep
    else:
        import asyncbis

        tree_stats = asyncbis._core._tree_stats
        if mode == "patched-forever":
            asyncbis.patch_asyncio()
            TaskGroup, timeout, sleep = asyncio.TaskGroup, asyncio.timeout, asyncio.sleep
        else:
            TaskGroup, timeout, sleep = asyncbis.TaskGroup, asyncbis.timeout, asyncbis.sleep
    Task = asyncio.Task  # patched or not: the class this mode's tasks are
    handler_calls: list[str] = []
    connections = 0
    # Self-test of the checks (tests/test_soak.py): one task per request left sleeping.
    leaked: list[asyncio.Task] = []
    inject_leak = os.environ.get("ASYNCBIS_SOAK_INJECT_LEAK") == "1"
    done = asyncio.Event() if mode != "patched-forever" else None

    async def compute(request: bytes) -> bytes:
        await sleep(0)
        return request.upper()

    async def handle_request(request: bytes, slow: bool) -> bytes:
        async with TaskGroup() as tg:
            watchdog = tg.create_task(sleep(3600))
            async with timeout(5):
                reply = await tg.create_task(compute(request))
            if slow:
                try:
                    async with timeout(0.001):
                        await sleep(1)
                except TimeoutError:
                    reply += b" timeout"
            watchdog.cancel()
        if inject_leak:
            leaked.append(asyncio.get_running_loop().create_task(sleep(3600)))
        return reply

    async def stats(want_connections: int) -> bytes:
        # Let closing connections finish (bounded), then let the loop run their leftovers.
        for _ in range(500):
            if connections == want_connections:
                break
            await sleep(0.01)
        for _ in range(20):
            await sleep(0)
        gc.collect()
        nodes, tree_tasks = tree_stats() if tree_stats else (0, 0)
        return json.dumps(
            {
                "rss_kib": _rss_kib(),
                "all_tasks": len(asyncio.all_tasks()),
                "gc_tasks": sum(1 for o in gc.get_objects() if isinstance(o, Task)),
                "tree_nodes": nodes,
                "tree_tasks": tree_tasks,
                "connections": connections,
                "handler_calls": len(handler_calls),
                "handler_messages": handler_calls[:5],
            }
        ).encode()

    async def handle_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        nonlocal connections
        connections += 1
        try:
            while line := await reader.readline():
                command, _, arg = line.strip().partition(b" ")
                if command == b"REQ":
                    n = int(arg)
                    reply = await handle_request(b"r%d" % n, n % SLOW_EVERY == 0)
                elif command == b"STATS":
                    reply = await stats(int(arg))
                elif command == b"QUIT":
                    if done is not None:
                        done.set()
                    else:
                        asyncio.get_running_loop().stop()
                    break
                else:
                    reply = b"ERR unknown command"
                writer.write(reply + b"\n")
                await writer.drain()
        finally:
            connections -= 1
            writer.close()

    async def connections_closed() -> None:
        for _ in range(3000):  # bounded: at most about 30 s
            if connections == 0:
                return
            await sleep(0.01)

    def on_exception(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        handler_calls.append(str(context.get("message")))
        loop.default_exception_handler(context)

    def announce(server: asyncio.Server) -> None:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(on_exception)
        server = await asyncio.start_server(handle_connection, "127.0.0.1", 0)
        announce(server)
        assert done is not None
        await done.wait()
        server.close()

    if mode == "stock":
        asyncio.run(main())
    elif mode == "asyncbis-run":
        asyncbis.run(main())
    else:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(on_exception)
        server = loop.run_until_complete(asyncio.start_server(handle_connection, "127.0.0.1", 0))
        announce(server)
        loop.run_forever()
        server.close()
        # Before closing the loop, let the handlers of connections the client has not closed
        # yet end (it closes them after QUIT): 3.12+'s Server.wait_closed() waits for them,
        # 3.11's returns at once, and a handler still pending when the loop closes is
        # destroyed later ("Task was destroyed but it is pending!", with stock asyncio too).
        loop.run_until_complete(connections_closed())
        loop.run_until_complete(server.wait_closed())
        loop.close()
    return 0


# ---------------------------------------------------------------------------------------------
# Client and verdict (this process, stock asyncio)


async def _client(
    port: int, requests: int, concurrency: int, reconnect: int, linger: float = 0.0
) -> dict:
    marks = [
        requests // 10 + i * (requests - requests // 10) // (CHECKPOINTS - 1)
        for i in range(CHECKPOINTS)
    ]
    ctl_reader, ctl_writer = await asyncio.open_connection("127.0.0.1", port)
    samples: list[dict] = []
    bad_replies = 0
    next_request = 0

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)

    conns = [await connect() for _ in range(concurrency)]
    sent_on = [0] * concurrency

    async def worker(i: int, until: int) -> None:
        nonlocal next_request, bad_replies
        while next_request < until:
            n = next_request
            next_request += 1
            if sent_on[i] and sent_on[i] % reconnect == 0:
                conns[i][1].close()
                await conns[i][1].wait_closed()
                conns[i] = await connect()
            reader, writer = conns[i]
            writer.write(b"REQ %d\n" % n)
            await writer.drain()
            reply = await reader.readline()
            expected = b"R%d" % n + (b" timeout" if n % SLOW_EVERY == 0 else b"")
            if reply.rstrip(b"\n") != expected:
                bad_replies += 1
            sent_on[i] += 1

    t0 = time.perf_counter()
    for mark in marks:
        async with asyncio.TaskGroup() as tg:
            for i in range(concurrency):
                tg.create_task(worker(i, mark))
        ctl_writer.write(b"STATS %d\n" % (concurrency + 1))
        await ctl_writer.drain()
        sample = json.loads(await ctl_reader.readline())
        sample["requests"] = mark
        sample["elapsed"] = round(time.perf_counter() - t0, 2)
        samples.append(sample)
    ctl_writer.write(b"QUIT\n")
    await ctl_writer.drain()
    # --linger: the connections stay open a while after QUIT, so the server is shut down with
    # handlers still waiting on them (tests/test_soak.py)
    await asyncio.sleep(linger)
    for _, writer in conns:
        writer.close()
    ctl_writer.close()
    return {"samples": samples, "bad_replies": bad_replies, "seconds": time.perf_counter() - t0}


def run_mode(
    mode: str,
    requests: int,
    concurrency: int,
    reconnect: int,
    rss_limit: float,
    linger: float = 0.0,
) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            proc.kill()
            _, err = proc.communicate(timeout=30)
            return {"mode": mode, "error": f"server did not start: {line!r} {err[-2000:]}"}
        port = int(line.split()[1])
        out = asyncio.run(_client(port, requests, concurrency, reconnect, linger))
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            err += "\nsoak.py: the server did not exit within 60 s of QUIT (killed)"
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    out["mode"] = mode
    out["returncode"] = proc.returncode
    out["bad_log_lines"] = [
        ln for ln in err.splitlines() if any(b in ln.lower() for b in BAD_LINES)
    ][:10]
    out["stderr_tail"] = err[-2000:]
    first, last = out["samples"][0], out["samples"][-1]
    out["rss_growth"] = (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"]
    failures = []
    if out["rss_growth"] > rss_limit:
        failures.append(
            f"RSS grew {out['rss_growth']:+.1%} after the warm-up (limit {rss_limit:.0%})"
        )
    for key in ("all_tasks", "gc_tasks", "tree_tasks", "tree_nodes"):
        if last[key] != first[key]:
            failures.append(f"{key}: {first[key]} after the warm-up, {last[key]} at the end")
    if out["bad_log_lines"]:
        failures.append(f"log lines: {out['bad_log_lines'][:3]}")
    if last["handler_calls"]:
        failures.append(f"exception handler called: {last['handler_messages']}")
    if out["bad_replies"]:
        failures.append(f"{out['bad_replies']} wrong replies")
    if proc.returncode != 0:
        failures.append(f"server exited {proc.returncode}: {err[-500:]}")
    out["failures"] = failures
    return out


def _report(results: list[dict]) -> str:
    lines = []
    header = (
        f"{'mode':16} {'req/s':>8} {'RSS first':>10} {'RSS last':>10} {'growth':>7} "
        f"{'tasks first/last (all, gc, tree)':>34} {'nodes':>7}  verdict"
    )
    lines.append(header)
    for r in results:
        if "error" in r:
            lines.append(f"{r['mode']:16} error: {r['error']}")
            continue
        f, la = r["samples"][0], r["samples"][-1]
        tasks = (
            f"{f['all_tasks']},{f['gc_tasks']},{f['tree_tasks']} / "
            f"{la['all_tasks']},{la['gc_tasks']},{la['tree_tasks']}"
        )
        rate = la["requests"] / r["seconds"]
        verdict = "ok" if not r["failures"] else "FAIL: " + "; ".join(r["failures"])
        lines.append(
            f"{r['mode']:16} {rate:8.0f} {f['rss_kib'] / 1024:9.1f}M {la['rss_kib'] / 1024:9.1f}M "
            f"{r['rss_growth']:+7.1%} {tasks:>34} {f['tree_nodes']:>3}/{la['tree_nodes']:<3}  "
            f"{verdict}"
        )
        rss = " ".join(f"{s['rss_kib'] / 1024:.1f}" for s in r["samples"])
        lines.append(f"{'':16} RSS MiB at checkpoints: {rss}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--concurrency", type=int, default=16, help="client connections")
    ap.add_argument("--reconnect", type=int, default=200, help="requests per connection")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--rss-limit", type=float, default=0.05)
    ap.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="seconds the client keeps its connections open after telling the server to quit",
    )
    ap.add_argument("--json", type=Path)
    ap.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.serve:
        return serve(ns.serve)
    if not Path("/proc/self/statm").exists():
        print("soak.py: needs Linux (/proc/self/statm for the server's RSS)", file=sys.stderr)
        return 2
    modes = [m for m in ns.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; modes: {', '.join(MODES)}")
    if ns.requests < 100 * CHECKPOINTS:
        ap.error(f"--requests must be at least {100 * CHECKPOINTS}")
    print(
        f"soak: {ns.requests} requests per mode, {ns.concurrency} connections, reconnect every "
        f"{ns.reconnect}; Python {sys.version.split()[0]}",
        flush=True,
    )
    results = []
    for mode in modes:
        results.append(
            run_mode(mode, ns.requests, ns.concurrency, ns.reconnect, ns.rss_limit, ns.linger)
        )
        print(_report(results[-1:]).splitlines()[1], flush=True)
    print()
    print(_report(results))
    if ns.json:
        ns.json.write_text(json.dumps(results, indent=2))
    return 1 if any(r.get("error") or r["failures"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
