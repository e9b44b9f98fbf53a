"""``python -m mnist_mlops.serve.preflight --model_uri models:/mnist-cnn@champion --port 5001``:
check what ``mlflow models serve`` needs before starting it, and say in one line what to do when
something is missing (``make serve`` runs this first). Creates nothing: a store that does not exist
yet is reported, not made.

Exit status 0 when the model can be served on that port, 1 otherwise.
"""

from __future__ import annotations

import re
import socket
import sys

from mnist_mlops.common.cli import OneLineArgumentParser, add_option, whole_number
from mnist_mlops.common.store import client, describe_store_failure, missing_store, tracking_uri

PROG = "make serve"
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def problem(model_uri: str, port: int, host: str = "127.0.0.1") -> str | None:
    """What stands in the way of serving ``model_uri`` on ``host:port``; None when nothing does."""
    uri = tracking_uri()
    if (missing := missing_store(uri)) is not None:
        return missing
    match = _REGISTRY_URI.match(model_uri)
    if match:
        from mlflow.exceptions import MlflowException

        registry = client(uri)
        name = match["name"]
        try:
            model = registry.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return f"no registered model named {name!r} in {uri}: train one first (make quickstart)"
            return describe_store_failure(uri, exc)
        if match["alias"] and match["alias"] not in model.aliases:
            held = ", ".join(f"{a}=v{v}" for a, v in sorted(model.aliases.items())) or "none"
            return (
                f"{name} has no alias {match['alias']!r} (aliases: {held}); see `mnist-registry list`, "
                f"or promote a version: `mnist-registry promote <version> --to {match['alias']}`"
            )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return f"port {port} is in use: stop what listens there, or choose another (make serve PORT=5002)"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    add_option(parser, "model_uri", default="models:/mnist-cnn@champion")
    add_option(parser, "port", type=whole_number(1, 65535), default=5001)
    args = parser.parse_args(argv)
    if (found := problem(args.model_uri, args.port)) is not None:
        sys.stderr.write(f"{PROG}: error: {found}\n")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
