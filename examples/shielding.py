"""Shielding: a shielded scope blocks cancellation from outside (not its own), so cleanup code
can await safely; shield(aw) runs aw in the calling task under such a scope.

    python examples/shielding.py
"""

import asyncio

import asyncbis


async def save_state(label: str) -> None:
    await asyncio.sleep(0.05)  # e.g. flush to disk or say goodbye to a peer
    print(f"  {label}: state saved")


async def worker() -> None:
    try:
        await asyncio.sleep(10)
    finally:
        # The task is being cancelled: without a shield, this await would be cancelled too.
        with asyncbis.CancelScope(shield=True):
            await save_state("worker finaliser")


async def main() -> None:
    print("Cancelling a task group whose worker cleans up in a shielded scope:")
    async with asyncbis.TaskGroup() as tg:
        tg.create_task(worker())
        await asyncio.sleep(0.01)
        tg.cancel()
    print("group exited after the finaliser finished")

    print("\nshield(aw) protects the awaitable and the awaiting task from outside cancellation:")
    with asyncbis.move_on_after(0.01) as scope:
        await asyncbis.shield(save_state("shielded call"))
        print("  the shielded call completed; the next await sees the expired deadline")
        await asyncio.sleep(1)
    print(f"cancelled_caught={scope.cancelled_caught}")


if __name__ == "__main__":
    asyncbis.run(main())
