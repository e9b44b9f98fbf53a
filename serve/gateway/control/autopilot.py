"""Automatic mode (``--auto_promote``): the gateway runs the A/B decision itself on a schedule.

Every ``interval`` seconds it flushes the inference log, analyses the current champion against
the current challenger (``registry.abtest``), and carries out a decision to promote or roll back
through the registry (gated promotion, or removing the challenger alias), so every automatic
move is in the promotion history with its evidence. The follower then sees the alias move and
switches traffic as for any other move. A rolled-back challenger also leaves the split.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from mnist_mlops.common.names import CHALLENGER, CHAMPION
from mnist_mlops.registry import abtest, api
from mnist_mlops.registry.inference_log.writer import InferenceLog
from mnist_mlops.registry.promote import Gate
from mnist_mlops.serve.gateway.control.pool import VariantPool

logger = logging.getLogger(__name__)


@dataclass
class Autopilot:
    pool: VariantPool
    log: InferenceLog
    log_location: str
    model_name: str
    tracking_uri: str
    interval: float
    policy: abtest.Policy
    gate: Gate
    shadow: bool = False
    last_report: abtest.Report | None = None
    _analysed: float = float("-inf")  # monotonic time of last_report
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the registry or the log briefly unavailable: try next time
                logger.warning("automatic A/B check failed: %s", " ".join(str(exc).split())[:300])

    async def analyse(self) -> abtest.Report | None:
        """The A/B analysis of the versions being served now (None without a challenger)."""
        champion, challenger = self.pool.variants.get(CHAMPION), self.pool.variants.get(CHALLENGER)
        if champion is None or challenger is None or champion.version is None or challenger.version is None:
            return None
        await asyncio.wrap_future(self.log.flush())
        report = await asyncio.to_thread(
            abtest.analyse, self.log_location, champion.version, challenger.version, 0.0, self.shadow, self.policy
        )
        self.last_report, self._analysed = report, time.monotonic()
        return report

    async def current(self, max_age: float = 5.0) -> abtest.Report | None:
        """A recent analysis: reused for ``max_age`` seconds, so that reading it (``GET /abtest``)
        costs the log little however often clients ask."""
        async with self._lock:
            if self.last_report is not None and time.monotonic() - self._analysed < max_age:
                return self.last_report
            return await self.analyse()

    async def check(self) -> abtest.Report | None:
        """Analyse, and carry out a decision to promote or roll back."""
        report = await self.analyse()
        if report is None or report.decision == abtest.KEEP:
            return report
        challenger = self.pool.variants[CHALLENGER]
        logger.info("automatic A/B decision: %s (%s)", report.decision, "; ".join(report.reasons))
        rollback = report.decision == abtest.ROLLBACK
        if rollback:  # out of the split before the registry says so
            challenger.in_registry = False
        move = None
        try:
            with self.pool.local_move():
                move = await asyncio.to_thread(
                    api.apply_ab_decision, self.model_name, report, self.gate, True, self.tracking_uri
                )
        finally:
            if rollback and move is None:  # not moved (or not known): the next registry read decides
                challenger.in_registry = True
        return report
