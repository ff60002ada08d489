"""`hub run`/`hub demo` stop cleanly on SIGINT/SIGTERM, even when both arrive."""

from __future__ import annotations

import asyncio
import os
import signal

from hub.__main__ import run_until_signal


async def test_a_second_signal_does_not_cut_the_clean_up_short() -> None:
    steps: list[str] = []

    async def service() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            steps.append("cleaning up")
            await asyncio.sleep(0.2)  # closing connections takes a moment
            steps.append("clean")

    runner = asyncio.create_task(run_until_signal(service()))
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)  # e.g. the terminal's Ctrl-C to the process group
    await asyncio.wait_for(runner, 5)
    assert steps == ["cleaning up", "clean"]
