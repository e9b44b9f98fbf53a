"""The inference log's retention, on a real SQLite file: what is older than ``keep_days`` goes,
what is newer stays, and records keep being written while an old log is pruned step by step."""

from __future__ import annotations

import logging
import sqlite3
import time

from mnist_mlops.registry.inference_log.writer import DAY, Answer, InferenceLog

BODY = b'{"predictions": [{"label": 3, "confidence": 0.9, "probabilities": []}]}'


def answer(request_id: str, age_days: float) -> Answer:
    return Answer(request_id, "serve", time.time() - age_days * DAY, "champion", "1", None, 1.0, 200, BODY)


def ids(path, table: str) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {row[0] for row in connection.execute(f"SELECT request_id FROM {table}")}


def write(path, answers: list[Answer], feedback_ages: dict[str, float] | None = None) -> None:
    """``answers`` through a log that keeps everything; feedback written straight into the file,
    as if given ``feedback_ages`` days ago (``InferenceLog.feedback`` stamps it with now)."""
    log = InferenceLog(path)
    for item in answers:
        log.record(item)
    log.flush().result(10)
    log.close()
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO feedback (request_id, row, label, time) VALUES (?, 0, 3, ?)",
            [(rid, time.time() - age * DAY) for rid, age in (feedback_ages or {}).items()],
        )


def test_records_older_than_keep_days_go_at_start_up_and_newer_ones_stay(tmp_path, caplog):
    path = tmp_path / "log.db"
    write(path, [answer("old", 40), answer("older", 31), answer("new", 29)], {"old": 35, "new": 1})
    caplog.set_level(logging.INFO, logger="mnist_mlops.registry.inference_log.writer")
    log = InferenceLog(path, keep_days=30)
    log.flush().result(10)  # the first wake-up prunes, then drains
    assert ids(path, "predictions") == {"new"} and ids(path, "feedback") == {"new"}
    log.record(answer("after", 0))
    log.flush().result(10)
    log.close()
    assert ids(path, "predictions") == {"new", "after"}
    assert "deleted 2 predictions and 1 feedback older than 30 days" in caplog.text


def test_keep_days_0_keeps_everything(tmp_path):
    path = tmp_path / "log.db"
    write(path, [answer("ancient", 3650), answer("new", 0)], {"ancient": 3000})
    log = InferenceLog(path, keep_days=0)
    log.flush().result(10)
    log.close()
    assert ids(path, "predictions") == {"ancient", "new"} and ids(path, "feedback") == {"ancient"}


def test_a_large_old_log_is_pruned_in_small_steps_while_new_records_are_written(tmp_path):
    path = tmp_path / "log.db"
    write(path, [answer(f"old-{i}", 60) for i in range(25)])
    log = InferenceLog(path, keep_days=30, prune_batch=10, max_delay=0.05)
    log.record(answer("during", 0))
    log.flush().result(10)
    assert "during" in ids(path, "predictions")  # written after one step, not after the whole pass
    deadline = time.monotonic() + 10
    while ids(path, "predictions") != {"during"} and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    assert ids(path, "predictions") == {"during"}
