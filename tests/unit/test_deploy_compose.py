"""The compose file a team with containers starts from (``deploy/compose.yaml``): its services run
our own commands with options those commands accept, every secret comes from the environment, and
Docker Compose itself accepts the file (``docker compose config``, or Debian's ``docker-compose``,
which ``make test`` installs) and refuses it without the passwords."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from mnist_mlops.registry import team_server
from mnist_mlops.serve.gateway import cli as gateway_cli
from tests.helpers import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SECRETS = ("POSTGRES_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "MNIST_GATEWAY_PASSWORD")
ENVIRONMENT = dict.fromkeys(SECRETS, "secret-from-the-environment") | {"MNIST_DATA_DIR": "/data/mnist"}
PARSERS = {"mnist-team-server": team_server.build_parser, "mnist-gateway": gateway_cli.build_parser}


def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def compose_tool() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_the_services_run_our_commands_with_options_they_accept():
    found = services()
    assert set(found) == {"postgres", "mlflow", "gateway"}
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in ("mlflow", "gateway"):
        program, *argv = found[name]["command"]
        assert program in scripts
        argv = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", word) for word in argv]  # compose's defaults
        PARSERS[program]().parse_args(argv)  # exits (fails the test) on an option it does not know
    assert found["mlflow"]["command"][1] == "start"
    assert found["postgres"]["image"].startswith("postgres:15")


def test_every_secret_comes_from_the_environment_and_is_required():
    text = COMPOSE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"(:?[?-][^}]*)?\}", text)
        assert uses and all(use.startswith(":?") for use in uses), f"{name} must be required: ${{{name}:?...}}"
    for service in services().values():
        for key, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET", key) or "@" in str(value):
                assert "${" in str(value), f"{key} holds a literal secret"
    for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", text):  # a database URL's own password
        assert password.startswith("${"), f"a URL holds a literal password: {password}"


def test_the_image_copies_every_room_of_the_package():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    rooms = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for folder in rooms.values():
        assert f"COPY {folder} {folder}" in dockerfile
    assert '".[$EXTRAS]"' in dockerfile and "ARG EXTRAS=team\n" in dockerfile  # the team extra by default


def test_docker_compose_accepts_the_file_and_refuses_it_without_the_passwords():
    tool = compose_tool()
    if tool is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (make test installs docker-compose)")
    config = subprocess.run(
        [*tool, "-f", str(COMPOSE), "config"],
        env=ENVIRONMENT | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert config.returncode == 0, config.stderr
    resolved = yaml.safe_load(config.stdout)["services"]
    log = resolved["gateway"]["environment"]["MNIST_INFERENCE_LOG"]
    assert log.startswith("postgresql+psycopg://") and log.rsplit("/", 1)[1] in team_server.DATABASES
    assert resolved["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for missing in SECRETS:
        refused = subprocess.run(
            [*tool, "-f", str(COMPOSE), "config", "-q"],
            env={k: v for k, v in ENVIRONMENT.items() if k != missing} | {"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        assert refused.returncode != 0 and f"set {missing}" in refused.stderr, (missing, refused.stderr)
