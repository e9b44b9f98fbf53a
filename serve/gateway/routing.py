"""The data plane's decision, a pure function: which variant answers a request.

Given the table of variants and the client's ``X-User-ID`` (or none), ``choose`` returns the variant
that answers, or raises ``Unavailable`` naming why none can. The rules:

- the split decides first, whatever the backends' state, so a user's sticky assignment does not
  depend on health (``split.sticky_choice``; weighted random without a user);
- a variant that is not ready hands its request to the champion, the production model; one scaled
  to zero (``--min_replicas 0``) keeps it: the request wakes it and waits (``scoring``);
- the champion's own traffic never moves to another alias: a champion whose backend is being
  restarted keeps its requests (they wait for it within their deadline, ``scoring``), and one that
  cannot serve at all answers 503 with ``Retry-After``, because a candidate is not what production
  promised its clients.
"""

from __future__ import annotations

import random

from mnist_mlops.common.names import CHAMPION
from mnist_mlops.serve.gateway.errors import Unavailable
from mnist_mlops.serve.gateway.split import random_choice, sticky_choice
from mnist_mlops.serve.gateway.state import Table, Variant

RETRY_AFTER_SECONDS = "2"


def assigned(table: Table, user: str | None, rng: random.Random) -> Variant:
    """The variant the split assigns (sticky per ``user``), ready or not."""
    weights = table.weights()
    if not any(weight > 0 for weight in weights.values()):
        why = "; ".join(v.last_error for v in table.variants.values() if v.last_error) or "every weight is 0"
        raise Unavailable(
            f"no alias of the split can take traffic: {why}", headers={"Retry-After": RETRY_AFTER_SECONDS}
        )
    alias = sticky_choice(weights, user) if user else random_choice(weights, rng)
    return table.variants[alias]


def fallback(table: Table, variant: Variant) -> Variant | None:
    """Who answers when ``variant`` cannot: the champion, if it is another, ready variant."""
    champion = table.variants.get(CHAMPION)
    if champion is None or champion is variant or not champion.ready:
        return None
    return champion


def choose(table: Table, user: str | None, rng: random.Random) -> Variant:
    """The variant that answers this request; ``Unavailable`` (503) when none may."""
    variant = assigned(table, user, rng)
    if variant.ready or variant.asleep:  # a variant scaled to zero is woken by its request (``scoring``)
        return variant
    if variant.alias == CHAMPION and variant.state == "down" and variant.backend is not None:
        return variant
    stand_in = fallback(table, variant)
    if stand_in is not None:
        return stand_in
    raise unavailable(variant)


def unavailable(variant: Variant) -> Unavailable:
    """503 naming why ``variant`` cannot answer (its last error when it has one)."""
    if variant.last_error:
        why = variant.last_error
    elif variant.state == "starting":
        why = f"its backend for v{variant.pending_version or variant.version or '?'} is starting"
    else:
        why = f"its backend is {variant.state}"
    return Unavailable(
        f"the {variant.alias} cannot answer: {why}; retry in a moment",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )
