"""Gateway parts that need no server: keys, settings, error bodies, backends' environment."""

from __future__ import annotations

import asyncio
import json

import pytest

from mnist_mlops.common import cores
from mnist_mlops.serve.gateway.auth import KeyFileError, KeyRing, digest, load_keys, new_key_entry, presented_key
from mnist_mlops.serve.gateway.control.launcher import Launcher
from mnist_mlops.serve.gateway.control.pool import VariantPool
from mnist_mlops.serve.gateway.protocol import client_error_body
from mnist_mlops.serve.gateway.settings import GatewaySettings
from mnist_mlops.serve.model import THREADS_ENV


def test_a_new_key_is_stored_only_as_its_hash_and_identifies_its_owner(tmp_path):
    key, entry = new_key_entry("alice", "admin")
    path = tmp_path / "keys.toml"
    path.write_text(entry)
    assert key not in path.read_text() and digest(key) in path.read_text()
    ring = KeyRing(load_keys(path))
    owner = ring.identify(key)
    assert owner.name == "alice" and owner.allows("predict") and owner.allows("admin")
    assert ring.identify(key + "x") is None


def test_a_predict_key_may_not_administer(tmp_path):
    key, entry = new_key_entry("bob", "predict")
    (tmp_path / "k.toml").write_text(entry)
    owner = KeyRing(load_keys(tmp_path / "k.toml")).identify(key)
    assert owner.allows("predict") and not owner.allows("admin")


@pytest.mark.parametrize("content", ["", "[[keys]]\nname='x'\nrole='root'\nsha256='00'\n", "not toml ["])
def test_a_bad_keys_file_is_refused(tmp_path, content):
    (tmp_path / "k.toml").write_text(content)
    with pytest.raises(KeyFileError):
        load_keys(tmp_path / "k.toml")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authorization": "bearer  abc "}, "abc"),
        ({"x-api-key": "abc"}, "abc"),
        ({"authorization": "Basic abc"}, None),
        ({}, None),
    ],
)
def test_keys_are_read_from_bearer_or_x_api_key(headers, expected):
    assert presented_key(headers) == expected


def test_no_auth_is_refused_off_loopback():
    with pytest.raises(ValueError, match="loopback"):
        GatewaySettings(no_auth=True, host="0.0.0.0").check()
    GatewaySettings(no_auth=True, host="127.0.0.1").check()
    GatewaySettings(no_auth=True, host="::1").check()


def test_keys_are_required_unless_no_auth():
    with pytest.raises(ValueError, match="API keys are required"):
        GatewaySettings().check()


def test_a_backends_client_errors_are_relayed_as_json_without_stack_traces():
    assert client_error_body(400, b'{"message": "bad", "stack_trace": "Traceback..."}') == b'{"message": "bad"}'
    assert client_error_body(400, b'{"error_code": "X", "message": "bad"}') == b'{"error_code": "X", "message": "bad"}'
    # MLflow's own 415 is plain text; an HTML page or an empty body can come from anything in between
    relayed = json.loads(client_error_body(415, b"This predictor only supports ...\n 'text/csv'."))
    assert relayed == {"error_code": "BAD_REQUEST", "message": "This predictor only supports ... 'text/csv'."}
    assert json.loads(client_error_body(404, b"<html>nope</html>"))["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "HTTP 413" in json.loads(client_error_body(413, b""))["message"]
    assert len(json.loads(client_error_body(400, b"x" * 100_000))["message"]) == 1000
    assert json.loads(client_error_body(400, b"\xff\xfe garbage"))["message"].endswith("garbage")


def pool_for(settings: GatewaySettings) -> VariantPool:
    """The gateway's variant pool for ``settings``, configured as the gateway configures it at
    start-up; no backend is started (that happens on the first sync)."""
    launcher = Launcher("mnist-cnn", "sqlite:///x.db", workers=settings.backend_workers)
    pool = VariantPool(launcher, metrics=None, client=None)
    pool.configure(settings.served_split(), settings.backend_urls)
    return pool


@pytest.fixture
def eight_cores(monkeypatch):
    """A machine of eight cores, so that every share below is a different number."""
    monkeypatch.setattr(cores, "available_cores", lambda: 8)


@pytest.mark.parametrize(
    "settings, threads",
    [
        (GatewaySettings(), 7),  # one backend: every core but the gateway's own
        (GatewaySettings(backend_workers=2), 3),
        (GatewaySettings(split={"champion": 90, "challenger": 10}), 3),
        (GatewaySettings(split={"champion": 100}, shadow="challenger", backend_workers=3), 1),  # 6 processes
        (GatewaySettings(split={"champion": 50, "challenger": 50}, backend_urls={"challenger": "http://x"}), 7),
    ],
)
def test_backends_share_the_cores_the_gateway_leaves_among_the_processes_it_starts(eight_cores, settings, threads):
    assert pool_for(settings).launcher.torch_threads == threads


def test_a_split_change_gives_the_backends_started_after_it_the_new_share(eight_cores):
    pool = pool_for(GatewaySettings(split={"champion": 100}))
    assert pool.launcher.torch_threads == 7
    pool.configure({"champion": 50, "challenger": 50})  # PUT /admin/split: a second backend will start
    assert pool.backends_started_here() == 2 and pool.launcher.torch_threads == 3
    pool.configure({"champion": 100})  # the challenger's backend is retired: a rollout gets it all again
    assert pool.launcher.torch_threads == 7


def test_one_backend_on_two_cores_leaves_one_to_the_gateway(monkeypatch):
    monkeypatch.setattr(cores, "available_cores", lambda: 2)
    assert pool_for(GatewaySettings()).launcher.torch_threads == 1
    monkeypatch.setattr(cores, "available_cores", lambda: 1)
    assert pool_for(GatewaySettings()).launcher.torch_threads == 1  # never none


def test_backends_get_their_share_of_the_cores_unless_the_caller_chose(eight_cores, monkeypatch):
    launcher = Launcher("mnist-cnn", "sqlite:///x.db")
    launcher.share_cores(2)
    for chosen in (THREADS_ENV, "OMP_NUM_THREADS"):
        monkeypatch.delenv(chosen, raising=False)
    assert launcher.environment()[THREADS_ENV] == "3"
    assert launcher.thread_share() == {THREADS_ENV: "3"}  # what a warm-pool fork is given
    assert THREADS_ENV not in Launcher("mnist-cnn", "sqlite:///x.db").environment()  # torch's default
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert THREADS_ENV not in launcher.environment()  # OpenMP's own variable decides
    assert launcher.thread_share() == {}
    monkeypatch.setenv(THREADS_ENV, "4")
    assert launcher.environment()[THREADS_ENV] == "4"


def test_a_registry_read_begun_before_a_move_made_here_does_not_undo_it():
    pool = pool_for(GatewaySettings(split={"champion": 50, "challenger": 50}))
    challenger = pool.variants["challenger"]
    read_at_move = pool.moves  # the follower starts reading: the challenger is still in the registry
    with pool.local_move():  # meanwhile the autopilot rolls the challenger back
        challenger.in_registry = False
        asyncio.run(pool.sync({"champion": "1", "challenger": "2"}, pool.moves))  # begun and ended during it
    asyncio.run(pool.sync({"champion": "1", "challenger": "2"}, read_at_move))  # begun before it
    assert not challenger.in_registry and pool.table.weights()["challenger"] == 0.0
    asyncio.run(pool.sync({}, pool.moves))  # a read begun after the move is applied
    assert all(not variant.in_registry for variant in pool.variants.values())
