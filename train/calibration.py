"""Confidence that means what it says: temperature scaling and the expected calibration error.

A network trained with cross-entropy is usually over-confident. Temperature scaling (Guo et al.,
"On calibration of modern neural networks", 2017) divides the logits by one number ``T`` fitted
on held-out data (the validation split), which changes no label and makes the softmax's maximum a
truthful probability of being right. The expected calibration error measures how far it is from
that: the gap between confidence and accuracy, averaged over equal-width confidence bins, weighted
by how many answers fall in each (``mnist_mlops.registry.evalsets.scoring``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The ``T`` that minimises the negative log-likelihood of ``softmax(logits / T)``."""
    log_t = torch.zeros(1, requires_grad=True)  # T = exp(log_t) stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    logits = logits.detach().double()

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp().double(), labels)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().exp())
