"""The A/B decision rules: valid under repeated checking, and they do find a real difference."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlops.registry.sequential import paired_log_lambda, run_sequence, unpaired_log_lambda


def unpaired_path(rng, p_a: float, p_b: float, n: int, tau: float = 0.05, min_n: int = 30):
    ka = na = kb = nb = 0
    for _ in range(n):
        if rng.random() < 0.5:
            na += 1
            ka += rng.random() < p_a
        else:
            nb += 1
            kb += rng.random() < p_b
        if min(na, nb) < min_n:
            yield 0.0, 0
        else:
            yield unpaired_log_lambda(ka, na, kb, nb, tau), int(np.sign(kb / nb - ka / na))


def test_checking_after_every_observation_keeps_false_alarms_under_alpha():
    rng = np.random.default_rng(0)
    alarms = sum(run_sequence(unpaired_path(rng, 0.9, 0.9, 1500), 0.05).crossed for _ in range(300))
    assert alarms / 300 <= 0.05


def test_a_real_difference_is_found_in_the_right_direction():
    rng = np.random.default_rng(1)
    worse = [run_sequence(unpaired_path(rng, 0.95, 0.6, 1000), 0.05) for _ in range(20)]
    assert all(r.crossed and r.direction == -1 for r in worse)
    better = [run_sequence(unpaired_path(rng, 0.6, 0.95, 1000), 0.05) for _ in range(20)]
    assert all(r.crossed and r.direction == 1 for r in better)


def test_a_decision_once_made_does_not_flip_when_checked_again_with_more_data():
    rng = np.random.default_rng(2)
    steps = list(unpaired_path(rng, 0.7, 0.8, 4000))
    decisions = {run_sequence(steps[:k], 0.05).direction for k in range(200, len(steps), 200)}
    decisions.discard(0)
    assert len(decisions) <= 1


def test_the_paired_test_under_no_difference_rarely_alarms():
    rng = np.random.default_rng(3)

    def path():
        a = b = 0
        for _ in range(2000):
            if rng.random() < 0.5:
                a += 1
            else:
                b += 1
            yield (paired_log_lambda(b, a), int(np.sign(b - a))) if a + b >= 30 else (0.0, 0)

    assert sum(run_sequence(path(), 0.05).crossed for _ in range(300)) / 300 <= 0.05


@pytest.mark.parametrize(("b", "a"), [(80, 20), (20, 80)])
def test_the_paired_test_finds_a_lopsided_split_of_discordant_pairs(b, a):
    assert paired_log_lambda(b, a) > np.log(20)
