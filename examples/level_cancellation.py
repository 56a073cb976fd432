"""Level cancellation: a cancelled scope raises CancelledError at *every* yield point inside it.

Stock asyncio delivers one CancelledError (edge cancellation); code that swallows it keeps
running as if nothing happened. Under asyncbis the scope stays cancelled until it exits, so
swallow-and-continue code is cancelled again at its next await.

    python examples/level_cancellation.py
"""

import asyncio

import asyncbis


async def stubborn_worker() -> None:
    for attempt in range(1, 4):
        try:
            await asyncio.sleep(1)
            print(f"  attempt {attempt}: slept normally")
        except asyncio.CancelledError:
            print(f"  attempt {attempt}: CancelledError (swallowed)")
    print("  the worker gave up swallowing and returns")


async def main() -> None:
    print("A scope cancelled while the worker runs inside it:")
    with asyncbis.CancelScope() as scope:
        asyncio.get_running_loop().call_later(0.1, scope.cancel)
        await stubborn_worker()
    print(f"cancel_called={scope.cancel_called}, cancelled_caught={scope.cancelled_caught}")
    print("(every await inside the cancelled scope raised; the scope absorbed nothing because")
    print(" the worker swallowed every delivery)")

    print("\nThe same with a worker that lets the cancellation propagate:")
    with asyncbis.move_on_after(0.1) as scope:
        await asyncio.sleep(10)
        print("  not reached")
    print(f"cancelled_caught={scope.cancelled_caught}: the scope absorbed its own cancellation")


if __name__ == "__main__":
    asyncbis.run(main())
