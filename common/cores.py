"""The cores this process may use, and how many torch threads each of several scoring processes gets.

Torch starts one OpenMP thread per core in every process, and those threads spin while they wait
for each other. Several scoring processes on the same cores (batch workers, a gateway's backends)
then hold more spinning threads than there are cores and slow each other down, so each gets its
share of the cores instead (``THREADS_ENV``, read by the model when it loads).
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def threads_each(processes: int, reserved: int = 0) -> int:
    """Torch threads for each of ``processes`` scoring processes sharing this machine: its share of
    the cores left after ``reserved`` (for a busy process that is not scoring), at least one."""
    return max(1, (available_cores() - reserved) // max(1, processes))
