"""The gateway's typed settings, read once in ``main()`` and handed to the app factory."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_REPLICAS = 64  # per variant: far past what one machine's cores can use


@dataclass(frozen=True)
class ScalingPolicy:
    """The autoscaler's knobs (``control.autoscaler``)."""

    target: float = 32.0  # requests in flight per replica the scaler aims at
    stable_window: float = 60.0  # seconds
    panic_window: float = 6.0  # seconds
    panic_threshold: float = 2.0  # the short window wants this many times the replicas serving: panic
    max_scale_down_rate: float = 2.0  # a decision keeps at least replicas / rate
    scale_down_below: float = 0.8  # of the target: fewer replicas only if they would run below it

    def check(self) -> None:
        """Raise ValueError with one line naming the option that cannot work."""
        if not self.target > 0:
            raise ValueError(f"--target_concurrency must be above 0, got {self.target}")
        if not 0 < self.scale_down_below <= 1:
            raise ValueError(
                f"scale_down_below is a share of the target: above 0, at most 1, got {self.scale_down_below}"
            )
        if not self.panic_window > 0 or not self.stable_window >= self.panic_window:
            raise ValueError(
                f"--panic_window must be above 0 and at most --stable_window, got {self.panic_window} and "
                f"{self.stable_window}"
            )


