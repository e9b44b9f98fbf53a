"""The limit: the bare network in-process, eval and inference mode, at several batch sizes."""

from __future__ import annotations

import torch

from bench.core import Figure, Mode, full_network, mnist_test, throughput
from train.transforms import normalize, to_unit_range

BATCH_SIZES = (1, 32, 64, 256, 1024)


def measure(mode: Mode) -> list[Figure]:
    network = full_network()
    images = normalize(to_unit_range(torch.from_numpy(mnist_test(1024)[0])))
    figures = []
    threads = torch.get_num_threads()
    with torch.inference_mode():
        for batch in BATCH_SIZES:
            x = images[:batch].contiguous()
            rate, _ = throughput(lambda x=x: network(x).shape[0], mode.seconds(3.0, 0.5))
            figures.append(
                Figure(
                    "network",
                    f"bare network, batch {batch}",
                    rate,
                    "images/s",
                    {"batch": batch, "threads": threads},
                )
            )
    return figures


def best(figures: list[Figure]) -> Figure:
    return max((f for f in figures if f.section == "network"), key=lambda f: f.value)
