"""Leak check: 1,000,000 tasks spawned and cancelled in batches must leave RSS where it was
after the first batches (within 5%), and leave no scope-tree nodes or tasks behind.

The baseline is taken after a warm-up of 10 batches: the allocator's high-water mark settles
over the first few batches in stock asyncio too (+23% after 10 batches of 10,000 there).

    python benches/leak.py [--tasks 1000000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys

import asyncbis


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


async def batch(n: int) -> None:
    async with asyncbis.TaskGroup() as tg:
        for _ in range(n):
            tg.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        tg.cancel()


class _Stop(Exception):
    pass


async def stock_batch(n: int) -> None:
    """The same on stock asyncio (its way to cancel a group: raise in the body)."""
    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(asyncio.sleep(3600))
            await asyncio.sleep(0)
            raise _Stop
    except* _Stop:
        pass


async def main(total: int, size: int, stock: bool = False) -> int:
    one = stock_batch if stock else batch
    for _ in range(10):
        await one(size)
    gc.collect()
    first = rss_mib()
    for _ in range(total // size):
        await one(size)
    gc.collect()
    last = rss_mib()
    growth = (last - first) / first
    nodes, tasks = asyncbis._core._tree_stats()
    print(
        f"{'stock asyncio' if stock else 'asyncbis'}: {total:,} tasks in batches of {size:,}: "
        f"RSS after warm-up {first:.1f} MiB, at the end {last:.1f} MiB ({growth:+.1%}); "
        f"live scope nodes {nodes}, tree tasks {tasks}"
    )
    if stock:
        return 0
    ok = growth <= 0.05 and tasks <= 1  # the root task itself is still running
    print("PASS" if ok else "FAIL: memory grew by more than 5% or tasks were left behind")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--stock", action="store_true", help="measure stock asyncio instead")
    args = parser.parse_args()
    if args.stock:
        sys.exit(asyncio.run(main(args.tasks, args.batch, stock=True)))
    sys.exit(asyncbis.run(main(args.tasks, args.batch)))
