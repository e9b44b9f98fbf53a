"""API keys: stored hashed, compared in constant time, each with a name and a role.

The keys file (TOML) never holds a key, only its SHA-256::

    [[keys]]
    name = "alice"
    role = "predict"        # predict: may score; admin: may also change the split
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

``mnist-gateway keys add NAME --role ROLE --file keys.toml`` makes a random key, prints it once
and appends its hash. Keys are 256-bit random tokens, so a plain SHA-256 is the right hash (a slow
password hash protects guessable secrets; these are not guessable, and every request checks one).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROLES = ("predict", "admin")
ROLE_RANK = {"predict": 1, "admin": 2}


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: str
    sha256: str

    def allows(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: Path) -> list[ApiKey]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise KeyFileError(f"cannot read the API keys file {path}: {exc}") from None
    keys = []
    for entry in data.get("keys", []):
        name, role, sha = entry.get("name"), entry.get("role"), str(entry.get("sha256", "")).lower()
        if not name or role not in ROLES or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise KeyFileError(f"{path}: each [[keys]] needs a name, a role ({' or '.join(ROLES)}) and a sha256")
        keys.append(ApiKey(name, role, sha))
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


def new_key_entry(name: str, role: str) -> tuple[str, str]:
    """(a new random key, the TOML entry that stores its hash)."""
    if role not in ROLES:
        raise KeyFileError(f"role must be one of {', '.join(ROLES)}")
    key = "mnk_" + secrets.token_urlsafe(32)
    entry = f'\n[[keys]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{digest(key)}"\n'
    return key, entry
