"""The inference log's tables, and where a log lives (a database URL, or a SQLite file's path).

Schema (times are Unix seconds, UTC)::

    predictions(request_id, row, role, time, variant, model_version, client_hash, label,
                confidence, latency_ms, status)   -- primary key (request_id, role, row)
        role: 'serve' (the answer the client got) or 'shadow' (the challenger's shadow answer);
        row: the row's position in the request; label/confidence NULL when status is not 200;
        client_hash: first 16 hex digits of sha256(X-User-ID), NULL without one.
    feedback(request_id, row, label, time)        -- primary key (request_id, row)
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, create_engine, event
from sqlalchemy.engine import Engine

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("row", Integer, primary_key=True),
    Column("role", String(16), primary_key=True),
    Column("time", Float, nullable=False),
    Column("variant", String(64), nullable=False),
    Column("model_version", String(32)),
    Column("client_hash", String(16)),
    Column("label", Integer),
    Column("confidence", Float),
    Column("latency_ms", Float),
    Column("status", Integer, nullable=False),
    Index("predictions_time", "time"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("row", Integer, primary_key=True),
    Column("label", Integer, nullable=False),
    Column("time", Float, nullable=False),
    Index("feedback_time", "time"),
)

TABLES = (predictions, feedback)
DEFAULT_LOG = "mnist-inference.db"


def database_url(location: str | Path) -> str:
    """A SQLAlchemy URL for ``location``: a URL as given, a path as its SQLite file."""
    text = str(location)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases or an in-memory SQLite)."""
    if not is_sqlite(url):
        return None
    path = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
    return Path(path) if path and path != ":memory:" else None


def engine_for(url: str, busy_timeout: float = 5.0) -> Engine:
    """An engine for the log; SQLite files run in WAL mode, so readers never block the writer."""
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": busy_timeout, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _wal(connection, record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def create(engine: Engine) -> None:
    """Create the tables and indexes that are missing (an existing log is left as it is)."""
    if (path := sqlite_file(str(engine.url))) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    metadata.create_all(engine)
