"""``mnist-gateway``: run the A/B gateway, or manage its API keys.

mnist-gateway --model mnist-cnn --split champion=90,challenger=10 --api_keys keys.toml --port 8080
mnist-gateway keys add alice --role predict --file keys.toml     # prints the new key once
mnist-gateway split champion=50,challenger=50 --url http://127.0.0.1:8080   # admin key in $MNIST_API_KEY
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from mnist_mlops.common.cli import OneLineArgumentParser, add_option, non_negative_float, positive_float, whole_number
from mnist_mlops.common.store import tracking_uri
from mnist_mlops.registry.inference_log.location import DEFAULT_LOG, LOG_ENV, default_location, shown
from mnist_mlops.serve.gateway.access_log import setup_logging
from mnist_mlops.serve.gateway.auth import ROLES, KeyFileError, append_entry, new_key_entry
from mnist_mlops.serve.gateway.control.launcher import MODES, Launcher
from mnist_mlops.serve.gateway.control.privilege import PrivilegeError, backend_user
from mnist_mlops.serve.gateway.limits import Limits
from mnist_mlops.serve.gateway.settings import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_REPLICAS,
    GatewaySettings,
    ScalingPolicy,
    is_loopback,
)
from mnist_mlops.serve.gateway.split import SplitError, parse_split
from mnist_mlops.serve.gateway.webhooks import ALIAS_EVENTS
from mnist_mlops.serve.gateway.webhooks import PATH as WEBHOOK_PATH
from mnist_mlops.serve.gateway.webhooks import SECRET_ENV as WEBHOOK_SECRET_ENV
from mnist_mlops.serve.model import DTYPE_ENV, dtype_problem

PROG = "mnist-gateway"


def _backend_url(text: str) -> tuple[str, str]:
    alias, sep, url = text.partition("=")
    if not sep or not url.startswith(("http://", "https://", "unix:/")):
        raise argparse.ArgumentTypeError(f"expected alias=http://host:port or alias=unix:/path, got {text!r}")
    return alias.strip(), url.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog=PROG,
        description="A/B gateway over registry aliases.",
        epilog="API keys: mnist-gateway keys add NAME --role predict|labeler|admin --file keys.toml "
        "(prints the key once). A running gateway's split: mnist-gateway split champion=90,challenger=10 "
        "--url URL (admin key in $MNIST_API_KEY). Security: docs/security.md",
    )
    add_option(parser, "model", default="mnist-cnn", help="registered model (default mnist-cnn)")
    add_option(parser, "split", default="champion=100", help="alias=weight,... (default champion=100)")
    add_option(parser, "api_keys", type=Path, default=None, help="TOML file of hashed API keys")
    add_option(parser, "no_auth", action="store_true", help="serve without keys (loopback addresses only)")
    add_option(parser, "host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add_option(parser, "port", type=whole_number(1, 65535), default=8080, help="default 8080")
    add_option(parser, "tracking_uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db")
    add_option(
        parser,
        "poll_interval",
        type=positive_float,
        default=5.0,
        help="seconds between reads of the registry's aliases (default 5)",
    )
    add_option(
        parser,
        "max_body_bytes",
        type=whole_number(1),
        default=DEFAULT_MAX_BODY_BYTES,
        help=f"larger request bodies get 413 (default {DEFAULT_MAX_BODY_BYTES})",
    )
    add_option(parser, "request_timeout", type=positive_float, default=60.0, help="seconds (default 60)")
    add_option(
        parser,
        "min_replicas",
        type=whole_number(0, MAX_REPLICAS),
        default=1,
        help="replicas each variant keeps; 0: scale to zero, its replicas stop when idle and a request wakes "
        "one (default 1)",
    )
    add_option(
        parser,
        "max_replicas",
        type=whole_number(1, MAX_REPLICAS),
        default=1,
        help="replicas the autoscaler may run per variant under load; each gets its share of the cores "
        "(default 1: on a few cores micro-batching, not processes, serves a burst)",
    )
    add_option(
        parser,
        "target_concurrency",
        type=positive_float,
        default=ScalingPolicy.target,
        help=f"images in flight per replica the autoscaler aims at, a request of n images counting n "
        f"(default {ScalingPolicy.target:g})",
    )
    add_option(
        parser,
        "stable_window",
        type=positive_float,
        default=ScalingPolicy.stable_window,
        help="seconds the autoscaler averages concurrency over; it scales down on this window only "
        f"(default {ScalingPolicy.stable_window:g})",
    )
    add_option(
        parser,
        "panic_window",
        type=positive_float,
        default=ScalingPolicy.panic_window,
        help="seconds of the short window that scales up at once when it wants twice the replicas "
        f"(default {ScalingPolicy.panic_window:g})",
    )
    add_option(
        parser,
        "scale_to_zero_after",
        type=positive_float,
        default=60.0,
        help="seconds without a request before a variant scales to zero, with --min_replicas 0 (default 60)",
    )
    add_option(
        parser,
        "max_held",
        type=whole_number(1),
        default=256,
        help="requests held at once while a variant wakes from zero; more get 503 (default 256)",
    )
    add_option(
        parser,
        "hold_timeout",
        type=positive_float,
        default=30.0,
        help="seconds a held request waits for its variant to wake (default 30)",
    )
    add_option(
        parser,
        "start_timeout",
        type=positive_float,
        default=180.0,
        help="seconds a new backend has to come up (default 180)",
    )
    add_option(
        parser,
        "backend_mode",
        choices=MODES,
        default="mlflow",
        help=(
            "mlflow: `mlflow models serve`; warm: forked from a preloaded interpreter, well under a second "
            "to a new backend (default mlflow)"
        ),
    )
    add_option(parser, "backend_workers", type=whole_number(1), default=1, help="worker processes per backend")
    add_option(
        parser,
        "engine",
        choices=("local", "ray"),
        default="local",
        help="local: backends are processes started here; ray: one Ray Serve application serves every "
        "version, multiplexed, scaled by Ray between --min_replicas and --max_replicas (default local)",
    )
    add_option(
        parser,
        "ray_address",
        default=None,
        help="with --engine ray: an existing Ray cluster (auto, ray://host:10001); default: start a local Ray",
    )
    add_option(
        parser,
        "ray_serve_url",
        default=None,
        help="with --engine ray: route to this running application (mnist_mlops.serve.rayserve.deployment:app, "
        "e.g. a RayService's serve Service) instead of deploying one",
    )
    add_option(
        parser,
        "ray_http_port",
        type=whole_number(1, 65535),
        default=8000,
        help="with --engine ray: the port of Ray Serve's HTTP proxy on 127.0.0.1 (default 8000)",
    )
    add_option(
        parser,
        "backend",
        type=_backend_url,
        action="append",
        default=[],
        metavar="ALIAS=URL",
        help="serve ALIAS from a backend that runs elsewhere (repeatable)",
    )
    add_option(parser, "certfile", type=Path, default=None, help="TLS certificate (PEM): serve HTTPS")
    add_option(parser, "keyfile", type=Path, default=None, help="TLS private key (PEM)")
    add_option(parser, "log_dir", type=Path, default=None, help="where backend processes write their logs")
    add_option(
        parser,
        "batch_max_size",
        type=whole_number(1),
        default=64,
        help="rows per backend call when concurrent requests are merged; 1 turns it off (default 64)",
    )
    add_option(
        parser,
        "batch_max_delay_ms",
        type=positive_float,
        default=10.0,
        help="ms a request may wait for a busy backend before an extra batch is sent (default 10)",
    )
    add_option(
        parser,
        "inference_log",
        default=default_location(),
        help="where every prediction and its feedback are kept: a SQLite file or a database URL "
        f"(default ${LOG_ENV}, else {DEFAULT_LOG})",
    )
    add_option(
        parser,
        "inference_log_days",
        type=non_negative_float,
        default=30.0,
        help="days predictions and feedback are kept in the inference log; 0 keeps them all (default 30)",
    )
    add_option(
        parser,
        "shadow",
        default=None,
        metavar="ALIAS",
        help="send a copy of every champion request to ALIAS, off the response path",
    )
    add_option(
        parser,
        "auto_promote",
        action="store_true",
        help="decide the A/B test on a schedule and promote or roll back through the registry",
    )
    add_option(
        parser,
        "decision_interval",
        type=positive_float,
        default=60.0,
        help="seconds between automatic A/B decisions (default 60)",
    )
    add_option(parser, "alpha", type=positive_float, default=0.05, help="A/B test error rate (default 0.05)")
    add_option(
        parser,
        "min_feedback",
        type=whole_number(1),
        default=30,
        help="feedback per arm before an A/B decision (default 30)",
    )
    add_option(
        parser,
        "min_accuracy",
        type=positive_float,
        default=0.97,
        help="automatic promotion gate: lowest live accuracy (default 0.97)",
    )
    add_option(
        parser,
        "max_feedback_share",
        type=positive_float,
        default=1.0,
        help="an A/B decision needs no key to have given more than this share of its feedback (default 1: off)",
    )
    add_option(
        parser,
        "expose_variant",
        action="store_true",
        help="tell every client which variant answered (X-Variant, X-Model-Version); else admin keys only",
    )
    add_option(
        parser,
        "no_follow_gate",
        action="store_true",
        help="switch to whatever version an alias names, ungated (default: score it through its backend first)",
    )
    add_option(
        parser,
        "follow_gate_data",
        default=None,
        help="the gate on follow's labelled data: IDX folder or table (default: MNIST test set, $MNIST_DATA_DIR)",
    )
    add_option(
        parser, "follow_gate_samples", type=whole_number(1), default=1000, help="images it scores (default 1000)"
    )
    add_option(
        parser,
        "follow_gate_min_accuracy",
        type=float,
        default=0.97,
        help="lowest accuracy a version an alias moved to must score (default 0.97)",
    )
    add_option(
        parser,
        "follow_gate_tolerance",
        type=float,
        default=0.002,
        help="how far it may trail the version it replaces (default 0.002)",
    )
    add_option(
        parser,
        "backend_user",
        default=None,
        help="user the backends run as when the gateway runs as root (default nobody; root to keep root)",
    )
    _add_limit_options(parser)
    return parser


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    """The limits at the edge: connections, slow clients, and each key's share."""
    add_option(parser, "body_timeout", type=positive_float, default=30.0, help="seconds for a body (default 30)")
    add_option(parser, "header_timeout", type=positive_float, default=10.0, help="seconds for headers (default 10)")
    add_option(
        parser, "keep_alive_timeout", type=positive_float, default=5.0, help="idle keep-alive seconds (default 5)"
    )
    add_option(
        parser,
        "max_connections",
        type=whole_number(1),
        default=1000,
        help="connections served at once; more get 503 (default 1000)",
    )
    add_option(
        parser,
        "rate_per_minute",
        type=positive_float,
        default=None,
        help="requests per minute per key, for keys without their own (default: none)",
    )
    add_option(
        parser,
        "max_in_flight_per_key",
        type=whole_number(1),
        default=None,
        help="requests of one key at once, for keys without their own (default: none)",
    )
    add_option(
        parser,
        "images_per_day",
        type=whole_number(1),
        default=None,
        help="images per key and UTC day, for keys without their own (default: none)",
    )


