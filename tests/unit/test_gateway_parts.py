"""Gateway parts that need no server: keys, settings, error bodies."""

from __future__ import annotations

import pytest

from serve.gateway.auth import KeyFileError, KeyRing, digest, load_keys, new_key_entry, presented_key
from serve.gateway.proxy import scrub_error_body
from serve.gateway.settings import GatewaySettings


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


def test_stack_traces_are_scrubbed_from_error_bodies():
    assert scrub_error_body(b'{"message": "bad", "stack_trace": "Traceback..."}') == b'{"message": "bad"}'
    assert scrub_error_body(b"plain text") == b"plain text"
