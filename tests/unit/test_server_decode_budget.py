"""DecodeBudget: decodes hold their cost from one pool; those that do not fit wait in
arrival order, and a waiter that gives up (client gone) neither leaks nor blocks others."""

from __future__ import annotations

import anyio
import pytest

from clipsearch.server.decode_budget import DecodeBudget


def run(fn):
    return anyio.run(fn)


def test_holders_never_exceed_the_pool_and_waiters_go_in_arrival_order():
    budget = DecodeBudget(per_decode_bytes=6, total_bytes=10)
    log: list[tuple[str, str]] = []

    async def decode(name: str, cost: int, seconds: float) -> None:
        async with budget.hold(cost):
            log.append(("start", name))
            assert budget.in_use <= 10
            await anyio.sleep(seconds)
            log.append(("end", name))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(decode, "a", 6, 0.05)
            await anyio.sleep(0.01)
            tg.start_soon(decode, "b", 6, 0.0)  # does not fit beside a: waits
            await anyio.sleep(0.01)
            tg.start_soon(decode, "c", 3, 0.0)  # would fit, but b came first
        assert budget.in_use == 0

    run(main)
    assert log.index(("end", "a")) < log.index(("start", "b")) < log.index(("start", "c"))


def test_a_cost_above_the_pool_runs_alone_instead_of_waiting_forever():
    budget = DecodeBudget(per_decode_bytes=4, total_bytes=8)

    async def main() -> None:
        with anyio.fail_after(2):
            async with budget.hold(100):
                assert budget.in_use == 8
        assert budget.in_use == 0

    run(main)


def test_a_cancelled_waiter_leaves_no_reservation_behind():
    budget = DecodeBudget(per_decode_bytes=8, total_bytes=8)

    async def main() -> None:
        async with budget.hold(8):
            with anyio.move_on_after(0.05) as scope:
                async with budget.hold(8):
                    pytest.fail("granted while the pool was full")
            assert scope.cancelled_caught
        assert budget.in_use == 0
        async with budget.hold(8):  # the pool is whole again
            assert budget.in_use == 8

    run(main)
