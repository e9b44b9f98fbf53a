"""``mnist-registry`` against a real SQLite store and a real ``mlflow server`` (REST), with real
models: the tiny session model and a deliberately weak one."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mnist_mlops.registry.history import read as read_history
from tests.helpers import free_port, start_process, stop_process, subprocess_env, wait_for_http

EVAL = ["--max_samples", "1000"]
GATE = ["--min_accuracy", "0.5"]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real tracking server, as a team runs it: ``mlflow server`` over SQLite, serving artifacts."""
    directory = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    process = start_process(
        [
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{directory / 'server.db'}",
            "--artifacts-destination",
            str(directory / "artifacts"),
        ],
        subprocess_env(),
        directory / "server.log",
        cwd=directory,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process, timeout=120)
    except Exception:
        stop_process(process)
        raise AssertionError((directory / "server.log").read_text()[-3000:]) from None
    yield url
    stop_process(process)


@pytest.fixture(params=["sqlite", "server"])
def store(request, tmp_path):
    """A tracking URI and a model name of this test's own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}", "mnist-cnn"
    return request.getfixturevalue("mlflow_server"), f"digits-{uuid.uuid4().hex[:8]}"


def add_version(uri: str, name: str, model) -> str:
    """Register ``model`` as a new version of ``name``.

    A tracking server accepts only sources inside its own artifact store (it refuses local
    paths), so there the model is first uploaded as a run's artifacts, as a team's CI would.
    """
    client = MlflowClient(uri, uri)
    with contextlib.suppress(MlflowException):
        client.create_registered_model(name)
    source, run_id = model.source, None
    if uri.startswith("http"):
        run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
        client.log_artifacts(run.info.run_id, model.source, "model")
        client.set_terminated(run.info.run_id)
        source, run_id = f"runs:/{run.info.run_id}/model", run.info.run_id
    version = client.create_model_version(
        name,
        source,
        run_id=run_id,
        tags={"test_accuracy": f"{model.test_accuracy:.6f}", "run_id": model.run_id},
    )
    return str(version.version)


def registry(uri: str, name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_mlops.registry", "--tracking_uri", uri, "--model", name, *args],
        env=subprocess_env(uri, MNIST_ACTOR="test-actor"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def holders(uri: str, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in MlflowClient(uri, uri).get_registered_model(name).aliases.items()}


def stages(uri: str, name: str) -> dict[str, str]:
    versions = MlflowClient(uri, uri).search_model_versions(f"name = '{name}'")
    return {str(v.version): v.current_stage for v in versions}


def set_champion(uri: str, name: str, version: str) -> None:
    client = MlflowClient(uri, uri)
    client.set_registered_model_alias(name, "champion", version)


def test_the_gate_refuses_a_worse_model_with_the_figures_and_changes_nothing(store, tiny_model, weak_model):
    uri, name = store
    champion, worse = add_version(uri, name, tiny_model), add_version(uri, name, weak_model)
    set_champion(uri, name, champion)
    before = holders(uri, name)
    result = registry(uri, name, "promote", worse, *EVAL, *GATE)
    assert result.returncode == 3, result.stderr
    assert "promotion refused" in result.stderr and "trails" in result.stderr
    assert "95% interval" in result.stdout and "McNemar" in result.stdout
    assert holders(uri, name) == before


def test_a_better_model_goes_through_moves_the_alias_mirrors_stages_and_is_recorded(store, tiny_model, weak_model):
    uri, name = store
    weak, better = add_version(uri, name, weak_model), add_version(uri, name, tiny_model)
    set_champion(uri, name, weak)
    result = registry(uri, name, "promote", better, "--reason", "better on the test set", *EVAL, *GATE)
    assert result.returncode == 0, result.stderr
    assert holders(uri, name)["champion"] == better
    assert stages(uri, name) == {better: "Production", weak: "Archived"}
    promotion = read_history(MlflowClient(uri, uri), name)[-1]
    assert (promotion.action, promotion.from_version, promotion.to_version) == ("promote", weak, better)
    assert promotion.actor == "test-actor" and promotion.reason == "better on the test set"
    assert promotion.figures["candidate"]["accuracy"] > promotion.figures["baseline"]["accuracy"]
    assert promotion.figures["count"] == 1000 and promotion.figures["evaluation_run_id"]


def test_force_overrides_the_gate_and_is_recorded_as_forced(store, tiny_model, weak_model):
    uri, name = store
    champion, worse = add_version(uri, name, tiny_model), add_version(uri, name, weak_model)
    set_champion(uri, name, champion)
    result = registry(uri, name, "promote", worse, "--force", "--reason", "incident drill", *EVAL, *GATE)
    assert result.returncode == 0, result.stderr
    event = read_history(MlflowClient(uri, uri), name)[-1]
    assert event.forced is True and event.figures["refusals_overridden"]
    assert holders(uri, name)["champion"] == worse


def test_rollback_restores_the_previous_champion_and_then_has_nothing_left(store, tiny_model, weak_model):
    uri, name = store
    first, second = add_version(uri, name, weak_model), add_version(uri, name, tiny_model)
    set_champion(uri, name, first)
    assert registry(uri, name, "promote", second, *EVAL, *GATE).returncode == 0
    result = registry(uri, name, "rollback", "--reason", "error rate up")
    assert result.returncode == 0, result.stderr
    assert holders(uri, name)["champion"] == first
    assert stages(uri, name)[first] == "Production" and stages(uri, name)[second] == "Archived"
    again = registry(uri, name, "rollback", "--reason", "again")
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and "nothing to roll back to" in again.stderr


def test_a_move_made_outside_the_cli_is_shown_by_list_and_history(store, tiny_model, weak_model):
    uri, name = store
    first, second = add_version(uri, name, tiny_model), add_version(uri, name, weak_model)
    set_champion(uri, name, first)
    assert registry(uri, name, "history").returncode == 0  # records the first champion as first seen
    set_champion(uri, name, second)  # what the alias editor in the MLflow UI does
    listing = registry(uri, name, "list")
    assert listing.returncode == 0, listing.stderr
    assert f"champion moved outside the CLI from v{first} to v{second}" in listing.stdout
    history = json.loads(registry(uri, name, "history", "--json").stdout)
    outside = [e for e in history if e["action"] == "outside" and e["to_version"] == second]
    assert len(outside) == 1 and outside[0]["reason"] == "moved outside the CLI"
    # seen once, recorded once
    assert len(json.loads(registry(uri, name, "history", "--json").stdout)) == len(history)


def test_two_promotions_racing_leave_the_registry_consistent(store, tiny_model, weak_model):
    uri, name = store
    champion = add_version(uri, name, weak_model)
    a, b = add_version(uri, name, tiny_model), add_version(uri, name, tiny_model)
    set_champion(uri, name, champion)
    env = subprocess_env(uri, MNIST_ACTOR="racer")
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_mlops.registry",
                "--tracking_uri",
                uri,
                "--model",
                name,
                "promote",
                candidate,
                *EVAL,
                *GATE,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for candidate in (a, b)
    ]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in racers]
    assert any(code == 0 for code, _ in outcomes), outcomes
    for code, err in outcomes:
        assert code == 0 or "moved from" in err or "in progress" in err, err
    final = holders(uri, name)["champion"]
    assert final in (a, b)
    production = [v for v, stage in stages(uri, name).items() if stage == "Production"]
    assert production == [final]
    champion_events = [e for e in read_history(MlflowClient(uri, uri), name) if e.alias == "champion"]
    assert champion_events[-1].to_version == final
    for earlier, later in itertools.pairwise(champion_events):
        assert later.from_version == earlier.to_version, "every recorded move starts where the last ended"
    assert not [m for m in MlflowClient(uri, uri).search_registered_models() if m.name.endswith(".promotion-lock")]


# Each racer links one dataset per time slot, all racers in the same slot, as two promotions do
# when they score the same champion at the same moment.
LINK_RACER = """
import sys, time, warnings
import mlflow, pandas as pd
from mnist_mlops.common.dataset_link import link_dataset
warnings.simplefilter("ignore")
uri, start, slots = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
mlflow.set_tracking_uri(uri)
mlflow.set_experiment("racing-evaluations")
for slot in range(slots):
    frame = pd.DataFrame({"prediction": [1, 2, slot], "label": [1, 2, 3]})
    dataset = mlflow.data.from_pandas(frame, name="digits", targets="label", predictions="prediction")
    with mlflow.start_run():
        while time.time() < start + slot * 0.25:
            pass
        link_dataset(dataset, context="candidate_")
