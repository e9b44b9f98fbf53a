"""A team's platform with real parts: ``mnist-team-server`` starts a private PostgreSQL cluster
(``initdb``/``pg_ctl``) and a real ``mlflow server`` on it with MLflow's basic-auth app; its
``roles`` command sets up the team's users. Training registers through the server as a trainer;
a reader cannot move an alias, a promoter can; two gateway replicas share one PostgreSQL
inference log; the server stops cleanly and keeps its data."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from tests.e2e.gateway_helpers import PIXELS, samples, start_gateway, write_keys
from tests.helpers import free_port, start_process, stop_process, subprocess_env

ADMIN_PASSWORD = "team-admin-password-for-tests"
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
SMALL_TRAINING = [
    "--epochs",
    "1",
    "--batch_size",
    "32",
    "--lr",
    "0.05",
    "--max_train_samples",
    "1000",
    "--val_samples",
    "200",
    "--card_samples",
    "0",
    "--champion_gate",
    "0",
]


class TeamServer:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory, self.port = directory, port
        self.url = f"http://127.0.0.1:{port}"
        self.users: dict[str, str] = {"admin": ADMIN_PASSWORD}
        self.process: subprocess.Popen | None = None
        self.started_in: float | None = None

    def start(self) -> None:
        started = time.monotonic()
        log = self.directory.parent / f"team-server-{time.monotonic_ns()}.log"
        self.process = start_process(
            [
                sys.executable,
                "-m",
                "mnist_mlops.registry.team_server",
                "start",
                "--dir",
                str(self.directory),
                "--port",
                str(self.port),
            ],
            subprocess_env(MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD),
            log,
        )
        deadline = time.monotonic() + 300
        while "ready in" not in log.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.25)
        self.started_in = time.monotonic() - started

    def env(self, user: str, **extra: str) -> dict[str, str]:
        return subprocess_env(
            self.url, MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=self.users[user], **extra
        )

    def run(
        self, user: str, *command: str, cwd: Path | None = None, timeout: float = 600, experiment: str | None = None
    ) -> subprocess.CompletedProcess:
        extra = {"MLFLOW_EXPERIMENT_NAME": experiment} if experiment else {}
        return subprocess.run(
            [sys.executable, "-m", *command],
            env=self.env(user, **extra),
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
        )

    @contextlib.contextmanager
    def client(self, user: str = "admin") -> Iterator[MlflowClient]:
        """A client of the server as ``user`` (MLflow reads the credentials from the environment)."""
        saved = {name: os.environ.get(name) for name in CREDENTIALS}
        os.environ.update(zip(CREDENTIALS, (user, self.users[user]), strict=True))
        try:
            yield MlflowClient(self.url, self.url)
        finally:
            for name, value in saved.items():
                os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)

    def stop(self) -> int:
        return stop_process(self.process, signal.SIGTERM, timeout=60)


@pytest.fixture(scope="module")
def team():
    # Not under pytest's own temporary folder: that is private to root (0700), and the cluster
    # runs as the postgres user, who must reach its folder.
    directory = Path(tempfile.mkdtemp(prefix="mnist-team-")) / "server"
    directory.parent.chmod(0o711)
    server = TeamServer(directory, free_port())
    server.start()
    roles = server.run(
        "admin",
        "mnist_mlops.registry.team_server",
        "roles",
        "--tracking_uri",
        server.url,
        "--trainer",
        "ci",
        "--reader",
        "gateway",
        "--promoter",
        "alice",
        "--json",
    )
    assert roles.returncode == 0, roles.stderr[-2000:]
    for line in roles.stdout.splitlines():
        entry = json.loads(line)
        server.users[entry["user"]] = entry["password"]
    print(f"team server first start: {server.started_in:.1f} s")
    yield server
    if server.process.poll() is None:
        server.stop()
    shutil.rmtree(directory.parent, ignore_errors=True)


def test_a_trainer_registers_through_the_server_and_the_roles_hold(team, tmp_path):
    trained = team.run("ci", "mnist_mlops.train", *SMALL_TRAINING, cwd=tmp_path, experiment="mnist-cnn")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "registered mnist-cnn version 1" in trained.stdout

    with team.client() as admin:
        v1 = admin.get_model_version("mnist-cnn", "1")
        model_id = v1.model_id or v1.source.removeprefix("models:/")
        admin.create_model_version("mnist-cnn", v1.source, v1.run_id, model_id=model_id)

    def promote_2_to_challenger(user: str) -> subprocess.CompletedProcess:
        arguments = ["promote", "2", "--to", "challenger", "--force", "--max_samples", "200", "--reason", "team test"]
        return team.run(user, "mnist_mlops.registry", *arguments, cwd=tmp_path)

    refused = promote_2_to_challenger("gateway")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert len(lines) == 1 and "refused user 'gateway'" in lines[0]  # at its first write
    with team.client() as admin:
        assert admin.get_model_version_by_alias("mnist-cnn", "challenger").version == "1"

    promoted = promote_2_to_challenger("alice")
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    with team.client() as admin:
        assert admin.get_model_version_by_alias("mnist-cnn", "challenger").version == "2"

    wrong = subprocess.run(
        [sys.executable, "-m", "mnist_mlops.registry", "list"],
        env=subprocess_env(team.url, MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD="not-hers"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 1 and len(wrong.stderr.strip().splitlines()) == 1
    assert "did not accept user 'alice'" in wrong.stderr


def test_two_gateway_replicas_share_one_postgres_inference_log(team, tmp_path):
    """Feedback sent to replica B joins a prediction replica A made; one analysis sees both."""
    log_url = (team.directory / "inference-log.url").read_text().strip()
    keys = write_keys(tmp_path)  # one keys file for both replicas, as behind one address
    reader = {"MLFLOW_TRACKING_USERNAME": "gateway", "MLFLOW_TRACKING_PASSWORD": team.users["gateway"]}
    replicas = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            replicas.append(
                start_gateway(
                    team.url,
                    tmp_path / name,
                    "--split",
                    "champion=50,challenger=50",
                    "--inference_log",
                    log_url,
                    "--backend_mode",
                    "warm",
                    environment=reader,
                    keys=keys,
                )
            )
        a, b = replicas
        by_a, by_b = (
            [httpx.post(f"{g.url}/invocations", json=PIXELS, headers=g.headers(), timeout=30) for _ in range(10)]
            for g in (a, b)
        )
        assert all(r.status_code == 200 for r in by_a + by_b)
        time.sleep(1.5)  # the log's writer commits in the background
        joined = [
            httpx.post(
                f"{b.url}/feedback",
                headers=b.headers(),
                timeout=30,
                json={"request_id": r.headers["X-Request-ID"], "label": 1},
            )
            for r in by_a
        ]
        assert [r.status_code for r in joined] == [200] * 10, joined[0].text
    finally:
        for gateway in replicas:
            gateway.stop()
    analysis = team.run("gateway", "mnist_mlops.registry", "abtest", "--log", log_url, "--json", cwd=tmp_path)
    assert analysis.returncode == 0, analysis.stderr[-2000:]
    report = json.loads(analysis.stdout)["report"]
    assert report["champion"]["requests"] + report["challenger"]["requests"] == 20
    assert report["champion"]["feedback"] + report["challenger"]["feedback"] == 10


def test_the_shared_log_survives_its_database_restarting_under_load(team, tmp_path):
    """PostgreSQL stopped for a few seconds while a gateway answers a steady load: every request
    is answered, the records wait in memory, and all of them are in the database afterwards."""
    from mnist_mlops.registry.team_server import Layout, PrivateCluster

    log_url = (team.directory / "inference-log.url").read_text().strip()
    reader = {"MLFLOW_TRACKING_USERNAME": "gateway", "MLFLOW_TRACKING_PASSWORD": team.users["gateway"]}
    gateway = start_gateway(
        team.url, tmp_path, "--inference_log", log_url, "--backend_mode", "warm", environment=reader
    )
    secrets = json.loads((team.directory / "secrets.json").read_text())
    cluster = PrivateCluster(Layout(team.directory), secrets["database_password"], secrets["postgres_port"])
    answered: list[str] = []
    try:
        with httpx.Client(timeout=30) as client:
            for i in range(240):
                if i == 60:
                    cluster.stop()
                if i == 180:
                    cluster.start()
                response = client.post(f"{gateway.url}/invocations", json=PIXELS, headers=gateway.headers())
                assert response.status_code == 200, response.text
                answered.append(response.headers["X-Request-ID"])
        deadline = time.monotonic() + 60
        while True:
            metrics = httpx.get(f"{gateway.url}/metrics", headers=gateway.headers(), timeout=10).text
            backlog = samples(metrics, "gateway_inference_log_backlog")[0].value
            if backlog == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        lost = samples(metrics, "gateway_inference_log_lost_rows")[0].value
    finally:
        gateway.stop()
    assert backlog == 0 and lost == 0
    import psycopg

    with psycopg.connect(log_url.replace("postgresql+psycopg://", "postgresql://")) as db:
        found = db.execute("SELECT COUNT(*) FROM predictions WHERE request_id = ANY(%s)", (answered,)).fetchone()[0]
    assert found == len(answered)


def test_the_team_server_stops_cleanly_and_keeps_its_data(team):
    assert team.stop() == 0
    team.start()
    with team.client("alice") as alice:
        assert alice.get_model_version_by_alias("mnist-cnn", "challenger").version == "2"
    print(f"team server restart: {team.started_in:.1f} s")
