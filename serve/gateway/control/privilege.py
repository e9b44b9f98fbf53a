"""Who the backends run as: never root unless the operator says so.

A backend runs the code of the model version it serves, and anyone who can register a version
and move an alias chooses that code (``docs/security.md``). So when the gateway runs as root, its
backends are started as an unprivileged user (``--backend_user``, default ``nobody``), checked at
start-up: a user who cannot run this interpreter is refused with one line, not found out on the
first promotion. Not root: backends run as the gateway's own user (switching needs root).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from dataclasses import dataclass

DEFAULT_USER = "nobody"
ROOT = "root"


class PrivilegeError(ValueError):
    """The backends cannot be started as the user asked for; the message is one line."""


@dataclass(frozen=True)
class RunAs:
    """The user a backend process is started as (only when it differs from the gateway's)."""

    name: str
    uid: int
    gid: int

    def popen_arguments(self) -> dict:
        """``subprocess``/``asyncio`` keyword arguments that start a process as this user."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def backend_user(requested: str | None) -> RunAs | None:
    """The user to start backends as; None: as the gateway's own user.

    ``requested`` None means the default: ``nobody`` when the gateway runs as root, else itself.
    ``root`` keeps backends as root (an explicit choice, logged by the caller).
    """
    euid = os.geteuid()
    name = requested if requested is not None else (DEFAULT_USER if euid == 0 else None)
    if name is None:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(f"--backend_user {name!r}: no such user on this machine") from None
    if entry.pw_uid == euid:
        return None
    if euid != 0:
        raise PrivilegeError(
            f"--backend_user {name!r}: only a gateway running as root can start backends as another user"
        )
    return RunAs(name, entry.pw_uid, entry.pw_gid)


def check_can_run(run_as: RunAs) -> None:
    """Refuse (``PrivilegeError``) when ``run_as`` cannot start a backend from this installation:
    run this interpreter and import the backend's entry point as that user."""
    probe = [sys.executable, "-c", "import mnist_mlops.serve.backend"]
    try:
        result = subprocess.run(
            probe, capture_output=True, text=True, timeout=60, cwd="/", env=_probe_env(), **run_as.popen_arguments()
        )
    except OSError as exc:  # the interpreter itself cannot be executed as that user
        problem = exc.strerror or str(exc)
    else:
        if result.returncode == 0:
            return
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        problem = lines[-1] if lines else f"exit status {result.returncode}"
    raise PrivilegeError(
        f"backends would run as {run_as.name!r}, who cannot start one from this installation ({sys.executable}: "
        f"{problem}); pass --backend_user USER for an unprivileged user who can, or --backend_user root to run "
        "them as root"
    )


def _probe_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key in ("PATH", "LANG", "LC_ALL", "PYTHONPATH")}
