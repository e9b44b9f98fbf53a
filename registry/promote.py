"""Gated promotion and rollback: the only paths by which this tool moves an alias.

Every move follows the same steps under the registry lock (``registry.lock``): record moves made
outside the CLI since last time, check that the state the decision was based on still holds, move
the alias, mirror the stages from the aliases, append the event with its evidence. Stages are
derived and the history is append-only, so a move interrupted half-way is repaired by the next
one: ``mirror_stages`` recomputes every stage, and an alias that moved without its event is
recorded as a move outside the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from mnist_mlops.registry import history
from mnist_mlops.registry.actor import current_actor
from mnist_mlops.registry.defaults import DEFAULT_MIN_ACCURACY, DEFAULT_TOLERANCE
from mnist_mlops.registry.errors import RegistryError
from mnist_mlops.registry.evaluate import Comparison
from mnist_mlops.registry.lock import registry_lock, still_held
from mnist_mlops.registry.versions import CHALLENGER, CHAMPION, aliases, mirror_stages, resolve


@dataclass(frozen=True)
class Gate:
    tolerance: float = DEFAULT_TOLERANCE
    min_accuracy: float = DEFAULT_MIN_ACCURACY

    def refusals(self, comparison: Comparison) -> list[str]:
        """Why the candidate may not be promoted (empty: it may)."""
        reasons = []
        candidate = comparison.candidate
        if candidate.accuracy < self.min_accuracy:
            reasons.append(
                f"v{candidate.version} accuracy {candidate.accuracy:.4f} is below the minimum {self.min_accuracy:.4f}"
            )
        baseline = comparison.baseline
        if baseline is not None and candidate.accuracy < baseline.accuracy - self.tolerance:
            reasons.append(
                f"v{candidate.version} accuracy {candidate.accuracy:.4f} trails v{baseline.version}'s "
                f"{baseline.accuracy:.4f} by more than the tolerance {self.tolerance:.4f}"
            )
        return reasons


class GateRefused(RegistryError):
    """The gate refused a promotion; ``comparison`` holds the figures."""

    def __init__(self, message: str, comparison: Comparison) -> None:
        super().__init__(message)
        self.comparison = comparison
        self.output: tuple[object, str] | None = None  # what the CLI prints with the refusal


@dataclass(frozen=True)
class Move:
    alias: str
    from_version: str | None
    to_version: str | None
    event: history.Event
    stage_changes: list[tuple[str, str, str]]


def check_promotable(client: MlflowClient, name: str, candidate: ModelVersion, alias: str) -> str | None:
    """The version ``alias`` points at now; refuses a no-op move."""
    holder = aliases(client, name).get(alias)
    if holder == str(candidate.version):
        raise RegistryError(f"version {candidate.version} already is the {alias}; nothing to do")
    return holder


def promote(
    client: MlflowClient,
    name: str,
    candidate: ModelVersion,
    alias: str,
    comparison: Comparison | None,
    expected_holder: str | None,
    *,
    gate: Gate | None = None,
    reason: str = "",
    force: bool = False,
    action: str = "promote",
    actor: str | None = None,
    extra_figures: dict | None = None,
) -> Move:
    """Point ``alias`` at ``candidate`` if the gate allows it (or ``force``); record the move.

    ``expected_holder`` is the version the comparison was made against: if ``alias`` moved
    meanwhile, nothing changes and the caller is told to evaluate again.
    """
    gate = gate or Gate()
    refusals = gate.refusals(comparison) if comparison is not None else []
    if refusals and not force:
        raise GateRefused("promotion refused: " + "; ".join(refusals) + " (--force overrides)", comparison)
    number = str(candidate.version)
    with registry_lock(client, name) as token:
        history.reconcile(client, name)
        holder = aliases(client, name).get(alias)
        if holder != expected_holder:
            raise RegistryError(
                f"the {alias} moved from v{expected_holder} to v{holder} during evaluation; "
                "nothing changed, run the promotion again"
            )
        if not still_held(client, name, token):
            raise RegistryError("lost the promotion lock (its lease ran out); nothing changed, try again")
        client.set_registered_model_alias(name, alias, number)
        if alias == CHAMPION and CHALLENGER in candidate.aliases:
            # The challenger became the champion: there is no challenger until the next one.
            client.delete_registered_model_alias(name, CHALLENGER)
            history.append(
                client,
                name,
                history.Event(
                    history.now_iso(),
                    actor or current_actor(),
                    action,
                    CHALLENGER,
                    number,
                    None,
                    f"promoted to {alias}",
                ),
            )
        figures = (comparison.figures() if comparison is not None else {}) | (extra_figures or {})
        if refusals:
            figures["refusals_overridden"] = refusals
        event = history.Event(
            history.now_iso(), actor or current_actor(), action, alias, holder, number, reason, force, figures
        )
        history.append(client, name, event)
        changes = mirror_stages(client, name, retired=frozenset({holder} - {None}))
    return Move(alias, holder, number, event, changes)


def rollback(
    client: MlflowClient,
    name: str,
    reason: str,
    alias: str = CHAMPION,
    action: str = "rollback",
    actor: str | None = None,
    verify=None,
) -> Move:
    """Point ``alias`` back at the version it held before the current one (from the history).

    ``verify(version)`` may check the target (for example that its model still loads) before the move.
    """
    with registry_lock(client, name):
        events = history.reconcile(client, name)
        current = aliases(client, name).get(alias)
        if current is None:
            raise RegistryError(f"{name} has no {alias}; nothing to roll back")
        stack = history.previous_champions(events, alias)
        if not stack:
            raise RegistryError(
                f"the history of {name} has no earlier {alias} than v{current}; nothing to roll back to"
            )
        target = resolve(client, name, stack[-1])
        if verify is not None:
            verify(target)
        client.set_registered_model_alias(name, alias, str(target.version))
        event = history.Event(
            history.now_iso(), actor or current_actor(), action, alias, current, str(target.version), reason
        )
        history.append(client, name, event)
        changes = mirror_stages(client, name, retired=frozenset({current}))
    return Move(alias, current, str(target.version), event, changes)


def remove_alias(
    client: MlflowClient,
    name: str,
    alias: str,
    reason: str,
    action: str = "remove",
    actor: str | None = None,
    figures: dict | None = None,
) -> Move:
    """Take ``alias`` off its version (for example an A/B loser leaving the split); record why."""
    with registry_lock(client, name):
        history.reconcile(client, name)
        current = aliases(client, name).get(alias)
        if current is None:
            raise RegistryError(f"{name} has no {alias} to remove")
        client.delete_registered_model_alias(name, alias)
        event = history.Event(
            history.now_iso(),
            actor or current_actor(),
            action,
            alias,
            current,
            None,
            reason,
            False,
            figures or {},
        )
        history.append(client, name, event)
        changes = mirror_stages(client, name, retired=frozenset({current}))
    return Move(alias, current, None, event, changes)
