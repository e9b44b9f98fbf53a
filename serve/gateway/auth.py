"""API keys: stored hashed, compared in constant time, each with a name, a role and its limits.

The keys file (TOML) never holds a key, only its SHA-256::

    [[keys]]
    name = "alice"
    role = "predict"        # see ROLES
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    rate_per_minute = 600   # optional per-key limits (``limits.Limits``); the gateway's options
    max_in_flight = 8       # give the defaults for keys without them
    images_per_day = 100000

Roles, each allowing what the ones before it allow:

- ``predict``: score (``/invocations``), label its own predictions, read ``/variants``,
  ``/metrics`` and the A/B analysis;
- ``labeler``: also label any prediction (a labelling team or service);
- ``admin``: also change the split, apply an A/B decision, see backend details and the variant
  that answered.

``mnist-gateway keys add NAME --role ROLE --file keys.toml`` makes a random key, prints it once
and appends its hash. Keys are 256-bit random tokens, so a plain SHA-256 is the right hash (a slow
password hash protects guessable secrets; these are not guessable, and every request checks one).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mnist_mlops.serve.gateway.limits import Limits

ROLES = ("predict", "labeler", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}
KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
KEY_NAME_RULE = "1 to 64 characters: letters, digits and _ . @ -, starting with a letter or digit"
LIMIT_FIELDS = {"rate_per_minute": float, "max_in_flight": int, "images_per_day": int}


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: str
    sha256: str
    limits: Limits = field(default_factory=Limits)

    def allows(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not KEY_NAME.match(name):
        raise KeyFileError(f"invalid key name {name!r}: {KEY_NAME_RULE}")
    return name


def _limits(path: Path, entry: dict) -> Limits:
    values = {}
    for name, kind in LIMIT_FIELDS.items():
        value = entry.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise KeyFileError(f"{path}: key {entry.get('name')!r}: {name} must be a positive number")
        values[name] = kind(value)
    return Limits(**values)


def load_keys(path: Path) -> list[ApiKey]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeyFileError(f"cannot read the API keys file {path}: {' '.join(str(exc).split())}") from None
    keys, names = [], set()
    for entry in data.get("keys", []):
        if not isinstance(entry, dict):
            raise KeyFileError(f"{path}: each [[keys]] must be a table")
        name, role, sha = entry.get("name"), entry.get("role"), str(entry.get("sha256", "")).lower()
        if not name or role not in ROLES or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise KeyFileError(f"{path}: each [[keys]] needs a name, a role ({', '.join(ROLES)}) and a sha256")
        try:
            check_name(name)
        except KeyFileError as exc:
            raise KeyFileError(f"{path}: {exc}") from None
        if name in names:
            raise KeyFileError(f"{path}: the key name {name!r} appears twice; names identify keys in the logs")
        names.add(name)
        keys.append(ApiKey(name, role, sha, _limits(path, entry)))
    if not keys:
        raise KeyFileError(f"{path} holds no [[keys]]; add one with `mnist-gateway keys add NAME`")
    return keys


class KeyRing:
    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    def identify(self, presented: str) -> ApiKey | None:
        """The key entry ``presented`` matches, comparing against every entry in constant time."""
        candidate = digest(presented).encode()
        found = None
        for key in self.keys:  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(candidate, key.sha256.encode()):
                found = key
        return found


def presented_key(headers) -> str | None:
    """The key from ``Authorization: Bearer ...`` or ``X-API-Key``."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key") or None


def new_key_entry(name: str, role: str, limits: Limits | None = None) -> tuple[str, str]:
    """(a new random key, the TOML entry that stores its hash). The name is checked against
    ``KEY_NAME``, so it can never break out of its TOML string."""
    check_name(name)
    if role not in ROLES:
        raise KeyFileError(f"role must be one of {', '.join(ROLES)}")
    key = "mnk_" + secrets.token_urlsafe(32)
    entry = f'\n[[keys]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{digest(key)}"\n'
    for field_name in LIMIT_FIELDS:
        value = getattr(limits, field_name) if limits else None
        if value is not None:
            entry += f"{field_name} = {value:g}\n" if isinstance(value, float) else f"{field_name} = {value}\n"
    return key, entry


def append_entry(path: Path, name: str, entry: str) -> None:
    """Append ``entry`` to the keys file, created 0600 (never readable by others, not even for a
    moment); an existing file readable by others is tightened first, and a name already in it is
    refused."""
    if path.exists():
        if not path.is_file():
            raise KeyFileError(f"{path} is not a regular file")
        if path.read_text().strip() and name in {key.name for key in load_keys(path)}:
            raise KeyFileError(f"{path} already holds a key named {name!r}")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        if stat.S_IMODE(os.fstat(descriptor).st_mode) & 0o077:
            os.fchmod(descriptor, 0o600)
        os.write(descriptor, entry.encode())
    finally:
        os.close(descriptor)
