"""Who is acting: recorded with every registry move."""

from __future__ import annotations

import getpass
import os
import socket

ACTOR_ENV = "MNIST_ACTOR"


def current_actor() -> str:
    """``$MNIST_ACTOR`` if set (CI, a service account), else ``user@host``."""
    explicit = os.environ.get(ACTOR_ENV)
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary container uid
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"
