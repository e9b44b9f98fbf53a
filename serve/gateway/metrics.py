"""Prometheus metrics of the gateway, labelled by variant (alias) and model version."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests",
            "Scoring requests answered",
            ["variant", "version", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "gateway_request_errors",
            "Scoring requests answered with 4xx/5xx",
            ["variant", "version", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_seconds",
            "Time from request received to response sent",
            ["variant", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge("gateway_in_flight", "Requests being answered", ["variant"], registry=self.registry)
        self.images_in_flight = Gauge(
            "gateway_images_in_flight", "Images of the requests being answered", ["variant"], registry=self.registry
        )
        self.backend_restarts = Counter(
            "gateway_backend_restarts", "Backends restarted after dying", ["variant"], registry=self.registry
        )
        self.alias_switches = Counter(
            "gateway_alias_switches",
            "Traffic switched to a new version of an alias",
            ["variant"],
            registry=self.registry,
        )
        self.follow_gate_refusals = Counter(
            "gateway_follow_gate_refusals",
            "Versions an alias moved to that the gate on follow refused (traffic stayed)",
            ["variant"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "gateway_batch_rows",
            "Rows per backend call (micro-batching)",
            ["variant"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.batch_wait = Histogram(
            "gateway_batch_wait_seconds",
            "Time the oldest request of a batch waited before it was sent",
            ["variant"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.wakes = Counter(
            "gateway_wakes", "Variants woken from zero replicas by a request", ["variant"], registry=self.registry
        )
        self.wake_failures = Counter(
            "gateway_wake_failures",
            "Failed wake-ups (held requests got 503)",
            ["variant"],
            registry=self.registry,
        )
        self.wake_seconds = Histogram(
            "gateway_wake_seconds",
            "From a request finding its variant at zero replicas to the backend answering",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.sleeps = Counter(
            "gateway_scaled_to_zero", "Backends stopped after the idle period", ["variant"], registry=self.registry
        )
        self.replicas = Gauge("gateway_replicas", "Replicas taking traffic", ["variant"], registry=self.registry)
        self.desired_replicas = Gauge(
            "gateway_desired_replicas", "Replicas the autoscaler wants", ["variant"], registry=self.registry
        )
        self.panic = Gauge(
            "gateway_autoscaler_panic",
            "1 while the short window drives the autoscaler",
            ["variant"],
            registry=self.registry,
        )
        self.scale_events = Counter(
            "gateway_scale_events",
            "Autoscaler decisions that changed the replicas",
            ["variant", "direction"],
            registry=self.registry,
        )
        self.replica_start_failures = Counter(
            "gateway_replica_start_failures",
            "Replicas that failed to start (retried after a backoff)",
            ["variant"],
            registry=self.registry,
        )
        self.replica_seconds = Counter(
            "gateway_replica_seconds",
            "Replica-seconds held by backends started here (what a serverless bill counts)",
            ["variant"],
            registry=self.registry,
        )
        self.key_requests = Counter(
            "gateway_key_requests", "Requests answered, per key and variant", ["key", "variant"], registry=self.registry
        )
        self.key_images = Counter(
            "gateway_key_images", "Images scored, per key and variant", ["key", "variant"], registry=self.registry
        )
        self.key_compute = Counter(
            "gateway_key_compute_seconds",
            "Backend time charged per key and variant (a micro-batch's, shared by its rows)",
            ["key", "variant"],
            registry=self.registry,
        )
        self.held = Gauge("gateway_held_requests", "Requests waiting for a variant to wake", registry=self.registry)
        self.webhooks = Counter(
            "gateway_webhooks",
            "Registry webhook deliveries: accepted (an alias of this model moved), ignored, refused",
            ["outcome"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "gateway_rejected", "Requests refused before routing", ["reason"], registry=self.registry
        )
        # Set from the inference log's writer when /metrics is read (its thread owns the counts).
        self.log_backlog = Gauge(
            "gateway_inference_log_backlog",
            "Inference-log rows waiting in memory for the database",
            registry=self.registry,
        )
        self.log_lost = Gauge(
            "gateway_inference_log_lost_rows",
            "Inference-log rows dropped since start (database failing past the backlog's bound, or at stop)",
            registry=self.registry,
        )
        self.log_failing = Gauge(
            "gateway_inference_log_failing", "1 while the inference log cannot be written", registry=self.registry
        )

    def usage(self, key: str, variant: str) -> KeyUsage:
        return KeyUsage(
            self.key_requests.labels(key, variant),
            self.key_images.labels(key, variant),
            self.key_compute.labels(key, variant),
        )


class KeyUsage:
    """The usage counters of one (key, variant), looked up once instead of per request."""

    def __init__(self, requests, images, compute) -> None:
        self.requests, self.images, self.compute = requests, images, compute

    def add(self, images: int, compute_seconds: float) -> None:
        self.requests.inc()
        self.images.inc(images)
        self.compute.inc(compute_seconds)


class VariantMetrics:
    """The labelled children of one (variant, version), looked up once instead of per request."""

    def __init__(self, metrics: GatewayMetrics, variant: str, version: str) -> None:
        self.latency = metrics.latency.labels(variant, version)
        self.ok = metrics.requests.labels(variant, version, "200")
        self._metrics, self._variant, self._version = metrics, variant, version

    def requests(self, status: int):
        return self.ok if status == 200 else self._metrics.requests.labels(self._variant, self._version, str(status))
