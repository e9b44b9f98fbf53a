"""Sequential tests for an A/B decision that stays valid when it is checked again and again.

A fixed-sample test (a t-test, a chi-square) checked every few minutes while data arrives will
"find" a difference that is not there far more often than its nominal 5%: each look is another
chance. Both tests here are mixture sequential probability ratio tests (mSPRT): their statistic
``Lambda`` is a likelihood ratio averaged over the alternatives, a nonnegative martingale when there
is no difference, so by Ville's inequality the chance it *ever* reaches ``1/alpha`` is at most
``alpha``, however often it is checked. ``min(1, 1/max Lambda)`` is an always-valid p-value.

- Independent arms (a traffic split): the difference of the two accuracies, with a normal
  approximation and a normal mixture N(0, tau^2) over the true difference (Johari, Pekelis and
  Walsh, "Always valid inference", 2017). ``tau`` is the size of difference one cares about.
- Paired answers (shadow mode: both models answered the same requests): only requests where
  exactly one of them is right carry information; under no difference each such request is a fair
  coin. The test is the binomial mSPRT with a uniform (Beta(1,1)) mixture over the coin's bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def unpaired_log_lambda(correct_a: int, n_a: int, correct_b: int, n_b: int, tau: float) -> float:
    """log Lambda for "B's accuracy differs from A's" (normal-mixture mSPRT)."""
    if n_a == 0 or n_b == 0:
        return 0.0
    # Add-half smoothing keeps the variance positive at 0% or 100% accuracy.
    p_a, p_b = (correct_a + 0.5) / (n_a + 1), (correct_b + 0.5) / (n_b + 1)
    variance = p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b
    difference = correct_b / n_b - correct_a / n_a
    t2 = tau * tau
    return 0.5 * math.log(variance / (variance + t2)) + difference**2 * t2 / (2 * variance * (variance + t2))


def paired_log_lambda(b_wins: int, a_wins: int) -> float:
    """log Lambda for "B wins discordant pairs more (or less) often than half" (Beta(1,1) mixture)."""
    # Imported here, not at the top: scipy would slow every mnist-registry command's start.
    from scipy.special import betaln

    n = b_wins + a_wins
    return betaln(b_wins + 1, a_wins + 1) + n * math.log(2.0)


@dataclass(frozen=True)
class SequentialResult:
    crossed: bool  # Lambda reached 1/alpha at some point of the sequence
    direction: int  # +1: B better, -1: B worse, 0: undecided
    max_log_lambda: float
    at_sample: int | None  # how many observations in when it crossed

    @property
    def p_value(self) -> float:
        return min(1.0, math.exp(-self.max_log_lambda))


def run_sequence(steps, alpha: float) -> SequentialResult:
    """Walk ``steps`` (pairs of (log Lambda, direction) after each observation) in time order.

    The decision is the first crossing of ``log(1/alpha)``: later data cannot undo it, so
    checking again and again never flips a decision once made.
    """
    threshold = math.log(1 / alpha)
    best = 0.0
    for index, (log_lambda, direction) in enumerate(steps, start=1):
        best = max(best, log_lambda)
        if log_lambda >= threshold and direction != 0:
            return SequentialResult(True, direction, best, index)
    return SequentialResult(False, 0, best, None)
