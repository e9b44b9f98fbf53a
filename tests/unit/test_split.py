"""Traffic split: parsing, weighted sticky assignment, minimal movement when a weight changes."""

from __future__ import annotations

import random

import pytest

from mnist_mlops.serve.gateway.split import SplitError, parse_split, random_choice, sticky_choice, validate_split

KEYS = [f"user-{i}" for i in range(20_000)]


def test_parse_split_reads_alias_weight_pairs():
    assert parse_split("champion=90, challenger=10") == {"champion": 90.0, "challenger": 10.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("champion", "alias=weight"),
        ("champion=-1", ">= 0"),
        ("champion=x", "must be a number"),
        ("champion=0", "at least one weight"),
        ("", "names no alias"),
        ("c h=1", "alias=weight"),
        ("champion=inf", "finite"),
    ],
)
def test_a_bad_split_is_refused_with_what_is_expected(text, message):
    with pytest.raises(SplitError, match=message):
        parse_split(text)


def test_validate_split_refuses_non_numbers_from_json():
    with pytest.raises(SplitError):
        validate_split({"champion": "ninety"})
    with pytest.raises(SplitError):
        validate_split({"champion": None})


def test_sticky_assignment_follows_the_weights():
    weights = {"champion": 90.0, "challenger": 10.0}
    share = sum(sticky_choice(weights, key) == "challenger" for key in KEYS) / len(KEYS)
    assert share == pytest.approx(0.10, abs=0.01)


def test_the_same_key_always_gets_the_same_alias():
    weights = {"champion": 50.0, "challenger": 50.0}
    assert [sticky_choice(weights, k) for k in KEYS[:500]] == [sticky_choice(weights, k) for k in KEYS[:500]]


def test_raising_one_weight_moves_only_keys_towards_it_and_only_as_many_as_needed():
    before = {k: sticky_choice({"champion": 90.0, "challenger": 10.0}, k) for k in KEYS}
    after = {k: sticky_choice({"champion": 80.0, "challenger": 20.0}, k) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == "champion" and after[k] == "challenger" for k in moved)
    assert len(moved) / len(KEYS) == pytest.approx(0.10, abs=0.01)  # 10% must move, not more


def test_adding_a_third_alias_takes_its_share_from_the_others_only():
    two = {k: sticky_choice({"champion": 50.0, "challenger": 50.0}, k) for k in KEYS}
    three = {k: sticky_choice({"champion": 50.0, "challenger": 50.0, "canary": 25.0}, k) for k in KEYS}
    moved = [k for k in KEYS if two[k] != three[k]]
    assert all(three[k] == "canary" for k in moved)
    assert len(moved) / len(KEYS) == pytest.approx(0.2, abs=0.015)


def test_a_zero_weight_alias_gets_nothing():
    weights = {"champion": 1.0, "challenger": 0.0}
    assert {sticky_choice(weights, k) for k in KEYS[:1000]} == {"champion"}
    rng = random.Random(0)
    assert {random_choice(weights, rng) for _ in range(1000)} == {"champion"}


def test_random_assignment_follows_the_weights():
    rng = random.Random(1)
    share = sum(random_choice({"a": 3.0, "b": 1.0}, rng) == "b" for _ in range(20_000)) / 20_000
    assert share == pytest.approx(0.25, abs=0.01)
