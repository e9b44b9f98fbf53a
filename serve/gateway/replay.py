"""``mnist-replay``: replay labelled MNIST test images through a gateway, with feedback.

Each image is sent as its own request (a base64 PNG, MLflow's ``dataframe_split``) under one of
``--users`` client keys (``X-User-ID``), then its true label is posted to ``/feedback`` for a
``--feedback`` share of them: live traffic with ground truth, for an A/B test end to end.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import httpx
import numpy as np

from mnist_mlops.common.cli import OneLineArgumentParser, add_option, whole_number


@dataclass
class Tally:
    sent: int = 0
    failed: Counter = field(default_factory=Counter)
    per_variant: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0]))  # variant -> [right, answered]
    feedback: int = 0
    feedback_failed: int = 0


def png_base64(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def replay(
    url: str,
    key: str | None,
    images,
    labels,
    users: int,
    concurrency: int,
    feedback_share: float,
    seed: int = 0,
) -> Tally:
    tally = Tally()
    rng = np.random.default_rng(seed)
    give_feedback = rng.random(len(images)) < feedback_share
    limit = asyncio.Semaphore(concurrency)
    auth = {"Authorization": f"Bearer {key}"} if key else {}

    async def one(client: httpx.AsyncClient, i: int) -> None:
        body = {"dataframe_split": {"columns": ["image"], "data": [[png_base64(images[i])]]}}
        async with limit:
            response = await client.post(
                f"{url}/invocations", json=body, headers=auth | {"X-User-ID": f"user-{i % users}"}
            )
            tally.sent += 1
            if response.status_code != 200:
                tally.failed[response.status_code] += 1
                return
            variant = response.headers.get("X-Variant", "?")
            label = response.json()["predictions"][0]["label"]
            tally.per_variant[variant][0] += int(label == int(labels[i]))
            tally.per_variant[variant][1] += 1
            if give_feedback[i]:
                answer = await client.post(
                    f"{url}/feedback",
                    headers=auth,
                    json={"request_id": response.headers["X-Request-ID"], "label": int(labels[i])},
                )
                tally.feedback += answer.status_code == 200
                tally.feedback_failed += answer.status_code != 200

    async with httpx.AsyncClient(timeout=60, verify=os.environ.get("MNIST_REPLAY_CA", True)) as client:
        await asyncio.gather(*(one(client, i) for i in range(len(images))))
    return tally


def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(prog="mnist-replay", description=__doc__.splitlines()[0])
    add_option(parser, "url", default="http://127.0.0.1:8080", help="the gateway (default http://127.0.0.1:8080)")
    add_option(parser, "key", default=os.environ.get("MNIST_API_KEY"), help="API key (default $MNIST_API_KEY)")
    add_option(parser, "count", type=whole_number(1, 10_000), default=1000, help="images to send (default 1000)")
    add_option(parser, "offset", type=whole_number(0, 9_999), default=0, help="first MNIST test image (default 0)")
    add_option(parser, "users", type=whole_number(1), default=200, help="distinct X-User-ID values (default 200)")
    add_option(parser, "concurrency", type=whole_number(1), default=8, help="requests in flight (default 8)")
    add_option(parser, "feedback", type=float, default=1.0, help="share of answers given feedback (default 1.0)")
    add_option(parser, "data_dir", default=os.environ.get("MNIST_DATA_DIR", "data"), help="MNIST root")
    add_option(parser, "json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    from torchvision.datasets import MNIST

    test = MNIST(args.data_dir, train=False)
    images = test.data.numpy()[args.offset : args.offset + args.count]
    labels = test.targets.numpy()[args.offset : args.offset + args.count]
    try:
        tally = asyncio.run(replay(args.url, args.key, images, labels, args.users, args.concurrency, args.feedback))
    except httpx.HTTPError as exc:
        sys.stderr.write(f"mnist-replay: error: cannot reach {args.url}: {exc}\n")
        raise SystemExit(1) from None
    summary = {
        "sent": tally.sent,
        "failed": dict(tally.failed),
        "feedback_recorded": tally.feedback,
        "feedback_failed": tally.feedback_failed,
        "variants": {
            v: {"answered": n, "accuracy": round(k / n, 4) if n else None}
            for v, (k, n) in sorted(tally.per_variant.items())
        },
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"sent {tally.sent} requests ({sum(tally.failed.values())} failed), feedback recorded for {tally.feedback}"
        )
        for variant, figures in summary["variants"].items():
            print(f"  {variant}: {figures['answered']} answered, accuracy {figures['accuracy']}")
    if tally.failed or tally.feedback_failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
