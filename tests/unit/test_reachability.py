"""The TCP check a command makes before a client that would retry an address for minutes (Ray's
``ray.init``, Spark's driver): a listening port passes, a closed one is its cause in words, and a
Spark master list passes when any of its addresses listens."""

from __future__ import annotations

import socket

import pytest

from mnist_mlops.common.net import why_unreachable
from mnist_mlops.serve.batch.errors import BatchError
from mnist_mlops.serve.batch.spark_engine import reach_master
from tests.helpers import free_port


@pytest.fixture
def listening():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_a_listening_port_is_reachable(listening):
    assert why_unreachable("127.0.0.1", listening, 2.0) is None


def test_a_closed_port_is_its_cause_in_words():
    assert why_unreachable("127.0.0.1", free_port(), 2.0) == "Connection refused"


def test_an_ipv6_host_may_come_in_brackets():
    assert why_unreachable("[::1]", free_port(), 2.0) is not None


def test_a_spark_master_list_passes_when_any_address_listens(listening):
    reach_master(f"spark://127.0.0.1:{free_port()},127.0.0.1:{listening}")


def test_a_spark_master_list_where_none_listens_is_one_line_naming_each_cause():
    master = f"spark://127.0.0.1:{free_port()},127.0.0.1:{free_port()},127.0.0.1:port"
    with pytest.raises(BatchError) as refused:
        reach_master(master)
    message = str(refused.value)
    assert message.startswith(f"cannot reach the Spark master at {master}: Connection refused; Connection refused")
    assert "'127.0.0.1:port' has no port number" in message and "\n" not in message
