"""Background tasks an owner starts and waits for before it stops (shadow copies, retirements)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine


class TaskSet:
    """Tasks kept referenced until they finish (asyncio keeps only weak references to tasks)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coroutine: Coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self) -> None:
        """Until every task spawned so far has finished."""
        for task in list(self._tasks):
            await task
