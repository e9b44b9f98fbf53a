"""A throwaway PostgreSQL cluster, started the way the team server starts its own (PostgreSQL's
``initdb``/``pg_ctl``, on a free loopback port, in a temporary folder), for the tests and the
benchmarks that compare the inference log on PostgreSQL with SQLite."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mnist_mlops.registry.team_server import Layout, PrivateCluster
from tests.helpers import free_port


@contextlib.contextmanager
def private_postgres(database: str = "mnist_inference") -> Iterator[str]:
    """A SQLAlchemy URL of a new, empty ``database`` in a cluster that lives for the ``with``."""
    import psycopg

    # Not under pytest's temporary folders (private to root): as root, the cluster runs as the
    # postgres user, who must reach its folder.
    parent = Path(tempfile.mkdtemp(prefix="mnist-pg-"))
    parent.chmod(0o711)
    layout = Layout(parent / "server")
    layout.root.mkdir()
    layout.root.chmod(0o711)
    cluster = PrivateCluster(layout, secrets.token_urlsafe(16), free_port())
    try:
        cluster.start()
        plain = cluster.base_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(f"{plain}/postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        yield f"{cluster.base_url}/{database}"
    finally:
        cluster.stop()
        shutil.rmtree(parent, ignore_errors=True)
