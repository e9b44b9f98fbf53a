"""Per-key limits without a clock: rates, requests in flight, daily images, defaults."""

from __future__ import annotations

import pytest

from mnist_mlops.serve.gateway.limits import DAY, LimitBook, LimitExceeded, Limits


def test_a_rate_allows_a_minutes_burst_then_refills_at_its_pace():
    book = LimitBook({"alice": Limits(rate_per_minute=60)})
    for _ in range(60):
        book.admit("alice", now=100.0)
        book.release("alice")
    with pytest.raises(LimitExceeded, match="over its 60 requests per minute") as over:
        book.admit("alice", now=100.0)
    assert over.value.retry_after == 1
    book.admit("alice", now=101.0)  # one second later: one more token


def test_requests_in_flight_are_capped_per_key_and_others_are_not_affected():
    book = LimitBook({"alice": Limits(max_in_flight=2)})
    book.admit("alice", 0.0)
    book.admit("alice", 0.0)
    with pytest.raises(LimitExceeded, match="at most 2 at once"):
        book.admit("alice", 0.0)
    book.admit("bob", 0.0)  # no limits of its own, none by default
    book.release("alice")
    book.admit("alice", 0.0)


def test_images_per_day_run_out_until_the_next_utc_day():
    book = LimitBook({"alice": Limits(images_per_day=100)})
    book.admit("alice", 10.0)
    book.count_images("alice", 100, 10.0)
    book.release("alice")
    with pytest.raises(LimitExceeded, match="used its 100 images for today") as over:
        book.admit("alice", 20.0)
    assert over.value.retry_after == DAY - 20
    book.admit("alice", DAY + 1.0)


def test_a_keys_own_limits_win_over_the_defaults():
    own = Limits(rate_per_minute=5).merged(Limits(rate_per_minute=100, max_in_flight=3))
    assert own == Limits(rate_per_minute=5, max_in_flight=3)
    book = LimitBook(defaults=Limits(max_in_flight=1))
    book.admit("anyone", 0.0)
    with pytest.raises(LimitExceeded):
        book.admit("anyone", 0.0)


def test_a_request_that_would_pass_the_days_quota_is_refused_whole_and_charges_nothing():
    book = LimitBook({"alice": Limits(images_per_day=100)})
    book.charge_images("alice", 90, 10.0)
    with pytest.raises(LimitExceeded, match="has 10 of its 100 images for today"):
        book.charge_images("alice", 20, 11.0)
    book.charge_images("alice", 10, 12.0)  # what is left still fits
    with pytest.raises(LimitExceeded):
        book.admit("alice", 13.0)
