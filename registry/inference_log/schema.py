"""The inference log's tables, their versions, and where a log lives (a database URL, or a SQLite
file's path).

Schema, version 2 (times are Unix seconds, UTC)::

    predictions(request_id, row, role, time, variant, model_version, client_hash, label,
                confidence, latency_ms, status, key_name, client_request_id)
        -- primary key (request_id, role, row)
        request_id: the gateway's own id for the request (a client never chooses it);
        role: 'serve' (the answer the client got) or 'shadow' (the challenger's shadow answer);
        row: the row's position in the request; label/confidence NULL when status is not 200;
        client_hash: first 16 hex digits of sha256(X-User-ID), NULL without one;
        key_name: the API key that asked (NULL without keys); client_request_id: the client's
        own X-Request-ID, kept for correlation only.
    feedback(request_id, row, label, time, key_name)  -- primary key (request_id, row)
        key_name: the API key that gave the label.
    schema_info(version)                              -- one row: the schema's version

A log is created at the current version, and an older one is upgraded in place when a gateway
opens it (``create``): columns are added, nothing is dropped or rewritten, so an old log keeps its
records and older readers keep working on the columns they know.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
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
    Column("key_name", String(64)),
    Column("client_request_id", String(128)),
    Column("compute_ms", Float),  # the backend's time charged to the request (a batch's, by rows)
    Index("predictions_time", "time"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("row", Integer, primary_key=True),
    Column("label", Integer, nullable=False),
    Column("time", Float, nullable=False),
    Column("key_name", String(64)),
    Index("feedback_time", "time"),
)

# Replica-seconds held per variant and version, one row per gateway and metering interval: the
# part of a serverless bill no request carries (``VariantPool.autoscale`` meters it).
replica_time = Table(
    "replica_time",
    metadata,
    Column("gateway", String(64), primary_key=True),
    Column("variant", String(64), primary_key=True),
    Column("model_version", String(32), primary_key=True),
    Column("start", Float, primary_key=True),
    Column("time", Float, nullable=False),  # the interval's end
    Column("seconds", Float, nullable=False),
    Index("replica_time_time", "time"),
)

schema_info = Table("schema_info", metadata, Column("version", Integer, nullable=False))

TABLES = (predictions, feedback, replica_time)
SCHEMA_VERSION = 3
# Columns each version added, by table (version 1 is the first log, without schema_info).
ADDED = {
    2: {"predictions": ("key_name", "client_request_id"), "feedback": ("key_name",)},
    3: {"predictions": ("compute_ms",)},  # and the table replica_time (made by create_all)
}


class SchemaTooNew(Exception):
    """The log was written by a newer version of the gateway than this one."""


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


def create(engine: Engine) -> int:
    """Create what is missing and upgrade an older log to ``SCHEMA_VERSION``; the version found.

    Every step is idempotent (a column is added only where it is missing), so two gateways opening
    one old log at once cannot break it. Raises ``SchemaTooNew`` for a log of a later version.
    """
    if (path := sqlite_file(str(engine.url))) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    metadata.create_all(engine)
    with engine.begin() as connection:
        found = connection.execute(select(schema_info.c.version)).scalar()
        if found is not None and found > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the inference log is at schema version {found}; this gateway knows up to {SCHEMA_VERSION}"
            )
        for version in range((found or 1) + 1, SCHEMA_VERSION + 1):
            _add_columns(connection, ADDED.get(version, {}))
        if found is None:
            connection.execute(insert(schema_info).values(version=SCHEMA_VERSION))
        elif found < SCHEMA_VERSION:
            connection.execute(update(schema_info).values(version=SCHEMA_VERSION))
    return found or 1


def _add_columns(connection, added: dict[str, tuple[str, ...]]) -> None:
    existing = {table: {c["name"] for c in inspect(connection).get_columns(table)} for table in added}
    for table_name, columns in added.items():
        table = metadata.tables[table_name]
        for name in columns:
            if name not in existing[table_name]:
                column = table.c[name]
                kind = column.type.compile(dialect=connection.dialect)
                connection.execute(text(f'ALTER TABLE {table_name} ADD COLUMN "{name}" {kind}'))