def settings_from(args) -> GatewaySettings:
    return GatewaySettings(
        model_name=args.model,
        split=parse_split(args.split),
        tracking_uri=tracking_uri(args.tracking_uri),
        api_keys=args.api_keys,
        no_auth=args.no_auth,
        host=args.host,
        port=args.port,
        poll_interval=args.poll_interval,
        webhook_secret=os.environ.get(WEBHOOK_SECRET_ENV) or None,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        scaling=ScalingPolicy(
            target=args.target_concurrency, stable_window=args.stable_window, panic_window=args.panic_window
        ),
        scale_to_zero_after=args.scale_to_zero_after,
        max_held=args.max_held,
        hold_timeout=args.hold_timeout,
        max_body_bytes=args.max_body_bytes,
        request_timeout=args.request_timeout,
        start_timeout=args.start_timeout,
        backend_mode=args.backend_mode,
        engine=args.engine,
        ray_address=args.ray_address,
        ray_serve_url=args.ray_serve_url,
        ray_http_port=args.ray_http_port,
        backend_workers=args.backend_workers,
        backend_urls=dict(args.backend),
        certfile=args.certfile,
        keyfile=args.keyfile,
        log_dir=args.log_dir,
        batch_max_size=args.batch_max_size,
        batch_max_delay=args.batch_max_delay_ms / 1000.0,
        inference_log=args.inference_log,
        inference_log_days=args.inference_log_days,
        shadow=args.shadow,
        auto_promote=args.auto_promote,
        decision_interval=args.decision_interval,
        alpha=args.alpha,
        min_feedback=args.min_feedback,
        min_accuracy=args.min_accuracy,
        max_feedback_share=args.max_feedback_share,
        expose_variant=args.expose_variant,
        backend_user=args.backend_user,
        follow_gate=not args.no_follow_gate,
        follow_gate_data=args.follow_gate_data,
        follow_gate_samples=args.follow_gate_samples,
        follow_gate_min_accuracy=args.follow_gate_min_accuracy,
        follow_gate_tolerance=args.follow_gate_tolerance,
        body_timeout=args.body_timeout,
        header_timeout=args.header_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        max_connections=args.max_connections,
        rate_per_minute=args.rate_per_minute,
        max_in_flight_per_key=args.max_in_flight_per_key,
        images_per_day=args.images_per_day,
    )