@dataclass(frozen=True)
class GatewaySettings:
    model_name: str = "mnist-cnn"
    """Registered model whose aliases are served."""
    split: dict[str, float] = field(default_factory=lambda: {"champion": 100.0})
    """alias -> weight."""
    tracking_uri: str = "sqlite:///mlflow.db"
    api_keys: Path | None = None
    """TOML file of hashed keys (see ``serve.gateway.auth``); required unless ``no_auth``."""
    no_auth: bool = False
    """Serve without keys: allowed on a loopback address only."""
    host: str = "127.0.0.1"
    port: int = 8080
    poll_interval: float = 5.0
    """Seconds between two reads of the registry's aliases."""
    min_replicas: int = 1
    """Replicas each variant keeps. 0: scale to zero, its replicas stop after
    ``scale_to_zero_after`` idle seconds and a request wakes one (held meanwhile)."""
    max_replicas: int = 1
    """Replicas the autoscaler may run per variant (``control.autoscaler``)."""
    scaling: ScalingPolicy = field(default_factory=ScalingPolicy)
    scale_to_zero_after: float = 60.0
    max_held: int = 256
    """Requests held at once while their variant wakes from zero; more get 503 with Retry-After."""
    hold_timeout: float = 30.0
    webhook_secret: str | None = field(default=None, repr=False)
    """The registry webhook's secret (``$MNIST_WEBHOOK_SECRET``): with it, ``POST /hooks/mlflow``
    takes MLflow's signed alias events and the registry is read at once (``webhooks``)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    request_timeout: float = 60.0
    start_timeout: float = 180.0
    """Seconds a new backend has to answer /ping before its version counts as failed."""
    backend_mode: str = "mlflow"
    """``mlflow``: ``mlflow models serve``; ``warm``: forked from a preloaded interpreter
    (``mnist_mlops.serve.warm_pool``)."""
    backend_workers: int = 1
    engine: str = "local"
    """``local``: backends are processes started here; ``ray``: a Ray Serve application
    (``control.ray_launcher``), scaled by Ray between ``min_replicas`` and ``max_replicas``."""
    ray_address: str | None = None
    ray_serve_url: str | None = None
    """A running Ray Serve application to route to (not deployed or stopped here)."""
    ray_http_port: int = 8000
    backend_urls: dict[str, str] = field(default_factory=dict)
    """alias -> URL of a backend that runs elsewhere (not started here)."""
    certfile: Path | None = None
    keyfile: Path | None = None
    log_dir: Path | None = None
    """Where backend processes write their logs (discarded when unset)."""
    batch_max_size: int = 64
    """Rows per backend call when concurrent requests are merged; 1 turns micro-batching off."""
    batch_max_delay: float = 0.010
    """Seconds a request may wait for a busy backend before an extra batch is sent."""
    inference_log: str = "mnist-inference.db"
    """Where every prediction returned and the feedback on it are kept: a SQLite file, or a database
    URL (``mnist_mlops.registry.inference_log``)."""
    inference_log_days: float = 30.0
    """Predictions and feedback older than this are deleted from the inference log; 0 keeps all."""
    shadow: str | None = None
    """An alias that gets a copy of every champion request, off the response path."""
    auto_promote: bool = False
    """Run the A/B decision on a schedule and carry it out through the registry."""
    decision_interval: float = 60.0
    alpha: float = 0.05
    min_feedback: int = 30
    min_accuracy: float = 0.97
    """The promotion gate's minimum live accuracy in automatic mode."""
    follow_gate: bool = True
    """Score a version an alias moved to, through its backend, before it takes traffic."""
    follow_gate_data: str | None = None
    """The gate's labelled data: a folder of IDX files or a table; None: the MNIST test set."""
    follow_gate_samples: int = 1000
    follow_gate_min_accuracy: float = 0.97
    follow_gate_tolerance: float = 0.002
    """How far a new version may trail the one it replaces (``mnist-registry promote``'s)."""
    max_feedback_share: float = 1.0
    """An A/B decision needs no single key to have given more than this share of its feedback."""
    expose_variant: bool = False
    """Tell every client which variant and version answered (``X-Variant``); else admin keys only."""
    backend_user: str | None = None
    """The user backends run as when the gateway runs as root (None: ``nobody``)."""
    body_timeout: float = 30.0
    """Seconds a request's body may take to arrive (408 after)."""
    header_timeout: float = 10.0
    """Seconds a connection may take to send a request's headers (closed after)."""
    keep_alive_timeout: float = 5.0
    """Seconds an idle keep-alive connection is kept open."""
    max_connections: int = 1000
    """Connections served at once; more are answered 503."""
    rate_per_minute: float | None = None
    """Requests per minute per key, for keys without their own limit (None: none)."""
    max_in_flight_per_key: int | None = None
    """Requests of one key answered at once, for keys without their own limit (None: none)."""
    images_per_day: int | None = None
    """Images scored per key and UTC day, for keys without their own quota (None: none)."""

    def served_split(self) -> dict[str, float]:
        """The split, and the shadow alias at weight 0: started and followed, given no live traffic."""
        split = dict(self.split)
        if self.shadow:
            split.setdefault(self.shadow, 0.0)
        return split

    def backends_at_most(self) -> int:
        """Backends this gateway may run at once as it starts: ``max_replicas`` for each alias
        not served from a ``--backend`` URL."""
        return self.max_replicas * len(set(self.served_split()) - set(self.backend_urls))

    def starts_backends_at_once(self) -> bool:
        """This gateway starts backends of its own as it starts: the local engine, replicas kept
        (``min_replicas`` above 0), and an alias not served from a ``--backend`` URL."""
        return self.engine == "local" and self.min_replicas > 0 and self.backends_at_most() > 0

    def check(self) -> None:
        """Refuse settings that would be unsafe or cannot work; raises ValueError with one line."""
        if not 0 <= self.min_replicas <= self.max_replicas <= MAX_REPLICAS:
            raise ValueError(
                f"--min_replicas ({self.min_replicas}) must be at most --max_replicas ({self.max_replicas}), "
                f"and --max_replicas from 1 to {MAX_REPLICAS}"
            )
        self.scaling.check()
        if self.engine != "ray" and (self.ray_address or self.ray_serve_url):
            raise ValueError("--ray_address and --ray_serve_url are for --engine ray: add it, or leave them out")
        if self.ray_address and self.ray_serve_url:
            raise ValueError("--ray_address deploys the application, --ray_serve_url uses one deployed: give one")
        if self.no_auth and not is_loopback(self.host):
            raise ValueError(
                f"--no_auth serves without keys and is allowed on a loopback address only, not {self.host}"
            )
        if not self.no_auth and self.api_keys is None:
            raise ValueError("API keys are required: pass --api_keys FILE (or --no_auth on 127.0.0.1)")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("TLS needs both --certfile and --keyfile")
        if self.max_body_bytes <= 0 or self.poll_interval <= 0:
            raise ValueError("--max_body_bytes and --poll_interval must be positive")
        if self.scale_to_zero_after <= 0 or self.hold_timeout <= 0 or self.max_held < 1:
            raise ValueError("--scale_to_zero_after and --hold_timeout must be positive, --max_held at least 1")
        if not 0 < self.max_feedback_share <= 1:
            raise ValueError("--max_feedback_share is a share: above 0, at most 1")
        if self.shadow and self.shadow == "champion":
            raise ValueError("--shadow names the alias that shadows the champion, not the champion itself")
        unknown = set(self.backend_urls) - set(self.served_split())
        if unknown:
            raise ValueError(
                f"--backend names aliases that are not in the split or the shadow: {', '.join(sorted(unknown))}"
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
