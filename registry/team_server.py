"""``mnist-team-server``: the registry a team shares, and the roles of the team's workflow.

    export MLFLOW_AUTH_ADMIN_PASSWORD=...            # the first start only: MLflow's admin
    mnist-team-server start --dir team/ --port 5000  # PostgreSQL + mlflow server, basic-auth on
    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... \\
      mnist-team-server roles --tracking_uri http://127.0.0.1:5000 --trainer ci --reader gateway --promoter alice

``start`` runs a real ``mlflow server`` with its backend store on PostgreSQL (``--database_url``,
or a private cluster in ``DIR/postgres`` that it initialises with PostgreSQL's own ``initdb`` and
starts with ``pg_ctl``), artifacts proxied by the server into ``DIR/artifacts``, and MLflow's
basic-auth app with its users in the same PostgreSQL. It stays in the foreground; SIGTERM or
Ctrl-C stops the server and the cluster, and everything stays in ``DIR`` for the next start.
Secrets (the database password, the Flask secret) are generated once into ``DIR/secrets.json``
(0600); the admin's password only ever comes from the environment.

``roles`` creates the experiment and the registered model as the admin (a creator gets MANAGE on
what it creates, so nobody else may), then the users, each with a new password printed once, and
grants ``ROLES``. See ``docs/deployment.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mnist_mlops.common.cli import OneLineArgumentParser, add_option, whole_number
from mnist_mlops.common.names import DEFAULT_MODEL_NAME as MODEL_NAME
from mnist_mlops.registry.errors import RegistryError

PROG = "mnist-team-server"
# An existing PostgreSQL's URL holds its password: the environment keeps it out of ``ps``.
DATABASE_URL_ENV = "MNIST_TEAM_DATABASE_URL"
DATABASES = ("mlflow", "mlflow_auth", "mnist_inference")  # tracking and registry, users, inference log
# Who may do what (MLflow's permissions on the experiment and the registered model). MLflow's
# EDIT on a registered model allows both new versions and alias moves: the gateway's gate on
# follow (docs/security.md) is what keeps an unchecked version from traffic.
# "evaluations" is the experiment ``mnist-registry evaluate``/``promote`` log their runs to.
ROLES = {
    "trainer": {"experiment": "EDIT", "evaluations": "EDIT", "registered_model": "EDIT"},
    "reader": {"experiment": "READ", "evaluations": "READ", "registered_model": "READ"},
    "promoter": {"experiment": "READ", "evaluations": "EDIT", "registered_model": "MANAGE"},
}


class TeamServerError(RegistryError):
    """A problem starting or setting up the team server; the message is one line."""


@dataclass(frozen=True)
class Layout:
    """Where a team server keeps everything: one folder."""

    root: Path

    @property
    def cluster(self) -> Path:
        return self.root / "postgres"

    @property
    def sockets(self) -> Path:
        return self.root / "run"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def auth_config(self) -> Path:
        return self.root / "basic_auth.ini"

    @property
    def inference_log_url(self) -> Path:
        return self.root / "inference-log.url"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def postgres_tool(name: str) -> str:
    """A PostgreSQL program: on PATH, else in Debian's versioned folder (the newest)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise TeamServerError(f"{name} not found: install PostgreSQL (Debian: apt-get install postgresql)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read, never readable by others for a moment."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def load_or_create_secrets(layout: Layout) -> dict:
    """The server's generated secrets, created on the first start; a value added by a later
    version of this command is created for an older folder too."""
    from cryptography.fernet import Fernet

    values = json.loads(layout.secrets.read_text()) if layout.secrets.exists() else {}
    wanted = {
        "database_password": lambda: secrets.token_urlsafe(24),
        "flask_secret_key": lambda: secrets.token_urlsafe(32),
        "postgres_port": free_port,
        # Without it MLflow encrypts each webhook's secret with a key of its own per process: a
        # second worker, or a restart, could not read it and every delivery would go unsigned.
        "webhook_encryption_key": lambda: Fernet.generate_key().decode(),
    }
    missing = {name: make() for name, make in wanted.items() if name not in values}
    if missing:
        values |= missing
        write_private(layout.secrets, json.dumps(values))
    return values


def database_urls(base: str) -> dict[str, str]:
    """``postgresql+psycopg://user:pw@host:port`` -> a URL per database of ``DATABASES``."""
    return {name: f"{base.rstrip('/')}/{name}" for name in DATABASES}


