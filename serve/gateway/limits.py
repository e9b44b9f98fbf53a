"""Per-key limits: requests per minute (a token bucket), requests in flight, images per day.

A client holding a valid key can still try to take the whole gateway: a flood of requests, many
slow ones at once, or a day's quota in an hour. Each key may carry its own limits in the keys file
(``rate_per_minute``, ``max_in_flight``, ``images_per_day``); the gateway's options set the
defaults for keys that carry none. Over a limit, the request gets 429 with ``Retry-After`` and a
JSON error naming the limit, before any of its body is read.

Pure bookkeeping on the event loop: no locks, no I/O; ``now`` is passed in so tests need no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DAY = 86_400.0


@dataclass(frozen=True)
class Limits:
    rate_per_minute: float | None = None  # sustained requests per minute (bursts up to a minute's worth)
    max_in_flight: int | None = None  # requests of this key being answered at once
    images_per_day: int | None = None  # rows scored per UTC day

    def merged(self, defaults: Limits) -> Limits:
        """These limits, with ``defaults`` where none is set."""
        return Limits(
            self.rate_per_minute if self.rate_per_minute is not None else defaults.rate_per_minute,
            self.max_in_flight if self.max_in_flight is not None else defaults.max_in_flight,
            self.images_per_day if self.images_per_day is not None else defaults.images_per_day,
        )


class LimitExceeded(Exception):
    """Over a limit: ``message`` names it, ``retry_after`` says when to try again (seconds)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass
class _KeyState:
    tokens: float
    refilled: float
    in_flight: int = 0
    day: int = -1
    images_today: int = 0


@dataclass
class LimitBook:
    """The limits of every key and what each has used; one per gateway process."""

    limits: dict[str, Limits] = field(default_factory=dict)  # key name -> its limits (merged)
    defaults: Limits = field(default_factory=Limits)
    _state: dict[str, _KeyState] = field(default_factory=dict)

    def of(self, key: str) -> Limits:
        return self.limits.get(key, self.defaults)

    def _key_state(self, key: str, now: float) -> _KeyState:
        state = self._state.get(key)
        if state is None:
            rate = self.of(key).rate_per_minute
            state = self._state[key] = _KeyState(tokens=rate if rate else 0.0, refilled=now)
        return state

    def admit(self, key: str, now: float) -> None:
        """Take one request of ``key`` in, or raise ``LimitExceeded``; pair with ``release``."""
        limits, state = self.of(key), self._key_state(key, now)
        if limits.max_in_flight is not None and state.in_flight >= limits.max_in_flight:
            raise LimitExceeded(
                f"the key {key!r} has {state.in_flight} requests in flight; at most {limits.max_in_flight} at once",
                1,
            )
        if limits.images_per_day is not None and self._today(state, now) >= limits.images_per_day:
            raise LimitExceeded(
                f"the key {key!r} has used its {limits.images_per_day:,} images for today (UTC)",
                DAY - now % DAY,
            )
        if limits.rate_per_minute:
            per_second = limits.rate_per_minute / 60.0
            state.tokens = min(limits.rate_per_minute, state.tokens + (now - state.refilled) * per_second)
            state.refilled = now
            if state.tokens < 1.0:
                raise LimitExceeded(
                    f"the key {key!r} is over its {limits.rate_per_minute:g} requests per minute",
                    (1.0 - state.tokens) / per_second,
                )
            state.tokens -= 1.0
        state.in_flight += 1

    def release(self, key: str) -> None:
        state = self._state.get(key)
        if state is not None and state.in_flight > 0:
            state.in_flight -= 1

    def charge_images(self, key: str, images: int, now: float) -> None:
        """Charge a request's ``images`` to ``key``'s day, or raise ``LimitExceeded`` (charging
        nothing) when they would take it past its quota."""
        quota = self.of(key).images_per_day
        state = self._key_state(key, now)
        used = self._today(state, now)
        if quota is not None and used + images > quota:
            raise LimitExceeded(
                f"the key {key!r} has {max(quota - used, 0):,} of its {quota:,} images for today (UTC) left; "
                f"this request holds {images:,}",
                DAY - now % DAY if used >= quota or images <= quota else 1,
            )
        state.images_today += images

    def count_images(self, key: str, images: int, now: float) -> None:
        """Charge ``images`` scored rows to ``key``'s day."""
        state = self._key_state(key, now)
        self._today(state, now)
        state.images_today += images

    @staticmethod
    def _today(state: _KeyState, now: float) -> int:
        day = int(now // DAY)
        if day != state.day:
            state.day, state.images_today = day, 0
        return state.images_today
