"""Torch threads per scoring process: a share of the cores this process may use."""

from __future__ import annotations

import os

from mnist_mlops.common.cores import available_cores, threads_each


def test_each_process_gets_its_share_of_the_cores_and_at_least_one():
    cores = available_cores()
    assert 1 <= cores <= (os.cpu_count() or cores)
    assert threads_each(1) == cores
    assert threads_each(2) == max(1, cores // 2)
    assert threads_each(cores + 1) == 1
    assert threads_each(0) == cores  # no process counted: not a division by zero


def test_reserved_cores_are_left_out_of_the_share():
    cores = available_cores()
    assert threads_each(1, reserved=1) == max(1, cores - 1)
    assert threads_each(2, reserved=1) == max(1, (cores - 1) // 2)
    assert threads_each(1, reserved=cores) == 1  # nothing left: still one thread
