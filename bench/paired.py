"""Added latency at concurrency 1 from paired requests: direct, then through, then direct ...

Rounds of wrk (``bench.online.alternating_c1``) compare medians taken seconds apart; on these shared
machines a round's median moves by 1-2 ms from one round to the next, more than the gateway adds.
Here one client sends each request to the backend and then the same request through the gateway
(the order swapped every other pair), so whatever the machine does to one side it does to the
other within ~10 ms. The client's own cost (Python's ``http.client``, tens of microseconds) is the
same on both sides and cancels in the difference; it is why only the difference is reported.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from bench.core import BenchError

WARMUP_PAIRS = 100


@dataclass(frozen=True)
class PairedResult:
    pairs: int
    direct_p50_ms: float
    through_p50_ms: float
    added_median_ms: float  # median through - median direct
    block_added_ms: list[float]  # the same over consecutive fifths of the pairs: its spread


class _Client:
    """One keep-alive connection that posts the same body to ``/invocations``."""

    def __init__(self, url: str, body: bytes) -> None:
        parts = urlsplit(url)
        if parts.hostname != "127.0.0.1" or parts.scheme != "http":
            raise BenchError(f"paired requests are only aimed at http://127.0.0.1, not {url}")
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.body, self.url = body, url

    def latency_ms(self) -> float:
        started = time.perf_counter_ns()
        self.connection.request("POST", "/invocations", self.body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        response.read()
        elapsed = (time.perf_counter_ns() - started) / 1e6
        if response.status != 200:
            raise BenchError(f"{self.url}/invocations answered {response.status} during paired requests")
        return elapsed

    def close(self) -> None:
        self.connection.close()


def paired_requests(direct_url: str, url: str, body: bytes, pairs: int) -> PairedResult:
    """``pairs`` requests to each of ``direct_url`` and ``url``, interleaved one by one."""
    direct, through = _Client(direct_url, body), _Client(url, body)
    try:
        for _ in range(WARMUP_PAIRS):
            direct.latency_ms()
            through.latency_ms()
        d, t = np.empty(pairs), np.empty(pairs)
        for i in range(pairs):
            if i % 2:
                d[i], t[i] = direct.latency_ms(), through.latency_ms()
            else:
                t[i], d[i] = through.latency_ms(), direct.latency_ms()
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"paired requests failed: {exc}") from None
    finally:
        direct.close()
        through.close()
    blocks = [
        float(np.median(tb) - np.median(db)) for db, tb in zip(np.array_split(d, 5), np.array_split(t, 5), strict=True)
    ]
    return PairedResult(
        pairs=pairs,
        direct_p50_ms=float(np.median(d)),
        through_p50_ms=float(np.median(t)),
        added_median_ms=float(np.median(t) - np.median(d)),
        block_added_ms=[round(b, 3) for b in blocks],
    )
