"""Graceful shutdown with asyncbis: Ctrl+C (SIGINT) or SIGTERM cancels the root task group.

    python examples/signals_demo.py [finalise_seconds]

Two background workers and main sleep (the loop is idle). On the first SIGINT or SIGTERM every
task gets CancelledError at its yield point; each worker then runs a finaliser in a shielded
cancel scope, which completes even though everything is cancelled. Afterwards:
  - after SIGINT, asyncbis.run() raises KeyboardInterrupt (exit status 130 with a traceback,
    as for any Python program interrupted by Ctrl+C);
  - after SIGTERM, the process dies by SIGTERM (status -15 / 143), after the cleanup.
A second SIGINT/SIGTERM while finalisers run is a hard shutdown.
"""

from __future__ import annotations

import asyncio
import os
import sys

import asyncbis


def say(*args: object) -> None:
    print(*args, flush=True)


async def worker(n: int, finalise: float) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        say(f"worker {n}: cancelled, finalising for {finalise}s")
        with asyncbis.CancelScope(shield=True):
            await asyncio.sleep(finalise)  # not interrupted: the scope is shielded
        say(f"worker {n}: finalised")
        raise


async def main(finalise: float) -> None:
    for n in range(2):
        asyncio.create_task(worker(n, finalise))  # joins the root task group
    say(f"ready pid={os.getpid()} (press Ctrl+C, or kill -TERM {os.getpid()})")
    try:
        await asyncio.sleep(3600)
    finally:
        say("main: leaving")


if __name__ == "__main__":
    asyncbis.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.5))
