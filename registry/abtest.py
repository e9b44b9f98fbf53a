"""A/B analysis over the gateway's inference log, and the decision it supports.

Per variant: requests, error rate, latency p50/p99, mean confidence, the share of answers a person
should check (confidence below the served model's default ``uncertain_below``), and accuracy on the
requests that got feedback (with a 95% Wilson interval); in shadow mode also how often the two
agree. Then a decision: promote the challenger, keep testing, or roll it back, from a sequential
test that stays valid under repeated checking (``registry.sequential``), plus guardrails on the
challenger's error rate and p99 latency. Only rows of the versions the aliases hold now count, so a finished test
(after a promotion or a rollback) starts afresh for the next challenger.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mnist_mlops.common.names import CHALLENGER, CHAMPION
from mnist_mlops.registry.defaults import AB_ALPHA, AB_MIN_FEEDBACK, AB_TAU, AB_UNCERTAIN_BELOW
from mnist_mlops.registry.errors import RegistryError
from mnist_mlops.registry.evaluate import Comparison, VersionScore, wilson_interval
from mnist_mlops.registry.inference_log.queries import LogMissing, LogReader
from mnist_mlops.registry.sequential import SequentialResult, paired_log_lambda, run_sequence, unpaired_log_lambda

PROMOTE, ROLLBACK, KEEP = "promote", "rollback", "keep testing"


@dataclass(frozen=True)
class Policy:
    alpha: float = AB_ALPHA  # the test's error rate, valid under continuous monitoring
    tau: float = AB_TAU  # the accuracy difference the unpaired test is tuned to (5 points)
    min_feedback: int = AB_MIN_FEEDBACK  # per arm (or discordant pairs in shadow mode) before any decision
    max_error_rate_increase: float = 0.05  # guardrail: challenger error rate minus champion's
    max_p99_ratio: float = 3.0  # guardrail: challenger p99 latency over champion's
    min_requests: int = 50  # per arm before a guardrail may fire
    max_feedback_share: float = 1.0  # a decision needs no single key to have given more of the feedback


@dataclass
class Arm:
    variant: str
    role: str
    version: str | None
    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_confidence: float | None = None
    uncertain: float | None = None  # share of answered images below AB_UNCERTAIN_BELOW confidence
    feedback: int = 0
    correct: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.feedback if self.feedback else None

    @property
    def ci95(self) -> tuple[float, float] | None:
        return wilson_interval(self.correct, self.feedback) if self.feedback else None

    def to_dict(self) -> dict:
        return asdict(self) | {"error_rate": self.error_rate, "accuracy": self.accuracy, "ci95": self.ci95}


@dataclass
class Report:
    since: float
    shadow: bool
    champion: Arm
    challenger: Arm
    agreement: float | None = None
    agreement_pairs: int = 0
    feedback_keys: int = 0  # distinct keys that gave the feedback counted
    largest_key_share: float | None = None  # the share of the feedback given by the most active key
    test: str = ""
    sequential: SequentialResult | None = None
    decision: str = KEEP
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = {
            "since": self.since,
            "shadow": self.shadow,
            "champion": self.champion.to_dict(),
            "challenger": self.challenger.to_dict(),
            "agreement": self.agreement,
            "agreement_pairs": self.agreement_pairs,
            "feedback_keys": self.feedback_keys,
            "largest_key_share": self.largest_key_share,
            "test": self.test,
            "decision": self.decision,
            "reasons": self.reasons,
        }
        if self.sequential is not None:
            data["sequential"] = asdict(self.sequential) | {"p_value": self.sequential.p_value}
        return data

    def comparison(self) -> Comparison:
        """The evidence in the registry's terms, recorded with the move in the promotion history."""

        def score(arm: Arm) -> VersionScore:
            return VersionScore(str(arm.version), arm.accuracy or 0.0, arm.ci95 or (0.0, 1.0), [], arm.errors)

        a, b = self.champion, self.challenger
        difference = (b.accuracy or 0.0) - (a.accuracy or 0.0)
        return Comparison(
            data=f"live traffic ({'shadow' if self.shadow else 'split'}) since {self.since:.0f}",
            count=b.feedback + a.feedback,
            candidate=score(b),
            baseline=score(a),
            difference=difference,
            mcnemar_p=self.sequential.p_value if self.sequential else 1.0,
        )


def _arm(log: LogReader, variant: str, role: str, version: str | None, since: float) -> Arm:
    """One arm's figures. A client's bad request (4xx) is neither a request nor an error of the
    model: only answers (200) and the model's or its server's failures (5xx) count, so a client
    cannot move an arm's error rate, either way, by sending it garbage."""
    arm = Arm(variant, role, version)
    rows = [r for r in log.arm_rows(variant, role, version, since) if r.status == 200 or r.status >= 500]
    arm.requests = len({r.request_id for r in rows})
    arm.errors = len({r.request_id for r in rows if r.status >= 500})
    latencies = np.array([r.latency_ms for r in rows if r.row == 0 and r.latency_ms is not None], dtype=float)
    if latencies.size:
        arm.p50_ms, arm.p99_ms = float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))
    confidences = [r.confidence for r in rows if r.confidence is not None]
    arm.mean_confidence = float(np.mean(confidences)) if confidences else None
    arm.uncertain = float(np.mean(np.array(confidences) < AB_UNCERTAIN_BELOW)) if confidences else None
    right = log.arm_feedback(variant, role, version, since)
    arm.feedback, arm.correct = len(right), sum(right)
    return arm


