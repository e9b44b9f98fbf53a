"""The limit: the bare network in-process, eval and inference mode, at several batch sizes.

Measured in the form the pyfunc serves (BatchNorm folded into the convs), and the eager module as
trained at batch 1 and 64 for reference.
"""

from __future__ import annotations

import torch

from bench.core import Figure, Mode, mnist_test, throughput
from mnist_mlops.serve.model.network import fused_for_inference
from mnist_mlops.serve.model.transforms import normalize, to_unit_range
from tests.fullmodel import full_network

BATCH_SIZES = (1, 32, 64, 256, 1024)


def _rate(network, images: torch.Tensor, batch: int, seconds: float) -> float:
    x = images[:batch].contiguous()
    rate, _ = throughput(lambda: network(x).shape[0], seconds)
    return rate


def best_batch(seconds: float) -> tuple[float, int]:
    """(images/s, batch size) of the served network's fastest batch size, measured now.

    For ratios against work measured minutes later (batch scoring): on these shared machines the
    same network ran anywhere from 3,500 to 8,100 images/s at batch 64 within one day, so a
    baseline is only fair when it is taken next to what it is compared with.
    """
    served = fused_for_inference(full_network())
    images = normalize(to_unit_range(torch.from_numpy(mnist_test(max(BATCH_SIZES))[0])))
    with torch.inference_mode():
        rates = {batch: _rate(served, images, batch, seconds) for batch in BATCH_SIZES}
    batch = max(rates, key=rates.get)
    return rates[batch], batch


def measure(mode: Mode) -> list[Figure]:
    served, trained = fused_for_inference(full_network()), full_network()
    images = normalize(to_unit_range(torch.from_numpy(mnist_test(1024)[0])))
    threads = torch.get_num_threads()
    figures = []
    with torch.inference_mode():
        for batch in BATCH_SIZES:
            rate = _rate(served, images, batch, mode.seconds(3.0, 0.5))
            figures.append(
                Figure(
                    "network",
                    f"bare network, batch {batch}",
                    rate,
                    "images/s",
                    {"batch": batch, "threads": threads, "form": "BatchNorm folded, as served"},
                )
            )
        for batch in (1, 64):
            rate = _rate(trained, images, batch, mode.seconds(3.0, 0.5))
            figures.append(
                Figure(
                    "network (reference)",
                    f"eager module as trained, batch {batch}",
                    rate,
                    "images/s",
                    {"batch": batch, "threads": threads},
                )
            )
    return figures