def keys_main(argv: list[str]) -> None:
    parser = OneLineArgumentParser(prog=f"{PROG} keys", description="Manage API keys (stored hashed).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    add = commands.add_parser("add", help="make a new key, print it once, store its hash")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="predict")
    add.add_argument("--file", type=Path, required=True, help="keys file (created 0600 if missing)")
    add.add_argument("--rate_per_minute", type=positive_float, default=None, help="this key's requests per minute")
    add.add_argument("--max_in_flight", type=whole_number(1), default=None, help="this key's requests at once")
    add.add_argument("--images_per_day", type=whole_number(1), default=None, help="this key's images per UTC day")
    args = parser.parse_args(argv)
    try:
        limits = Limits(args.rate_per_minute, args.max_in_flight, args.images_per_day)
        key, entry = new_key_entry(args.name, args.role, limits)
        append_entry(args.file, args.name, entry)
    except KeyFileError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.error(f"cannot write {args.file}: {exc.strerror or exc}")
    print(key)
    sys.stderr.write(f"added key {args.name!r} ({args.role}) to {args.file}; the key is shown only now\n")


def split_main(argv: list[str]) -> None:
    """``mnist-gateway split champion=90,challenger=10``: ``PUT /admin/split`` on a running gateway."""
    parser = OneLineArgumentParser(prog=f"{PROG} split", description="Change a running gateway's split.")
    parser.add_argument("split", type=_split, help="alias=weight,... (like champion=90,challenger=10)")
    add_option(parser, "url", default="http://127.0.0.1:8080", help="the gateway (default http://127.0.0.1:8080)")
    add_option(parser, "key", default=os.environ.get("MNIST_API_KEY"), help="an admin key (default $MNIST_API_KEY)")
    args = parser.parse_args(argv)
    body = _admin_call("PUT", args.url, "/admin/split", args.key, json=args.split)
    print(", ".join(f"{alias}={weight:g}" for alias, weight in body["split"].items()))


def _admin_call(method: str, url: str, path: str, key: str | None, **request) -> dict:
    """An admin route of a running gateway: its JSON answer, or one line and exit status 2."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        answer = httpx.request(method, f"{url.rstrip('/')}{path}", headers=headers, timeout=60, **request)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc}")
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code != 200:
        message = body.get("message", answer.text[:200]) if isinstance(body, dict) else answer.text[:200]
        _fail(f"the gateway refused {method} {path} ({answer.status_code}): {message}")
    return body


def webhook_main(argv: list[str]) -> None:
    """``mnist-gateway webhook register --url GATEWAY``: ask the tracking server to send the
    model's alias events to a gateway, signed with ``$MNIST_WEBHOOK_SECRET``."""
    parser = OneLineArgumentParser(
        prog=f"{PROG} webhook", description="Register the gateway as a receiver of MLflow's alias events."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    register = commands.add_parser("register", help="create the webhook on the tracking server")
    add_option(register, "url", required=True, help="the gateway's address as the tracking server reaches it")
    add_option(register, "tracking_uri", default=None, help="the tracking server (default $MLFLOW_TRACKING_URI)")
    add_option(register, "name", default="mnist-gateway", help="the webhook's name (default mnist-gateway)")
    args = parser.parse_args(argv)
    secret = os.environ.get(WEBHOOK_SECRET_ENV)
    if not secret or len(secret) < 16:
        _fail(f"set {WEBHOOK_SECRET_ENV} to the gateway's webhook secret (16 characters or more)")
    uri = tracking_uri(args.tracking_uri)
    if not uri.startswith(("http://", "https://")):
        _fail(f"webhooks are sent by an MLflow tracking server (http or https), not by {uri}")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    receiver = args.url.rstrip("/") + WEBHOOK_PATH
    try:
        hook = MlflowClient(uri, uri).create_webhook(args.name, receiver, list(ALIAS_EVENTS), secret=secret)
    except MlflowException as exc:
        _fail(f"the tracking server refused the webhook: {str(exc).splitlines()[0][:300]}")
    print(f"webhook {hook.webhook_id}: {', '.join(ALIAS_EVENTS)} -> {receiver}")


def usage_main(argv: list[str]) -> None:
    """``mnist-gateway usage --since 1d``: what each key used of each variant (``GET /admin/usage``)."""
    parser = OneLineArgumentParser(prog=f"{PROG} usage", description="Requests, images, errors per key and variant.")
    add_option(parser, "url", default="http://127.0.0.1:8080", help="the gateway (default http://127.0.0.1:8080)")
    add_option(parser, "key", default=os.environ.get("MNIST_API_KEY"), help="an admin key (default $MNIST_API_KEY)")
    add_option(parser, "since", default=None, help="ISO 8601, or a duration ago like 30m, 1d (default: all)")
    add_option(parser, "until", default=None, help="ISO 8601, or a duration ago (default: now)")
    add_option(parser, "json", action="store_true", help="print the gateway's JSON")
    args = parser.parse_args(argv)
    import json

    query = {name: value for name, value in (("since", args.since), ("until", args.until)) if value}
    body = _admin_call("GET", args.url, "/admin/usage", args.key, params=query)
    if args.json:
        print(json.dumps(body))
        return
    columns = ("key", "variant", "requests", "images", "errors", "busy_seconds", "compute_seconds")
    rows = [[str(row[c] if row[c] is not None else "-") for c in columns] for row in body["usage"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    for line in [list(columns), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    held = ", ".join(f"{row['variant']} {row['replica_seconds']:g}" for row in body.get("replicas", []))
    print(f"replica-seconds held: {held or 'none'}")


def _split(text: str) -> dict[str, float]:
    try:
        return parse_split(text)
    except SplitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:
        keys_main(argv[1:])
        return
    if argv[:1] == ["split"]:
        split_main(argv[1:])
        return
    if argv[:1] == ["webhook"]:
        webhook_main(argv[1:])
        return
    if argv[:1] == ["usage"]:
        usage_main(argv[1:])
        return
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
        settings.check()
    except (SplitError, ValueError) as exc:
        _fail(str(exc))
    if problem := dtype_problem(os.environ.get(DTYPE_ENV)):  # every backend would fail to load
        _fail(problem)
    # Until uvicorn takes SIGTERM over, it ends the command through the cleanup below, not at once.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    launcher = pool_ahead(settings)
    try:
        serve(settings, launcher)
    finally:  # an exit before the gateway took the pool over (a refused key file...) leaves no pool behind
        if launcher is not None:
            launcher.close_now()


def pool_ahead(settings: GatewaySettings) -> Launcher | None:
    """The local engine's launcher, its warm pool already starting where a backend is wanted at
    once: the pool's imports (torch, MLflow's pyfunc: seconds) then overlap the gateway's own
    (MLflow, FastAPI: about a second) instead of following them. None on the Ray engine.

    The backends' user is only looked up here; ``Gateway`` checks that it can run a backend, and a
    pool started as one who cannot is killed with the refusal."""
    if settings.engine != "local":
        return None
    try:
        launcher = Launcher.for_gateway(settings, backend_user(settings.backend_user))
    except PrivilegeError as exc:
        _fail(str(exc))
    if settings.starts_backends_at_once():
        launcher.share_cores(settings.backends_at_most())  # the pool's environment: its first backend's
        launcher.start_pool_ahead()
    return launcher


def serve(settings: GatewaySettings, launcher: Launcher | None) -> None:
    """Run the gateway until it is stopped (SIGTERM, Ctrl-C)."""
    # Before setup_logging: importing MLflow (the app does) sets its own loggers' level, which ours overrides.
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from mnist_mlops.registry.inference_log.schema import SchemaTooNew
    from mnist_mlops.serve.gateway.app import create_app
    from mnist_mlops.serve.gateway.server import graceful_server, header_timeout_protocol

    setup_logging()
    if settings.engine == "ray" and settings.ray_address:
        from mnist_mlops.serve.gateway.control.ray_launcher import join

        try:
            join(settings.ray_address)
        except ValueError as exc:
            _fail(str(exc))
    if settings.certfile is None and not is_loopback(settings.host):
        logging.getLogger(PROG).warning(
            "serving plain HTTP on %s, which is not a loopback address: API keys and images cross the network "
            "unencrypted; pass --certfile/--keyfile or put a TLS proxy in front",
            settings.host,
        )
    try:
        app = create_app(settings, launcher)
    except (KeyFileError, ValueError, SchemaTooNew) as exc:  # PrivilegeError is a ValueError
        _fail(str(exc))
    except (SQLAlchemyError, OSError) as exc:
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        _fail(f"cannot open the inference log {shown(settings.inference_log)}: {detail}")
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=header_timeout_protocol(settings.header_timeout),
        access_log=False,  # the gateway writes its own access line (request id, key name, variant)
        log_config=None,
        # Nothing here reads the client's address; uvicorn's X-Forwarded-For middleware would
        # still run on every request, a few percent of the gateway's CPU per request.
        proxy_headers=False,
        ssl_certfile=str(settings.certfile) if settings.certfile else None,
        ssl_keyfile=str(settings.keyfile) if settings.keyfile else None,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_timeout,
        timeout_graceful_shutdown=30,
    )
    graceful_server(config).run()


def _exit_on_signal(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def _fail(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    raise SystemExit(2)


if __name__ == "__main__":
    main()
