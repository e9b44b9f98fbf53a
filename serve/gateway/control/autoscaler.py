"""How many replicas a variant needs, from the concurrency it was observed to have: a pure core.

Knative's autoscaler (KPA), reduced to one machine: the control plane samples each variant's
images in flight at the gateway (the rows of its requests, held and queued ones included) every
tick; the replicas wanted are that concurrency averaged over a window, divided by a target per
replica, rounded up. Images, not requests: a request of 64 images is 64 single images' work.

- The **stable window** (60 s by default) decides in normal times, so a steady load gives a
  steady count. A load that sits on a boundary (31 images at a target of 32) does not flap
  either: down is only to as many replicas as would run at ``scale_down_below`` of the target.
- The **panic window** (6 s) catches a burst: when its concurrency is ``panic_threshold`` times
  what the replicas serving now are sized for, the scaler panics for a stable window: it scales up
  to what the short window wants and never down meanwhile.
- Down is at most ``max_scale_down_rate`` at a time (half), and never below ``floor``: scale to
  zero is the idle grace period's (``VariantPool.scale_to_zero``), not the scaler's.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from mnist_mlops.serve.gateway.settings import ScalingPolicy

ROUNDING = 1e-9  # 64.0000001 images at a target of 32 are two replicas' worth, not three


@dataclass(frozen=True)
class Decision:
    desired: int
    stable: float  # concurrency averaged over the stable window
    panic: float  # over the panic window
    panicking: bool


@dataclass
class Autoscaler:
    """One variant's samples and decisions; ``floor`` <= desired <= ``ceiling``."""

    policy: ScalingPolicy
    floor: int = 1
    ceiling: int = 1
    samples: deque = field(default_factory=deque)  # (time, concurrency), the last stable window
    panic_until: float = -math.inf

    def observe(self, now: float, concurrency: float) -> None:
        self.samples.append((now, concurrency))
        while self.samples and self.samples[0][0] < now - self.policy.stable_window:
            self.samples.popleft()

    def forget(self) -> None:
        """Drop the history (a variant that scaled to zero starts afresh when it wakes)."""
        self.samples.clear()
        self.panic_until = -math.inf

    def average(self, now: float, window: float) -> float:
        recent = [value for at, value in self.samples if at >= now - window]
        return sum(recent) / len(recent) if recent else 0.0

    def decide(self, now: float, serving: int) -> Decision:
        """The replicas wanted now, given ``serving`` replicas that take traffic."""
        policy = self.policy
        stable, panic = self.average(now, policy.stable_window), self.average(now, policy.panic_window)
        want_stable = math.ceil(stable / policy.target - ROUNDING)
        want_panic = math.ceil(panic / policy.target - ROUNDING)
        serving = max(serving, 1)
        if panic >= policy.panic_threshold * policy.target * serving:
            self.panic_until = now + policy.stable_window
        panicking = now < self.panic_until
        if panicking:  # up to what the burst wants, never down until it has passed
            desired = max(serving, want_panic, want_stable)
        elif want_stable >= serving:
            desired = want_stable
        else:  # down, with a margin, by half at most
            fewer = math.ceil(stable / (policy.target * policy.scale_down_below) - ROUNDING)
            desired = max(min(fewer, serving), math.ceil(serving / policy.max_scale_down_rate - ROUNDING))
        desired = min(max(desired, self.floor), self.ceiling)
        return Decision(desired, stable, panic, panicking)
