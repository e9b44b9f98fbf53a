"""The inference log on both databases it runs on (a real SQLite file, and a real PostgreSQL
cluster started for this file): retention (what is older than ``keep_days`` goes, what is newer
stays, records keep being written while an old log is pruned step by step) and usage per key."""

from __future__ import annotations

import itertools
import logging
import time

import pytest
from sqlalchemy import create_engine, text

from mnist_mlops.registry.inference_log.queries import LogReader
from mnist_mlops.registry.inference_log.writer import DAY, Answer, InferenceLog
from tests.postgres import private_postgres

_logs = itertools.count()


@pytest.fixture(scope="module")
def postgres_server():
    """One cluster for the file; each test gets its own database in it (``log``)."""
    with private_postgres("first") as url:
        yield url.rsplit("/", 1)[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request, tmp_path) -> str:
    """A new, empty inference log's URL on each database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    server = request.getfixturevalue("postgres_server")
    name = f"log_{next(_logs)}"
    engine = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{server}/{name}"


BODY = b'{"predictions": [{"label": 3, "confidence": 0.9, "probabilities": []}]}'


def answer(request_id: str, age_days: float) -> Answer:
    return Answer(request_id, "serve", time.time() - age_days * DAY, "champion", "1", None, 1.0, 200, BODY)


def ids(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    with engine.connect() as connection:
        found = {row[0] for row in connection.execute(text(f"SELECT request_id FROM {table}"))}
    engine.dispose()
    return found


def write(url: str, answers: list[Answer], feedback_ages: dict[str, float] | None = None) -> None:
    """``answers`` through a log that keeps everything; feedback written straight into the
    database, as if given ``feedback_ages`` days ago (``InferenceLog.feedback`` stamps it with now)."""
    log = InferenceLog(url)
    for item in answers:
        log.record(item)
    log.flush().result(10)
    log.close()
    engine = create_engine(url)
    with engine.begin() as connection:
        for rid, age in (feedback_ages or {}).items():
            connection.execute(
                text("INSERT INTO feedback (request_id, row, label, time) VALUES (:rid, 0, 3, :time)"),
                {"rid": rid, "time": time.time() - age * DAY},
            )
    engine.dispose()


def test_records_older_than_keep_days_go_at_start_up_and_newer_ones_stay(log, caplog):
    write(log, [answer("old", 40), answer("older", 31), answer("new", 29)], {"old": 35, "new": 1})
    caplog.set_level(logging.INFO, logger="mnist_mlops.registry.inference_log.writer")
    writer = InferenceLog(log, keep_days=30)
    writer.flush().result(10)  # the first wake-up prunes, then drains
    assert ids(log, "predictions") == {"new"} and ids(log, "feedback") == {"new"}
    writer.record(answer("after", 0))
    writer.flush().result(10)
    writer.close()
    assert ids(log, "predictions") == {"new", "after"}
    assert "deleted 2 predictions and 1 feedback older than 30 days" in caplog.text


def test_keep_days_0_keeps_everything(log):
    write(log, [answer("ancient", 3650), answer("new", 0)], {"ancient": 3000})
    writer = InferenceLog(log, keep_days=0)
    writer.flush().result(10)
    writer.close()
    assert ids(log, "predictions") == {"ancient", "new"} and ids(log, "feedback") == {"ancient"}


def test_a_large_old_log_is_pruned_in_small_steps_while_new_records_are_written(log):
    write(log, [answer(f"old-{i}", 60) for i in range(25)])
    writer = InferenceLog(log, keep_days=30, prune_batch=10, max_delay=0.05)
    writer.record(answer("during", 0))
    writer.flush().result(10)
    assert "during" in ids(log, "predictions")  # written after one step, not after the whole pass
    deadline = time.monotonic() + 10
    while ids(log, "predictions") != {"during"} and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.close()
    assert ids(log, "predictions") == {"during"}


def test_usage_counts_each_keys_requests_images_errors_busy_and_compute_time_by_variant(log):
    """The lines of a bill, on both databases: shadow copies are not the client's, a request of
    three images is one request and three images, and the range is half-open."""
    now = time.time()
    three = b'{"predictions": [{"label": 1}, {"label": 2}, {"label": 3}]}'
    rows = [
        Answer("a1", "serve", now - 10, "champion", "1", None, 20.0, 200, three, key_name="alice", compute_ms=12.0),
        Answer("a2", "serve", now - 9, "champion", "1", None, 10.0, 503, b"", key_name="alice"),
        Answer("a2", "shadow", now - 9, "challenger", "2", None, 99.0, 200, BODY, key_name="alice"),
        Answer("b1", "serve", now - 8, "challenger", "2", None, 5.0, 200, BODY, key_name="bob", compute_ms=4.0),
        Answer("old", "serve", now - 3 * DAY, "champion", "1", None, 5.0, 200, BODY, key_name="bob"),
    ]
    write(log, rows)
    with LogReader(log) as reader:
        found = {(u.key_name, u.variant): u.to_dict() for u in reader.usage(now - DAY, now)}
    assert found == {
        ("alice", "champion"): {
            "key": "alice",
            "variant": "champion",
            "requests": 2,
            "images": 4,
            "errors": 1,
            "busy_seconds": 0.03,
            "compute_seconds": 0.012,
        },
        ("bob", "challenger"): {
            "key": "bob",
            "variant": "challenger",
            "requests": 1,
            "images": 1,
            "errors": 0,
            "busy_seconds": 0.005,
            "compute_seconds": 0.004,
        },
    }
    with LogReader(log) as reader:
        assert [(u.key_name, u.requests) for u in reader.usage(now - 9, now - 8)] == [("alice", 1)]


def test_a_log_of_the_previous_schema_is_upgraded_in_place_and_keeps_its_rows(log):
    """A log written before usage had compute time (schema 2) gains the column on first open, on
    both databases; its rows stay and count with no compute time."""
    now = time.time()
    write(log, [Answer("before", "serve", now - 5, "champion", "1", None, 5.0, 200, BODY, key_name="bob")])
    engine = create_engine(log)
    with engine.begin() as connection:  # back to what a gateway of schema 2 left
        connection.execute(text("ALTER TABLE predictions DROP COLUMN compute_ms"))
        connection.execute(text("UPDATE schema_info SET version = 2"))
    engine.dispose()
    after = Answer("after", "serve", now - 1, "champion", "1", None, 5.0, 200, BODY, key_name="bob", compute_ms=3.0)
    write(log, [after])
    with LogReader(log) as reader:
        (usage,) = reader.usage(now - DAY, now)
    assert (usage.requests, usage.compute_seconds) == (2, 0.003)
    engine = create_engine(log)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version FROM schema_info")).scalar() == 3
    engine.dispose()


def test_replica_seconds_sum_per_variant_over_gateways_within_the_range(log):
    """The part of a bill no request carries: what each gateway metered, summed per variant."""
    now = time.time()
    writer = InferenceLog(log)
    meter = [
        ("gw-a", "champion", "1", now - 30, now - 15, 15.0),
        ("gw-a", "champion", "1", now - 15, now - 1, 28.0),  # two replicas for 14 s
        ("gw-b", "champion", "1", now - 20, now - 2, 18.0),
        ("gw-a", "challenger", "2", now - 15, now - 1, 14.0),
        ("gw-a", "champion", "1", now - 3 * DAY, now - 3 * DAY + 15, 15.0),  # out of range
    ]
    columns = ("gateway", "variant", "model_version", "start", "time", "seconds")
    writer.record_replica_time([dict(zip(columns, row, strict=True)) for row in meter])
    writer.flush().result(10)
    writer.close()
    with LogReader(log) as reader:
        assert reader.replica_seconds(now - DAY, now) == {"challenger": 14.0, "champion": 61.0}
        assert reader.replica_seconds(now - 14, now) == {"challenger": 14.0, "champion": 46.0}
