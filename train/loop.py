"""The training loop: one-cycle SGD over augmented batches, per-epoch validation, no MLflow.

The loop reports through a callback, so tracking (``train.tracking``) and progress display stay
out of it and the benchmarks can run it with tracking off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mnist_mlops.common.progress import batch_progress
from mnist_mlops.serve.model.network import DigitNet, build_network
from mnist_mlops.serve.model.transforms import normalize, to_unit_range
from mnist_mlops.train import interrupt
from mnist_mlops.train.augment import random_affine, random_degradation, regional_forms
from mnist_mlops.train.data import MnistData, Split

logger = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 1024
# Share of each batch degraded as photos degrade digits (``augment.random_degradation``): high at
# first, so the network learns blurred, blocky and faint strokes, lower at the end, so it keeps
# MNIST's own digits as sharp as before.
DEGRADE_FIRST, DEGRADE_LAST = 0.8, 0.1


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_accuracy: float
    lr: float  # the learning rate at the end of the epoch
    seconds: float  # wall time of the epoch's training and validation
    images_per_second: float  # training throughput of the epoch


def pick_device() -> torch.device:
    """The GPU when one is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generators; returns the CPU generator the data order and augmentation use."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@torch.inference_mode()
def predict_logits(model: DigitNet, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Logits ``[N, 10]`` (on the CPU) for uint8 images ``[N, 28, 28]``, in eval mode."""
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(images), EVAL_BATCH_SIZE):
        interrupt.check()
        batch = normalize(to_unit_range(images[start : start + EVAL_BATCH_SIZE])).to(device)
        outputs.append(model(batch.contiguous(memory_format=torch.channels_last)).float().cpu())
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, 10)


def evaluate(model: DigitNet, split: Split, device: torch.device) -> tuple[float, float, torch.Tensor]:
    """(mean cross-entropy, accuracy, logits) of ``model`` on ``split``."""
    logits = predict_logits(model, split.images, device)
    loss = F.cross_entropy(logits, split.labels).item()
    accuracy = (logits.argmax(1) == split.labels).float().mean().item()
    return loss, accuracy, logits


def degraded_share(step: int, steps: int) -> float:
    """The share of batch images degraded at ``step`` of ``steps``: from DEGRADE_FIRST down to
    DEGRADE_LAST, linearly over the whole run (a one-epoch run ends nearly clean too)."""
    return DEGRADE_FIRST + (DEGRADE_LAST - DEGRADE_FIRST) * step / max(steps - 1, 1)


FEW_STEPS = 200  # fewer optimisation steps than this, and a run says it will learn little
# Images whose statistics the batch norms keep for inference, recomputed after training.
BATCH_NORM_IMAGES = 10_000


@torch.no_grad()
def recompute_batch_norm(model: DigitNet, split: Split, generator: torch.Generator, device: torch.device) -> None:
    """Replace each batch norm's running statistics by their exact average over (up to
    ``BATCH_NORM_IMAGES``) training images, seen as the last steps saw them.

    During training the running statistics are a moving average (momentum 0.1) that starts from
    mean 0, variance 1: after a few hundred steps it has forgotten that start, after a few dozen it
    has not, and the network in inference mode then answers one class for everything (a 24-step
    run read 13% of MNIST's test set this way, 41% with the statistics of the test batches
    themselves). Recomputed, inference sees what training saw, however short the run.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    model.train()
    for start in range(0, min(len(split), BATCH_NORM_IMAGES), EVAL_BATCH_SIZE):
        stop = start + EVAL_BATCH_SIZE
        images = regional_forms(to_unit_range(split.images[start:stop]), split.labels[start:stop], generator)
        images = random_degradation(random_affine(images, generator), generator, DEGRADE_LAST)
        model(normalize(images).to(device).contiguous(memory_format=torch.channels_last))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


def _train_epoch(model, optimizer, scheduler, split, hp, generator, device, progress) -> tuple[float, int]:
    order = torch.randperm(len(split), generator=generator)
    steps = scheduler.total_steps
    total_loss, seen = torch.zeros((), device=device), 0
    for start in range(0, len(order), hp.batch_size):
        interrupt.check()
        idx = order[start : start + hp.batch_size]
        share = degraded_share(scheduler.last_epoch, steps)  # the scheduler counts steps, not epochs
        images = regional_forms(to_unit_range(split.images[idx]), split.labels[idx], generator)
        images = random_degradation(random_affine(images, generator), generator, share)
        images = normalize(images).to(device).contiguous(memory_format=torch.channels_last)
        labels = split.labels[idx].to(device)
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        # Accumulate on the device: a .item() per step would force a sync on a GPU.
        total_loss += loss.detach() * len(idx)
        seen += len(idx)
        progress.update(len(idx))
    return total_loss.item() / max(seen, 1), seen


def train(
    data: MnistData,
    hp: Hyperparameters,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
    device: torch.device | None = None,
) -> DigitNet:
    """Train the default network on ``data.train``; validate on ``data.val`` after each epoch.

    Deterministic for a given seed, device and thread count.
    """
    device = device or pick_device()
    generator = seed_everything(hp.seed)
    model = build_network().to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=hp.lr, momentum=0.9, nesterov=True, weight_decay=hp.weight_decay)
    steps_per_epoch = -(-len(data.train) // hp.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=hp.lr, epochs=hp.epochs, steps_per_epoch=steps_per_epoch
    )
    if scheduler.total_steps < FEW_STEPS:
        logger.warning(
            "this run makes only %d optimisation steps; a usable model needs a few hundred: more epochs, "
            "more images (max_train_samples) or a smaller batch_size",
            scheduler.total_steps,
        )
    model.train()
    for epoch in range(1, hp.epochs + 1):
        started = time.perf_counter()
        with batch_progress(len(data.train), f"epoch {epoch}/{hp.epochs}") as progress:
            train_loss, seen = _train_epoch(model, optimizer, scheduler, data.train, hp, generator, device, progress)
        train_seconds = time.perf_counter() - started
        val_loss, val_accuracy, _ = evaluate(model, data.val, device)
        result = EpochResult(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=scheduler.get_last_lr()[0],
            seconds=time.perf_counter() - started,
            images_per_second=seen / train_seconds,
        )
        logger.info(
            "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_accuracy %.4f  %.1fs (%.0f images/s)",
            epoch,
            hp.epochs,
            train_loss,
            val_loss,
            val_accuracy,
            result.seconds,
            result.images_per_second,
        )
        if epoch == 1 and hp.epochs > 1:
            # Machines differ several-fold in speed: say early what this one makes of the run.
            logger.info(
                "the whole run will take about %s (%d epochs)", _duration(result.seconds * hp.epochs), hp.epochs
            )
        on_epoch(result)
    recompute_batch_norm(model, data.train, generator, device)
    return model


def _duration(seconds: float) -> str:
    """``"40 s"``, ``"7 min"``, ``"1 h 25 min"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
