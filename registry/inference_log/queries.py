"""What the A/B analysis reads from the inference log: each statement it runs, by what it answers.

``LogReader`` opens the log read-only where the database allows it (a SQLite file), so an analysis
can never change the evidence it reads. Rows with a version of ``None`` match any version.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, distinct, exists, func, or_, select, true
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased

from mnist_mlops.registry.inference_log.schema import (
    database_url,
    engine_for,
    feedback,
    predictions,
    replica_time,
    sqlite_file,
)


@dataclass(frozen=True)
class Usage:
    """What one key used of one variant over a time range: the lines of a bill."""

    key_name: str | None  # None: a gateway without keys
    variant: str
    requests: int
    images: int
    errors: int  # requests answered with a status other than 200
    busy_seconds: float  # the requests' time in the gateway, received to answered
    compute_seconds: float = 0.0  # the backends' time charged to them (a batch's, shared by rows)

    def to_dict(self) -> dict:
        return {
            "key": self.key_name,
            "variant": self.variant,
            "requests": self.requests,
            "images": self.images,
            "errors": self.errors,
            "busy_seconds": round(self.busy_seconds, 3),
            "compute_seconds": round(self.compute_seconds, 3),
        }


class LogMissing(Exception):
    """There is no inference log where the caller pointed."""


@dataclass(frozen=True)
class ArmRow:
    request_id: str
    row: int
    status: int
    latency_ms: float | None
    confidence: float | None


def _version(column, version: str | None):
    return true() if version is None else column == version


class LogReader:
    """Read-only access to one inference log."""

    def __init__(self, location) -> None:
        url = database_url(location)
        path = sqlite_file(url)
        if path is not None:
            if not path.is_file():
                raise LogMissing(f"no inference log at {path} (the gateway writes it; see --inference_log)")
            url = f"sqlite:///file:{path}?mode=ro&uri=true"
        self.engine: Engine = engine_for(url, busy_timeout=10.0)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _all(self, statement) -> list:
        with self.engine.connect() as connection:
            return connection.execute(statement).all()

    def has_shadow(self, version: str | None, since: float) -> bool:
        """Whether any shadow answer of ``version`` was logged since ``since``."""
        p = predictions.c
        query = select(exists().where(p.role == "shadow", p.time >= since, _version(p.model_version, version)))
        with self.engine.connect() as connection:
            return bool(connection.execute(query).scalar())

    def arm_rows(self, variant: str, role: str, version: str | None, since: float) -> list[ArmRow]:
        """Every logged row of one arm: (request, row, status, latency, confidence)."""
        p = predictions.c
        query = select(p.request_id, p.row, p.status, p.latency_ms, p.confidence).where(
            p.variant == variant, p.role == role, _version(p.model_version, version), p.time >= since
        )
        return [ArmRow(*row) for row in self._all(query)]

    def arm_feedback(self, variant: str, role: str, version: str | None, since: float) -> list[bool]:
        """Per labelled answer of one arm: whether its label was right."""
        p = predictions
        query = (
            select(p.c.label == feedback.c.label)
            .select_from(feedback.join(p, and_(p.c.request_id == feedback.c.request_id, p.c.row == feedback.c.row)))
            .where(
                p.c.variant == variant,
                p.c.role == role,
                _version(p.c.model_version, version),
                p.c.status == 200,
                p.c.time >= since,
            )
        )
        return [bool(right) for (right,) in self._all(query)]

    def split_feedback(self, arms: list[tuple[str, str | None]], since: float) -> list[tuple[str, bool]]:
        """Labelled answers of the served arms ``(variant, version)``, in the order the labels
        came: (variant, right)."""
        p = predictions
        either = or_(*(and_(p.c.variant == variant, _version(p.c.model_version, version)) for variant, version in arms))
        query = (
            select(p.c.variant, p.c.label == feedback.c.label)
            .select_from(
                feedback.join(
                    p,
                    and_(p.c.request_id == feedback.c.request_id, p.c.row == feedback.c.row, p.c.role == "serve"),
                )
            )
            .where(p.c.status == 200, p.c.time >= since, either)
            .order_by(feedback.c.time, feedback.c.request_id)
        )
        return [(variant, bool(right)) for variant, right in self._all(query)]

    def feedback_by_key(self, arms: list[tuple[str, str | None]], since: float) -> dict[str | None, int]:
        """Labelled answers of the served arms ``(variant, version)`` by the key that labelled
        them (None: a gateway without keys, or a log older than key names)."""
        p = predictions
        either = or_(*(and_(p.c.variant == variant, _version(p.c.model_version, version)) for variant, version in arms))
        query = (
            select(feedback.c.key_name, func.count())
            .select_from(
                feedback.join(
                    p,
                    and_(p.c.request_id == feedback.c.request_id, p.c.row == feedback.c.row, p.c.role == "serve"),
                )
            )
            .where(p.c.status == 200, p.c.time >= since, either)
            .group_by(feedback.c.key_name)
        )
        return {key: count for key, count in self._all(query)}

    def paired_feedback(
        self, variant: str, version: str | None, shadow_version: str | None, since: float
    ) -> list[tuple[bool, bool]]:
        """Labelled requests answered by both the served arm and its shadow, in the order the
        labels came: (served right, shadow right)."""
        served, shadow = aliased(predictions), aliased(predictions)
        query = (
            select(served.c.label == feedback.c.label, shadow.c.label == feedback.c.label)
            .select_from(
                feedback.join(
                    served,
                    and_(
                        served.c.request_id == feedback.c.request_id,
                        served.c.row == feedback.c.row,
                        served.c.role == "serve",
                    ),
                ).join(
                    shadow,
                    and_(
                        shadow.c.request_id == feedback.c.request_id,
                        shadow.c.row == feedback.c.row,
                        shadow.c.role == "shadow",
                    ),
                )
            )
            .where(
                served.c.status == 200,
                shadow.c.status == 200,
                served.c.time >= since,
                served.c.variant == variant,
                _version(served.c.model_version, version),
                _version(shadow.c.model_version, shadow_version),
            )
            .order_by(feedback.c.time, feedback.c.request_id)
        )
        return [(bool(a), bool(b)) for a, b in self._all(query)]

    def agreement(self, shadow_version: str | None, since: float) -> list[bool]:
        """Per request answered by both the served arm and the shadow: whether they agreed."""
        served, shadow = aliased(predictions), aliased(predictions)
        query = (
            select(served.c.label == shadow.c.label)
            .select_from(
                served.join(
                    shadow,
                    and_(
                        shadow.c.request_id == served.c.request_id,
                        shadow.c.row == served.c.row,
                        shadow.c.role == "shadow",
                    ),
                )
            )
            .where(
                served.c.role == "serve",
                served.c.status == 200,
                shadow.c.status == 200,
                served.c.time >= since,
                _version(shadow.c.model_version, shadow_version),
            )
        )
        return [bool(same) for (same,) in self._all(query)]

    def replica_seconds(self, since: float, until: float) -> dict[str, float]:
        """Replica-seconds held per variant, over every gateway writing this log, in the metering
        intervals that ended with ``since <= time < until``."""
        r = replica_time.c
        query = (
            select(r.variant, func.sum(r.seconds))
            .where(r.time >= since, r.time < until)
            .group_by(r.variant)
            .order_by(r.variant)
        )
        return {variant: float(seconds) for variant, seconds in self._all(query)}

    def usage(self, since: float, until: float) -> list[Usage]:
        """Per key and variant, the answers served (shadow copies are the platform's, not the
        client's) with ``since <= time < until``: requests, images (rows), errors, busy seconds,
        backend compute seconds."""
        p = predictions.c
        first_row = p.row == 0
        query = (
            select(
                p.key_name,
                p.variant,
                func.count(distinct(p.request_id)),
                func.count(),
                func.count(distinct(case((p.status != 200, p.request_id)))),
                func.coalesce(func.sum(case((first_row, p.latency_ms), else_=0.0)), 0.0),
                func.coalesce(func.sum(case((first_row, p.compute_ms), else_=0.0)), 0.0),
            )
            .where(p.role == "serve", p.time >= since, p.time < until)
            .group_by(p.key_name, p.variant)
            .order_by(p.key_name, p.variant)
        )
        return [
            Usage(key, variant, requests, images, errors, float(busy_ms) / 1000.0, float(compute_ms) / 1000.0)
            for key, variant, requests, images, errors, busy_ms, compute_ms in self._all(query)
        ]
