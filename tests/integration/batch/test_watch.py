"""The watch mode: each arriving file scored once, across a restart and a SIGINT."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pandas as pd

from tests.helpers import (
    png_bytes,
    start_process,
    stop_process,
    subprocess_env,
)
from tests.integration.batch.helpers import wait_for


def write_slowly(path: Path, data: bytes, pieces: int = 4, pause: float = 0.4) -> None:
    """A file still being written: appended in pieces, as a slow upload does."""
    with open(path, "wb") as f:
        for i in range(pieces):
            f.write(data[i * len(data) // pieces : (i + 1) * len(data) // pieces])
            f.flush()
            time.sleep(pause)


def scored_ids(folder: Path) -> list[str]:
    parts = sorted(folder.glob("part-*.parquet"))
    return [i for part in parts for i in pd.read_parquet(part)["id"]]


def test_watch_mode_scores_each_arriving_file_once_across_a_restart(store_uri, digits, tmp_path):
    images, labels = digits
    inbox, output = tmp_path / "inbox", tmp_path / "scored"
    inbox.mkdir()
    args = [
        sys.executable,
        "-m",
        "mnist_mlops.serve.batch",
        "--watch",
        str(inbox),
        "--output",
        str(output),
        "--poll_seconds",
        "0.2",
        "--settle_seconds",
        "1.0",
    ]
    env = subprocess_env(store_uri)
    watcher = start_process(args, env, tmp_path / "watch-1.log")
    try:
        for i in range(5):
            (inbox / f"digit-{i:02d}.png").write_bytes(png_bytes(images[i]))
        write_slowly(inbox / "digit-05.png", png_bytes(images[5]))  # never read half-written
        (inbox / "digit-06.png.part").write_bytes(b"an upload in progress")
        wait_for(lambda: len(scored_ids(output)) >= 6)
    finally:
        assert stop_process(watcher) == 0, (tmp_path / "watch-1.log").read_text()[-2000:]
    first = scored_ids(output)
    assert sorted(first) == [f"digit-{i:02d}.png" for i in range(6)]

    # While it is down, more files arrive; the restart scores those and only those.
    for i in range(6, 10):
        (inbox / f"digit-{i:02d}.png").write_bytes(png_bytes(images[i]))
    (inbox / "digit-06.png.part").rename(inbox / "digit-10.png")
    (inbox / "digit-10.png").write_bytes(png_bytes(images[10]))
    watcher = start_process(args, env, tmp_path / "watch-2.log")
    try:
        wait_for(lambda: len(scored_ids(output)) >= 11)
        time.sleep(1.5)  # a further poll must not score anything again
    finally:
        assert stop_process(watcher) == 0
    ids = scored_ids(output)
    assert sorted(ids) == [f"digit-{i:02d}.png" for i in range(11)], "each file scored exactly once"
    rows = pd.concat(pd.read_parquet(p) for p in sorted(output.glob("part-*.parquet")))
    assert rows["error"].isna().all(), rows["error"].dropna().tolist()
    assert (rows["label"].to_numpy() == [labels[int(i[6:8])] for i in rows["id"]]).mean() >= 0.8
    assert not list(output.glob(".part-*"))


def test_watch_mode_stops_cleanly_on_sigint_and_resumes_without_loss(store_uri, digits, tmp_path):
    images, _ = digits
    inbox, output = tmp_path / "inbox", tmp_path / "scored"
    inbox.mkdir()
    args = [
        sys.executable,
        "-m",
        "mnist_mlops.serve.batch",
        "--watch",
        str(inbox),
        "--output",
        str(output),
        "--poll_seconds",
        "0.1",
        "--settle_seconds",
        "0.2",
        "--chunk_rows",
        "2",
    ]
    watcher = start_process(args, subprocess_env(store_uri), tmp_path / "watch-1.log")
    wait_for(lambda: "watching" in (tmp_path / "watch-1.log").read_text())
    # Files keep arriving while it works; SIGINT lands in the middle of the stream.
    for i in range(30):
        (inbox / f"digit-{i:02d}.png").write_bytes(png_bytes(images[i]))
        time.sleep(0.05)
        if i == 15:
            wait_for(lambda: len(scored_ids(output)) >= 2)
            log = (tmp_path / "watch-1.log").read_text
            assert stop_process(watcher, sig=signal.SIGINT) == 0, log()[-2000:]
    interrupted = scored_ids(output)
    assert 2 <= len(interrupted) < 30 and len(interrupted) == len(set(interrupted))
    assert not list(output.glob(".part-*"))
    watcher = start_process(args, subprocess_env(store_uri), tmp_path / "watch-2.log")
    wait_for(lambda: len(scored_ids(output)) >= 30)
    assert stop_process(watcher) == 0, (tmp_path / "watch-2.log").read_text()[-2000:]
    assert sorted(scored_ids(output)) == [f"digit-{i:02d}.png" for i in range(30)]


def test_watch_mode_stopped_while_starting_exits_cleanly(store_uri, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = start_process(
        [sys.executable, "-m", "mnist_mlops.serve.batch", "--watch", str(inbox), "--output", str(tmp_path / "scored")],
        subprocess_env(store_uri),
        tmp_path / "watch.log",
    )
    time.sleep(0.5)  # still importing
    assert stop_process(watcher) == 0, (tmp_path / "watch.log").read_text()[-2000:]