def _unpaired_steps(log: LogReader, report: Report, policy: Policy):
    a, b = report.champion, report.challenger
    counts = {a.variant: [0, 0], b.variant: [0, 0]}
    for variant, correct in log.split_feedback([(a.variant, a.version), (b.variant, b.version)], report.since):
        counts[variant][0] += int(correct)
        counts[variant][1] += 1
        (ka, na), (kb, nb) = counts[a.variant], counts[b.variant]
        if min(na, nb) < policy.min_feedback:
            yield 0.0, 0
            continue
        direction = int(np.sign(kb / nb - ka / na))
        yield unpaired_log_lambda(ka, na, kb, nb, policy.tau), direction


def _paired_steps(log: LogReader, report: Report, policy: Policy):
    a, b = report.champion, report.challenger
    a_wins = b_wins = 0
    for champion_right, challenger_right in log.paired_feedback(a.variant, a.version, b.version, report.since):
        if champion_right and not challenger_right:
            a_wins += 1
        elif challenger_right and not champion_right:
            b_wins += 1
        if a_wins + b_wins < policy.min_feedback:
            yield 0.0, 0
            continue
        yield paired_log_lambda(b_wins, a_wins), int(np.sign(b_wins - a_wins))


def _agreement(log: LogReader, report: Report) -> tuple[float | None, int]:
    same = log.agreement(report.challenger.version, report.since)
    return (sum(same) / len(same) if same else None), len(same)


def _guardrails(report: Report, policy: Policy) -> list[str]:
    a, b = report.champion, report.challenger
    reasons = []
    if b.requests >= policy.min_requests and a.requests >= policy.min_requests:
        if b.error_rate - a.error_rate > policy.max_error_rate_increase:
            reasons.append(
                f"challenger error rate {b.error_rate:.1%} exceeds the champion's {a.error_rate:.1%} by more than "
                f"{policy.max_error_rate_increase:.0%}"
            )
        if a.p99_ms and b.p99_ms and b.p99_ms > policy.max_p99_ratio * a.p99_ms:
            reasons.append(
                f"challenger p99 latency {b.p99_ms:.0f} ms is over {policy.max_p99_ratio:g}x the champion's "
                f"{a.p99_ms:.0f} ms"
            )
    return reasons


def analyse(
    log_location: str | Path,
    champion_version: str | None,
    challenger_version: str | None,
    since: float = 0.0,
    shadow: bool | None = None,
    policy: Policy | None = None,
) -> Report:
    """Read the log (a database URL or a SQLite file) and decide. ``shadow=None`` detects the
    mode from the log."""
    policy = policy or Policy()
    try:
        log = LogReader(log_location)
    except LogMissing as missing:
        raise RegistryError(str(missing)) from None
    with log:
        if shadow is None:
            shadow = log.has_shadow(challenger_version, since)
        champion = _arm(log, CHAMPION, "serve", champion_version, since)
        challenger = _arm(log, CHALLENGER, "shadow" if shadow else "serve", challenger_version, since)
        report = Report(since, shadow, champion, challenger)
        if shadow:
            report.agreement, report.agreement_pairs = _agreement(log, report)
            report.test = f"binomial mSPRT on discordant pairs (Beta(1,1) mixture), alpha={policy.alpha}"
            steps = _paired_steps(log, report, policy)
        else:
            report.test = f"normal-mixture mSPRT on the accuracy difference (tau={policy.tau}), alpha={policy.alpha}"
            steps = _unpaired_steps(log, report, policy)
        report.sequential = run_sequence(steps, policy.alpha)
        by_key = log.feedback_by_key([(CHAMPION, champion_version), (CHALLENGER, challenger_version)], since)
    total = sum(by_key.values())
    report.feedback_keys = len(by_key)
    report.largest_key_share = max(by_key.values()) / total if total else None
    guardrails = _guardrails(report, policy)
    too_few_keys = report.largest_key_share is not None and report.largest_key_share > policy.max_feedback_share
    if guardrails:
        report.decision, report.reasons = ROLLBACK, guardrails
    elif report.sequential.crossed and too_few_keys:
        report.reasons = [
            f"a decision is due, but one key gave {report.largest_key_share:.0%} of the feedback; at most "
            f"{policy.max_feedback_share:.0%} from one key may carry it (max_feedback_share)"
        ]
    elif report.sequential.crossed:
        better = report.sequential.direction > 0
        report.decision = PROMOTE if better else ROLLBACK
        report.reasons = [
            f"the challenger is {'more' if better else 'less'} accurate (always-valid p = "
            f"{report.sequential.p_value:.2g} < {policy.alpha}) after {report.sequential.at_sample} observations"
        ]
    else:
        needed = policy.min_feedback
        report.reasons = [
            f"no significant difference yet (always-valid p = {report.sequential.p_value:.2g}; "
            f"decisions need at least {needed} {'discordant pairs' if shadow else 'feedback per arm'})"
        ]
    return report


def evidence(report: Report) -> dict:
    """The figures recorded with an automatic or applied move."""
    figures = report.comparison().figures()
    figures["decision"] = report.decision
    figures["reasons"] = report.reasons
    figures["test"] = report.test
    for name in ("champion", "challenger"):
        arm = getattr(report, name)
        figures[f"{name}_live"] = {
            "version": arm.version,
            "requests": arm.requests,
            "error_rate": round(arm.error_rate, 4),
            "p99_ms": None if arm.p99_ms is None else round(arm.p99_ms, 1),
            "feedback": arm.feedback,
        }
    if report.agreement is not None:
        figures["agreement"] = round(report.agreement, 4)
    return figures
