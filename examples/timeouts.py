"""Timeouts are level-cancelling cancel scopes: after the deadline, every await inside raises
CancelledError until the block exits, where it becomes TimeoutError. Nested timeouts: only the
one whose deadline expired raises. shield=True also blocks cancellation from outside.

    python examples/timeouts.py
"""

import asyncio

import asyncbis


async def slow_cleanup() -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        print("  first CancelledError swallowed, trying to clean up with another await...")
        await asyncio.sleep(1)  # still inside the expired timeout: cancelled again


async def main() -> None:
    print("asyncbis.timeout(0.05) around code that swallows one cancellation:")
    try:
        async with asyncbis.timeout(0.05) as t:
            await slow_cleanup()
    except TimeoutError:
        print(f"  TimeoutError (expired={t.expired()})")

    print("\nNested timeouts: the inner one expires, the outer one is untouched:")
    async with asyncbis.timeout(10) as outer:
        try:
            async with asyncbis.timeout(0.05):
                await asyncio.sleep(1)
        except TimeoutError:
            print("  inner TimeoutError")
    print(f"  outer expired={outer.expired()}")

    print("\nfail_after / move_on_after (Trio/AnyIO names):")
    with asyncbis.move_on_after(0.05) as scope:
        await asyncio.sleep(1)
    print(f"  move_on_after: cancelled_caught={scope.cancelled_caught}")
    try:
        with asyncbis.fail_after(0.05):
            await asyncio.sleep(1)
    except TimeoutError:
        print("  fail_after: TimeoutError")


if __name__ == "__main__":
    asyncbis.run(main())
