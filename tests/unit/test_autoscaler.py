"""The autoscaler's decisions on made-up concurrency: steady loads give steady counts, a burst
scales up within the panic window, and down happens only on the stable window, by half at most."""

from __future__ import annotations

import itertools
import random

import pytest

from mnist_mlops.serve.gateway.control.autoscaler import Autoscaler
from mnist_mlops.serve.gateway.settings import ScalingPolicy

TICK = 0.5


def run(scaler: Autoscaler, load, seconds: float, start: float = 0.0, serving: int | None = None):
    """Feed ``load(t)`` every tick for ``seconds``, acting on each decision at once; the
    decisions, one per tick, and the time reached."""
    decisions, now = [], start
    serving = serving if serving is not None else scaler.floor
    while now < start + seconds:
        now += TICK
        scaler.observe(now, load(now))
        decision = scaler.decide(now, serving)
        decisions.append(decision)
        serving = decision.desired
    return decisions, now


def changes(decisions) -> list[int]:
    """The direction of each change of the count: +1 up, -1 down."""
    counts = [decision.desired for decision in decisions]
    return [1 if after > before else -1 for before, after in itertools.pairwise(counts) if after != before]


@pytest.mark.parametrize("level", [5.0, 31.0, 32.0, 40.0, 64.0, 100.0, 150.0])
def test_a_steady_noisy_load_settles_and_never_flaps(level):
    rng = random.Random(7)
    scaler = Autoscaler(ScalingPolicy(target=32.0), floor=1, ceiling=10)
    decisions, _ = run(scaler, lambda t: max(0.0, rng.gauss(level, level * 0.15)), 600)
    settled = decisions[len(decisions) // 3 :]  # after the first two stable windows
    # Flapping is a change undone: on a load that never moves, at most one step, never back.
    assert len(changes(settled)) <= 1, [d.desired for d in settled]
    expected = -(-level // 32)  # ceil
    assert abs(settled[-1].desired - expected) <= 1


def test_a_burst_scales_up_within_the_panic_window_and_down_only_after_the_stable_window():
    policy = ScalingPolicy(target=10.0, stable_window=60.0, panic_window=6.0)
    scaler = Autoscaler(policy, floor=1, ceiling=8)
    quiet, now = run(scaler, lambda t: 2.0, 120)
    assert {d.desired for d in quiet} == {1}
    burst, now = run(scaler, lambda t: 60.0, 20, start=now, serving=1)
    first_at_six = next(i for i, d in enumerate(burst) if d.desired >= 6)
    assert first_at_six * TICK <= policy.panic_window and burst[first_at_six].panicking
    after, _ = run(scaler, lambda t: 2.0, 200, start=now, serving=burst[-1].desired)
    # panic holds the count for a stable window after the burst stops: never down meanwhile
    held = [d.desired for d in after if d.panicking]
    assert held and min(held) >= burst[-1].desired
    downs = [d.desired for d in after]
    steps = [b for a, b in itertools.pairwise(downs) if b < a]
    assert steps, downs
    for before, after_step in itertools.pairwise(downs):  # at most halved per decision
        assert after_step >= -(-before // 2)
    assert downs[-1] == 1


def test_the_floor_and_the_ceiling_bound_every_decision():
    scaler = Autoscaler(ScalingPolicy(target=1.0), floor=2, ceiling=3)
    idle, now = run(scaler, lambda t: 0.0, 90)
    assert {d.desired for d in idle} == {2}
    loaded, _ = run(scaler, lambda t: 500.0, 30, start=now)
    assert max(d.desired for d in loaded) == 3


def test_forgetting_drops_the_history_of_a_variant_that_slept():
    scaler = Autoscaler(ScalingPolicy(target=1.0), floor=1, ceiling=8)
    run(scaler, lambda t: 8.0, 30)
    scaler.forget()
    assert scaler.decide(1000.0, 1).desired == 1 and not scaler.decide(1000.0, 1).panicking


@pytest.mark.parametrize(
    ("policy", "option"),
    [
        (ScalingPolicy(target=0.0), "--target_concurrency"),
        (ScalingPolicy(target=-1.0), "--target_concurrency"),
        (ScalingPolicy(panic_window=0.0), "--panic_window"),
        (ScalingPolicy(stable_window=5.0, panic_window=6.0), "--panic_window"),
    ],
)
def test_a_policy_that_cannot_work_names_its_option(policy, option):
    with pytest.raises(ValueError, match=option):
        policy.check()
