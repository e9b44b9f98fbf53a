"""Traffic split: weights per alias, and which alias a request goes to.

With a client key (``X-User-ID``) the choice is sticky and consistent: weighted rendezvous
hashing gives each alias the score ``w / -ln(u)``, with ``u`` a hash of (key, alias) in (0, 1),
and picks the highest. Each alias wins with probability proportional to its weight, the same key
always lands on the same alias while the weights hold, and changing one weight moves only the keys
that must move (those whose winner changes), not a reshuffle of everyone. Without a key the
choice is weighted random.
"""

from __future__ import annotations

import hashlib
import math
import random
import re

_ALIAS = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class SplitError(ValueError):
    pass


def parse_split(text: str) -> dict[str, float]:
    """``"champion=90,challenger=10"`` -> {"champion": 90.0, "challenger": 10.0}."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        alias, sep, value = part.partition("=")
        alias = alias.strip()
        if not sep or not _ALIAS.match(alias):
            raise SplitError(f"expected alias=weight pairs like champion=90,challenger=10, got {part!r}")
        weights[alias] = _weight(alias, value)
    return validate_split(weights)


def _weight(alias: str, value: object) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise SplitError(f"the weight of {alias} must be a number, got {value!r}") from None
    if not math.isfinite(weight) or weight < 0:
        raise SplitError(f"the weight of {alias} must be a finite number >= 0, got {value!r}")
    return weight


def validate_split(weights: dict[str, object]) -> dict[str, float]:
    if not weights:
        raise SplitError("the split names no alias")
    clean = {}
    for alias, value in weights.items():
        if not isinstance(alias, str) or not _ALIAS.match(alias):
            raise SplitError(f"alias names are letters, digits, '-' and '_', got {alias!r}")
        clean[alias] = _weight(alias, value)
    if sum(clean.values()) <= 0:
        raise SplitError("at least one weight must be positive")
    return clean


def _unit_hash(key: str, alias: str) -> float:
    digest = hashlib.blake2b(f"{alias}\x00{key}".encode(), digest_size=8).digest()
    # 53 bits mapped into the open interval (0, 1)
    return ((int.from_bytes(digest, "big") >> 11) + 0.5) / float(1 << 53)


def sticky_choice(weights: dict[str, float], key: str) -> str:
    """The alias for ``key`` under weighted rendezvous hashing."""
    best, best_score = None, -1.0
    for alias, weight in weights.items():
        if weight <= 0:
            continue
        score = weight / -math.log(_unit_hash(key, alias))
        if score > best_score:
            best, best_score = alias, score
    if best is None:
        raise SplitError("no alias has a positive weight")
    return best


def random_choice(weights: dict[str, float], rng: random.Random | None = None) -> str:
    aliases = [a for a, w in weights.items() if w > 0]
    if not aliases:
        raise SplitError("no alias has a positive weight")
    return (rng or random).choices(aliases, weights=[weights[a] for a in aliases])[0]
