"""``--ray_address`` as the gateway reads it before asking Ray: the head to check is reachable,
and an address that names none is one line, not Ray's minutes of retries."""

from __future__ import annotations

import pytest

from mnist_mlops.serve.gateway.control.ray_launcher import head_of, join


@pytest.mark.parametrize(
    ("address", "head"),
    [
        ("head.internal:6379", ("head.internal", 6379)),
        ("ray://head.internal:10001", ("head.internal", 10001)),
        ("[::1]:6379", ("::1", 6379)),
        ("auto", None),
    ],
)
def test_the_head_of_each_address_form(address, head):
    assert head_of(address) == head


@pytest.mark.parametrize("address", ["head.internal", "head.internal:port", ":6379", "ray://"])
def test_an_address_without_a_host_and_port_is_refused_naming_the_forms(address):
    with pytest.raises(ValueError, match="expected host:port, ray://host:port or auto") as refused:
        join(address)
    assert address in str(refused.value) and "\n" not in str(refused.value)