"""


def test_evaluations_starting_together_each_link_the_one_shared_dataset(tmp_path):
    """MLflow's SQL store creates a dataset check-then-insert; the loser of that race must not fail.

    Before ``link_dataset`` retried, about one link in twelve failed here with a unique-key error.
    """
    uri, racers, slots = f"sqlite:///{tmp_path / 'mlflow.db'}", 3, 24
    client = MlflowClient(uri)
    # Created once, so the racers only race on datasets; artifacts beside the store, not in ./mlruns.
    client.create_experiment("racing-evaluations", (tmp_path / "artifacts").as_uri())
    start = time.time() + 8  # after every racer has imported MLflow
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", LINK_RACER, uri, str(start), str(slots)],
            env=subprocess_env(uri),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(racers)
    ]
    failures = [err[-2000:] for p in processes if (err := p.communicate(timeout=120)[1]) and p.returncode]
    assert not failures, failures
    experiment = client.get_experiment_by_name("racing-evaluations").experiment_id
    runs = client.search_runs([experiment], max_results=1000)
    assert len(runs) == racers * slots
    for run in runs:
        (linked,) = run.inputs.dataset_inputs
        assert linked.dataset.name == "digits"
        assert [(t.key, t.value) for t in linked.tags] == [("mlflow.data.context", "candidate_")]
    assert len({r.inputs.dataset_inputs[0].dataset.digest for r in runs}) == slots


def test_evaluate_logs_to_mlflow_and_reports_per_class_recall(store, tiny_model, weak_model):
    uri, name = store
    baseline, candidate = add_version(uri, name, weak_model), add_version(uri, name, tiny_model)
    set_champion(uri, name, baseline)
    result = registry(uri, name, "evaluate", candidate, "--json", *EVAL)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["count"] == 1000 and len(report["candidate"]["recall"]) == 10
    low, high = report["candidate"]["interval"]
    assert low < report["candidate"]["accuracy"] < high
    run = MlflowClient(uri, uri).get_run(report["evaluation_run_id"])
    assert "candidate_accuracy_score" in run.data.metrics and "baseline_accuracy_score" in run.data.metrics


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["promote", "99"], "has no version 99"),
        (["promote", "staging-2"], "has no alias 'staging-2'"),
        (["promote", "champion"], "already is the champion; nothing to do"),
        (["rollback", "--reason", "x"], "no earlier champion"),
        (["evaluate", "1", "--baseline", "challenger"], "has no alias 'challenger'"),
    ],
)
def test_bad_requests_fail_with_one_line_and_change_nothing(tmp_path, tiny_model, args, message):
    uri, name = f"sqlite:///{tmp_path / 'mlflow.db'}", "mnist-cnn"
    set_champion(uri, name, add_version(uri, name, tiny_model))
    before = holders(uri, name)
    result = registry(uri, name, *args, *(EVAL if args[0] in ("promote", "evaluate") else []))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert holders(uri, name) == before


def test_no_champion_yet_is_a_readable_error(tmp_path, tiny_model):
    uri, name = f"sqlite:///{tmp_path / 'mlflow.db'}", "mnist-cnn"
    add_version(uri, name, tiny_model)
    result = registry(uri, name, "rollback", "--reason", "x")
    assert result.returncode == 1 and "has no champion" in result.stderr


def test_a_version_whose_artifacts_were_deleted_cannot_be_promoted(tmp_path, tiny_model, weak_model):
    uri, name = f"sqlite:///{tmp_path / 'mlflow.db'}", "mnist-cnn"
    doomed = tmp_path / "doomed-model"
    shutil.copytree(weak_model.source, doomed)
    champion = add_version(uri, name, tiny_model)
    set_champion(uri, name, champion)
    client = MlflowClient(uri, uri)
    version = str(client.create_model_version(name, str(doomed)).version)
    shutil.rmtree(doomed)
    result = registry(uri, name, "promote", version, *EVAL, *GATE)
    assert result.returncode == 1
    assert "cannot load" in result.stderr and result.stderr.strip().count("\n") == 0
    assert holders(uri, name)["champion"] == champion


def test_a_tracking_server_that_is_down_fails_fast_with_one_line():
    uri = f"http://127.0.0.1:{free_port()}"
    result = registry(uri, "mnist-cnn", "list", timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("mnist-registry: error: cannot use the tracking store http://127.0.0.1")
    assert result.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("command", ["list", "evaluate", "promote", "rollback", "history"])
def test_every_subcommand_has_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "mnist_mlops.registry", command, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "usage: mnist-registry" in result.stdout
