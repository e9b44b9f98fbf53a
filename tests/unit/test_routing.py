"""The data plane's decision, without sockets: which variant answers, and when none may."""

from __future__ import annotations

import random

import pytest

from mnist_mlops.serve.gateway.errors import Unavailable
from mnist_mlops.serve.gateway.routing import choose, fallback
from mnist_mlops.serve.gateway.state import Backend, Table, Variant


def table(**states: str) -> Table:
    """A table of variants of equal weight in the given states ('ready', 'down', 'starting'...)."""
    variants = {}
    for alias, state in states.items():
        variant = Variant(alias, 50.0, state=state)
        if state in ("ready", "down"):
            variant.backend = Backend(version="1" if alias == "champion" else "2", url=f"http://{alias}")
        variants[alias] = variant
    return Table(variants)


def routed(t: Table, users: int = 400) -> set[str]:
    rng = random.Random(0)
    return {choose(t, f"user-{i}", rng).alias for i in range(users)}


def test_ready_variants_answer_their_own_share():
    assert routed(table(champion="ready", challenger="ready")) == {"champion", "challenger"}


def test_a_challenger_that_is_not_ready_hands_its_requests_to_the_champion():
    assert routed(table(champion="ready", challenger="down")) == {"champion"}
    assert routed(table(champion="ready", challenger="starting")) == {"champion"}


def test_the_champions_traffic_never_moves_to_the_challenger():
    """A champion that cannot serve answers 503 with Retry-After: a candidate is not what
    production promised. One whose backend is being restarted keeps its requests (they wait)."""
    for state, waits in (("failed", False), ("down", True)):
        t = table(champion=state, challenger="ready")
        if state == "failed":
            t.variants["champion"].backend = Backend(version="1", url="http://champion")
        rng = random.Random(0)
        answered, refused = [], 0
        for i in range(400):
            try:
                answered.append(choose(t, f"user-{i}", rng).alias)
            except Unavailable as error:
                refused += 1
                assert error.headers["Retry-After"] and "the champion cannot answer" in error.message
        to_challenger = answered.count("challenger")
        assert 100 < to_challenger < 300  # the challenger's own users only, in either case
        if waits:
            assert refused == 0 and answered.count("champion") == 400 - to_challenger
        else:
            assert refused == 400 - to_challenger


def test_a_variant_says_why_it_cannot_answer():
    t = table(champion="absent")
    t.variants["champion"].last_error = "no registered model named 'mnist-cnn'; train one first (make quickstart)"
    with pytest.raises(Unavailable, match="no registered model named 'mnist-cnn'"):
        choose(t, None, random.Random(0))
    with pytest.raises(Unavailable, match="is starting"):
        choose(table(champion="starting"), None, random.Random(0))


def test_fallback_is_the_champion_only_for_other_variants():
    t = table(champion="ready", challenger="ready")
    assert fallback(t, t.variants["challenger"]) is t.variants["champion"]
    assert fallback(t, t.variants["champion"]) is None
    assert fallback(table(champion="down", challenger="ready"), t.variants["challenger"]) is None


def test_an_alias_gone_from_the_registry_takes_no_traffic():
    t = table(champion="ready", challenger="ready")
    t.variants["challenger"].in_registry = False  # rolled back: the alias was removed
    assert routed(t) == {"champion"}
    t.variants["champion"].in_registry = False
    t.variants["champion"].last_error = "alias 'champion' is not set in the registry"
    with pytest.raises(Unavailable, match="no alias of the split can take traffic: alias 'champion' is not set"):
        choose(t, None, random.Random(0))


def test_the_gateway_is_ready_when_it_can_answer_every_request():
    """A challenger still starting holds readiness (the split is not in effect yet); one that
    failed to start does not (the champion answers its share); the champion always does."""
    assert table(champion="ready", challenger="ready").is_ready()
    assert not table(champion="ready", challenger="starting").is_ready()
    assert table(champion="ready", challenger="failed").is_ready()
    assert not table(champion="failed", challenger="ready").is_ready()
    assert not table(champion="down", challenger="ready").is_ready()


def test_a_replica_the_data_plane_could_not_reach_is_passed_over_while_another_is_there():
    busy = Backend(version="1", url="http://busy", in_flight=3)
    unreachable = Backend(version="1", url="http://gone", failed=True)
    variant = Variant("champion", 100.0, replicas=[unreachable, busy], state="ready")
    assert variant.backend is busy  # busier, but reachable
    busy.failed = True
    assert variant.backend is unreachable  # all marked: the least busy, as before
    variant.replicas = [unreachable]
    assert variant.backend is unreachable  # alone: still the one (the caller waits for its restart)
