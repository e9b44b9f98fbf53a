"""Moments as people write them on a command line or in a query: ISO 8601, or a duration ago."""

from __future__ import annotations

import time
from datetime import UTC, datetime

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_moment(text: str | None, name: str = "--since") -> float:
    """Unix time from ISO 8601 (UTC unless it says otherwise) or a duration ago (``30m``, ``2h``,
    ``1d``); 0 for none. ``ValueError`` naming ``name`` and what is accepted."""
    if not text:
        return 0.0
    if text[-1:] in UNITS and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * UNITS[text[-1]]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} {text!r}: expected ISO 8601 (2026-11-25T10:00) or a duration like 30m") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
