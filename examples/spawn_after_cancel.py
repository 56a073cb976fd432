"""Spawning into a cancelled task group is allowed: the new task runs up to its first yield
point, then gets CancelledError there (and at every later yield point).

    python examples/spawn_after_cancel.py
"""

import asyncio

import asyncbis


async def child(n: int) -> None:
    print(f"  child {n}: started (runs until its first await)")
    try:
        await asyncio.sleep(1)
        print(f"  child {n}: not reached")
    except asyncio.CancelledError:
        print(f"  child {n}: cancelled at its first await")
        raise


async def main() -> None:
    async with asyncbis.TaskGroup() as tg:
        tg.cancel()
        print("group cancelled; spawning two children anyway")
        t1 = tg.create_task(child(1))
        t2 = tg.create_task(child(2))
    print(f"group exited: t1.cancelled()={t1.cancelled()}, t2.cancelled()={t2.cancelled()}")


async def background() -> None:
    await asyncio.sleep(0.01)
    raise ValueError("background task failed")


async def app() -> None:
    asyncio.create_task(background())  # created outside any group: joins the root task group
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        print("  main was cancelled because the background task failed")
        raise


if __name__ == "__main__":
    asyncbis.run(main())
    print("\nA failing background task cancels the root group; its error reaches run()'s caller:")
    try:
        asyncbis.run(app())
    except* ValueError as eg:
        print(f"  run() raised {eg.exceptions[0]!r}")
