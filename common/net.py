"""Whether anything listens at an address, asked before a client that would retry it for minutes.

Ray's ``ray.init`` and Spark's driver both retry an address where nothing listens for a minute or
more and then fail with traces; a plain TCP connection answers at once, so a command can stop with
one line that names the address and the cause.
"""

from __future__ import annotations

import socket


def why_unreachable(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to ``host:port`` opens within ``timeout`` seconds; otherwise the
    cause, as the OS words it ("Connection refused", "timed out", ...). ``host`` may be an IPv6
    address in brackets."""
    try:
        socket.create_connection((host.strip("[]"), port), timeout).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
