"""``train.interrupt``: a signal is recorded and raised at the next ``check``; a second one at once."""

from __future__ import annotations

import os
import signal

import pytest

from mnist_mlops.train import interrupt


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_waits_for_the_next_check(sig):
    with interrupt.stop_requests():
        os.kill(os.getpid(), sig)  # the handler runs before kill returns to Python code
        with pytest.raises(interrupt.Stopped) as stopped:
            interrupt.check()
    assert stopped.value.signum == sig
    assert isinstance(stopped.value, KeyboardInterrupt)  # MLflow ends the run as failed


def test_a_second_signal_does_not_wait():
    with interrupt.stop_requests(), pytest.raises(interrupt.Stopped):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("the second signal should have raised")


def test_the_previous_handlers_come_back_and_check_is_quiet_outside():
    before = {sig: signal.getsignal(sig) for sig in interrupt.SIGNALS}
    with interrupt.stop_requests():
        os.kill(os.getpid(), signal.SIGTERM)
    assert {sig: signal.getsignal(sig) for sig in interrupt.SIGNALS} == before
    interrupt.check()  # the recorded stop belonged to the block that ended
