"""The web pages' server side, in-process: the assets served by name only, the traffic totals the
operations page turns into rates, and a registry that cannot be read named on the page."""

from __future__ import annotations

import asyncio

from mnist_mlops.serve.gateway.metrics import GatewayMetrics, VariantMetrics
from mnist_mlops.serve.gateway.pages import WEB, HistoryCache, load_assets, variant_totals


def test_every_page_file_is_served_with_its_type_and_the_pages_load_only_their_own_files():
    assets = load_assets()
    assert {"try.html", "ops.html", "try.js", "ops.js", "common.js", "app.css"} <= set(assets)
    assert assets["try.js"][1].startswith("text/javascript") and assets["app.css"][1].startswith("text/css")
    for page in ("try.html", "ops.html"):
        html = assets[page][0].decode()
        assert "http://" not in html and "https://" not in html  # nothing from elsewhere
        assert "<script>" not in html and "style=" not in html  # no inline code: the CSP forbids it
    assert len(assets) == len([p for p in WEB.iterdir() if p.suffix in {".html", ".js", ".css", ".svg"}])


def test_the_traffic_totals_add_up_every_version_and_status_of_a_variant():
    metrics = GatewayMetrics()
    for version, latencies in (("1", [0.004, 0.02]), ("2", [0.3])):
        child = VariantMetrics(metrics, "champion", version)
        for latency in latencies:
            child.latency.observe(latency)
            child.requests(200).inc()
    VariantMetrics(metrics, "champion", "2").requests(503).inc()
    metrics.errors.labels("champion", "2", "backend").inc()
    totals = variant_totals(metrics.registry)
    champion = totals["champion"]
    assert champion["requests"] == 4 and champion["errors"] == 1 and champion["latency_count"] == 3
    assert abs(champion["latency_sum"] - 0.324) < 1e-9
    buckets = dict((bound, count) for bound, count in champion["buckets"])
    assert buckets[0.005] == 1 and buckets[0.025] == 2 and buckets[0.5] == 3 and buckets[None] == 3


def test_a_registry_that_cannot_be_read_is_named_not_raised(tmp_path):
    cache = HistoryCache("mnist-cnn", f"sqlite:///{tmp_path / 'missing' / 'nothing.db'}")
    events, error = asyncio.run(cache.latest())
    assert events == [] and error.startswith("the promotion history cannot be read")
