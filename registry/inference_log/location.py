"""Where an inference log lives, named without importing a database driver (the command lines'
defaults and messages use it before anything heavy is loaded)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_LOG = "mnist-inference.db"
# A team's log is a PostgreSQL URL with a password in it: from the environment, it stays off the
# command line (where ``ps`` shows it to every user of the machine).
LOG_ENV = "MNIST_INFERENCE_LOG"


def default_location() -> str:
    """``$MNIST_INFERENCE_LOG`` if set, else ``DEFAULT_LOG`` in the working directory."""
    return os.environ.get(LOG_ENV) or DEFAULT_LOG


def shown(location: str | Path) -> str:
    """``location`` fit for a message or a log line: a URL's password replaced by ``***``."""
    text = str(location)
    if "://" not in text:
        return text
    from sqlalchemy import make_url

    try:
        return make_url(text).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: say nothing of what it holds
        return text.split("://", 1)[0] + "://..."
