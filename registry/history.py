"""The promotion history, kept in the registry itself: one registered-model tag per event.

MLflow records which version holds an alias now, not who moved it, when or why. Each move is
appended as a tag ``mnist.history.<ns timestamp>.<random>`` whose value is the event as JSON:
keys never repeat, so two writers can never overwrite each other's entries (append-only), the
history travels with the model wherever the registry is shared, and no second database is needed.
Tag values hold up to 100,000 characters, far more than an event with its figures.

A move made outside this tool (the alias editor in the MLflow UI, a script using MlflowClient)
leaves no event; ``reconcile`` notices it the first time the history is read and records it as
``moved outside the CLI``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from mlflow import MlflowClient

from mnist_mlops.registry.versions import aliases, require_model

TAG_PREFIX = "mnist.history."
OUTSIDE_REASON = "moved outside the CLI"
OUTSIDE_ACTOR = "unknown (outside the CLI)"


@dataclass(frozen=True)
class Event:
    time: str  # ISO 8601, UTC
    actor: str
    action: str  # register | promote | rollback | remove | outside | auto-promote | auto-rollback
    alias: str
    from_version: str | None
    to_version: str | None  # None: the alias was removed
    reason: str = ""
    forced: bool = False
    figures: dict = field(default_factory=dict)  # the evaluation that gated the move

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Event:
        data = json.loads(text)
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _new_key() -> str:
    return f"{TAG_PREFIX}{time.time_ns():020d}.{uuid.uuid4().hex[:8]}"


def append(client: MlflowClient, name: str, event: Event) -> None:
    client.set_registered_model_tag(name, _new_key(), event.to_json())


def read(client: MlflowClient, name: str) -> list[Event]:
    """Every recorded event, oldest first (keys sort by time)."""
    tags = require_model(client, name).tags
    keys = sorted(key for key in tags if key.startswith(TAG_PREFIX))
    events = []
    for key in keys:
        try:
            events.append(Event.from_json(tags[key]))
        except (ValueError, TypeError):
            continue  # a hand-edited or foreign tag is not history
    return events


def recorded_holders(events: list[Event]) -> dict[str, str | None]:
    """alias -> version as the history last recorded it."""
    holders: dict[str, str | None] = {}
    for event in events:
        holders[event.alias] = event.to_version
    return holders


def unrecorded_moves(events: list[Event], current: dict[str, str]) -> list[Event]:
    """Events for aliases whose holder differs from what the history last recorded."""
    recorded = recorded_holders(events)
    moves = []
    for alias in sorted(set(recorded) | set(current)):
        now, before = current.get(alias), recorded.get(alias)
        if now != before:
            moves.append(Event(now_iso(), OUTSIDE_ACTOR, "outside", alias, before, now, OUTSIDE_REASON))
    return moves


def reconcile(client: MlflowClient, name: str) -> list[Event]:
    """Record moves made outside the CLI (first seen now); return the full history.

    Call it under the registry lock (``registry.lock``): a move by this tool sets the alias
    first and appends its event right after, and a reader between the two would otherwise record
    that move as made outside the CLI.
    """
    events = read(client, name)
    for event in unrecorded_moves(events, aliases(client, name)):
        append(client, name, event)
        events.append(event)
    return events


def previous_champions(events: list[Event], alias: str = "champion") -> list[str]:
    """The stack of versions ``alias`` can roll back to, most recent last.

    A forward move (promotion, registration, a move outside the CLI) pushes the version it
    replaced; a rollback pops it. So v1 -> v2 -> v3, rollback, rollback lands on v1, not v3.
    """
    stack: list[str] = []
    for event in events:
        if event.alias != alias:
            continue
        if event.action in ("rollback", "auto-rollback"):
            if stack and stack[-1] == event.to_version:
                stack.pop()
        elif event.from_version is not None and event.from_version != event.to_version:
            stack.append(event.from_version)
    return stack


def reconciled(client: MlflowClient, name: str) -> list[Event]:
    """``reconcile`` under the registry lock, for readers (``list``, ``history``)."""
    from mnist_mlops.registry.lock import registry_lock

    with registry_lock(client, name):
        return reconcile(client, name)