class PrivateCluster:
    """A PostgreSQL cluster in ``layout.cluster``, listening on 127.0.0.1 only. As root, it runs
    as the ``postgres`` user (PostgreSQL refuses to run as root)."""

    def __init__(self, layout: Layout, password: str, port: int, user: str = "postgres") -> None:
        self.layout, self.password, self.port = layout, password, port
        try:
            self.run_as = pwd.getpwnam(user) if os.geteuid() == 0 else None
        except KeyError:
            raise TeamServerError(
                f"PostgreSQL refuses to run as root and there is no {user!r} user to run it: create one, or run "
                "mnist-team-server as an unprivileged user"
            ) from None

    @property
    def base_url(self) -> str:
        return f"postgresql+psycopg://mlflow:{self.password}@127.0.0.1:{self.port}"

    def _run(self, command: list[str], what: str) -> None:
        kwargs = {"user": self.run_as.pw_uid, "group": self.run_as.pw_gid, "extra_groups": []} if self.run_as else {}
        result = subprocess.run(command, capture_output=True, text=True, cwd="/", **kwargs)
        if result.returncode != 0:
            lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
            why = lines[-1] if lines else f"exit status {result.returncode}"
            hint = f" (PostgreSQL runs as {self.run_as.pw_name!r}, who must reach --dir)" if self.run_as else ""
            raise TeamServerError(f"{what} failed: {why}{hint}")

    def _own(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
        if self.run_as:
            os.chown(path, self.run_as.pw_uid, self.run_as.pw_gid)

    def start(self) -> None:
        self._own(self.layout.sockets)
        self._own(self.layout.logs)
        if not (self.layout.cluster / "PG_VERSION").exists():
            self._own(self.layout.cluster)
            with tempfile.NamedTemporaryFile("w", dir=self.layout.sockets, delete=False) as pwfile:
                pwfile.write(self.password)
            if self.run_as:
                os.chown(pwfile.name, self.run_as.pw_uid, self.run_as.pw_gid)
            try:
                self._run(
                    [
                        postgres_tool("initdb"),
                        "-D",
                        str(self.layout.cluster),
                        "-U",
                        "mlflow",
                        f"--pwfile={pwfile.name}",
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                    ],
                    "initdb",
                )
            finally:
                os.unlink(pwfile.name)
        options = f"-p {self.port} -k {self.layout.sockets} -c listen_addresses=127.0.0.1"
        log = self.layout.logs / "postgres.log"
        self._run(
            [postgres_tool("pg_ctl"), "-D", str(self.layout.cluster), "-o", options, "-l", str(log), "-w", "start"],
            "pg_ctl start",
        )

    def stop(self) -> None:
        with contextlib.suppress(TeamServerError):
            self._run(
                [postgres_tool("pg_ctl"), "-D", str(self.layout.cluster), "-m", "fast", "-w", "stop"], "pg_ctl stop"
            )


def create_databases(base_url: str) -> None:
    """The project's databases, where missing (``CREATE DATABASE`` cannot run in a transaction)."""
    import psycopg

    plain = base_url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        with psycopg.connect(f"{plain}/postgres", autocommit=True, connect_timeout=10) as connection:
            present = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
            for name in DATABASES:
                if name not in present:
                    connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise TeamServerError(f"cannot set up the databases: {str(exc).strip().splitlines()[0]}") from None


def auth_config(auth_url: str) -> str:
    # Users must be granted what they use: a new account sees nothing (least privilege).
    return (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {auth_url}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )


def server_command(host: str, port: int, layout: Layout, workers: int) -> list[str]:
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    return [
        mlflow if os.path.exists(mlflow) else "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        host,
        "--port",
        str(port),
        "--artifacts-destination",
        str(layout.artifacts),
        "--serve-artifacts",
        "--workers",
        str(workers),
    ]


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    return lines[-1].strip()[:300] if lines else "no output"


def wait_for_health(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TeamServerError(f"mlflow server exited with {process.returncode}: {last_line(log)} ({log})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise TeamServerError(f"mlflow server did not answer {url}/health within {timeout:.0f} s")


def start(args) -> int:
    layout = Layout(Path(args.dir).resolve())
    first_start = not layout.secrets.exists()
    if first_start and not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        raise TeamServerError(
            "set MLFLOW_AUTH_ADMIN_PASSWORD for the first start: it becomes the password of MLflow's admin user"
        )
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.root.chmod(0o711)  # the cluster's user must reach its folder inside
    values = load_or_create_secrets(layout)
    cluster = None
    if args.database_url:
        base = args.database_url
    else:
        cluster = PrivateCluster(layout, values["database_password"], values["postgres_port"])
        cluster.start()
        base = cluster.base_url
    process = None
    stopping = []

    def stop_signal(signum, frame) -> None:
        stopping.append(signum)
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_signal)
    signal.signal(signal.SIGINT, stop_signal)
    try:
        started = time.monotonic()
        create_databases(base)
        urls = database_urls(base)
        layout.artifacts.mkdir(exist_ok=True)
        write_private(layout.auth_config, auth_config(urls["mlflow_auth"]))
        write_private(layout.inference_log_url, urls["mnist_inference"] + "\n")
        env = dict(os.environ) | {
            "MLFLOW_BACKEND_STORE_URI": urls["mlflow"],  # not on the command line, where ps shows it
            "MLFLOW_AUTH_CONFIG_PATH": str(layout.auth_config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": values["flask_secret_key"],
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": values["webhook_encryption_key"],
        }
        server_log = layout.logs / "mlflow-server.log"
        log = open(server_log, "ab")  # noqa: SIM115 - closed below
        process = subprocess.Popen(
            server_command(args.host, args.port, layout, args.workers),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        url = f"http://{args.host}:{args.port}"
        wait_for_health(url, process, args.start_timeout, server_log)
        print(
            f"{PROG}: {url} ready in {time.monotonic() - started:.1f} s (PostgreSQL "
            f"{'private cluster in ' + str(layout.cluster) if cluster else 'at --database_url'}; "
            f"inference log URL in {layout.inference_log_url})",
            flush=True,
        )
        while process.poll() is None and not stopping:
            time.sleep(0.5)
        if not stopping:
            raise TeamServerError(f"mlflow server exited with {process.returncode}: {last_line(server_log)}")
        process.wait(timeout=30)
        return 0
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        if cluster is not None:
            cluster.stop()


def set_up_roles(args) -> int:
    """Create the experiment and the model as the admin, the users, and their grants; print each
    new user's password once (JSON lines with --json)."""
    import warnings

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from mnist_mlops.registry.evaluate import EVALUATION_EXPERIMENT

    with warnings.catch_warnings():  # the auth client's import warns about Starlette's future
        warnings.simplefilter("ignore")
        from mlflow.server import get_app_client

    if not os.environ.get("MLFLOW_TRACKING_USERNAME") or not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        raise TeamServerError("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to the admin's credentials")
    client = MlflowClient(args.tracking_uri, args.tracking_uri)
    auth = get_app_client("basic-auth", tracking_uri=args.tracking_uri)
    try:
        experiments = {
            "experiment": _experiment_id(client, args.experiment),
            "evaluations": _experiment_id(client, EVALUATION_EXPERIMENT),
        }
        try:
            client.get_registered_model(args.model)
        except MlflowException:
            client.create_registered_model(args.model)
        people = [(name, role) for role in ROLES for name in getattr(args, role) or []]
        for name, role in people:
            password = None
            try:
                auth.get_user(name)
            except MlflowException:
                password = secrets.token_urlsafe(18)
                auth.create_user(name, password)
            grants = ROLES[role]
            for which, experiment_id in experiments.items():
                auth.grant_user_permission(name, "experiment", experiment_id, grants[which])
            auth.grant_user_permission(name, "registered_model", args.model, grants["registered_model"])
            line = {"user": name, "role": role, "password": password} | grants
            print(
                json.dumps(line)
                if args.json
                else f"{name}: {role} {grants}" + (f", password {password}" if password else "")
            )
    except MlflowException as exc:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        raise TeamServerError(f"the tracking server refused user {user!r}: {str(exc).splitlines()[0][:200]}") from None
    return 0


def _experiment_id(client, name: str) -> str:
    """The experiment's id, created (by the caller: the admin) where missing."""
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    run = commands.add_parser("start", help="PostgreSQL and mlflow server with basic-auth, in the foreground")
    add_option(run, "dir", required=True, help="the team server's folder (cluster, artifacts, secrets)")
    add_option(run, "host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add_option(run, "port", type=whole_number(1, 65535), default=5000, help="port (default 5000)")
    add_option(run, "workers", type=whole_number(1, 64), default=2, help="mlflow server workers (default 2)")
    add_option(
        run,
        "database_url",
        default=os.environ.get(DATABASE_URL_ENV) or None,
        help=f"an existing PostgreSQL, postgresql+psycopg://user:pw@host:port (default ${DATABASE_URL_ENV}; "
        "unset: a private cluster in DIR)",
    )
    add_option(run, "start_timeout", type=whole_number(1), default=300, help="seconds to wait for the server")
    roles = commands.add_parser("roles", help="the team's users and their permissions (as the admin)")
    add_option(roles, "tracking_uri", required=True, help="the team server's URL")
    add_option(roles, "model", default=MODEL_NAME, help=f"registered model (default {MODEL_NAME})")
    add_option(roles, "experiment", default=MODEL_NAME, help=f"experiment (default {MODEL_NAME})")
    for role in ROLES:
        add_option(roles, role, nargs="+", default=[], help=f"users with the {role} role: {ROLES[role]}")
    add_option(roles, "json", action="store_true", help="one JSON line per user")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = start(args) if args.command == "start" else set_up_roles(args)
    except TeamServerError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        raise SystemExit(1) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
