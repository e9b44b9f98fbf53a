"""``python -m bench [--quick] [--only SECTION ...]``: run the benchmarks, print one table, write
``bench/results/<mode>.json`` and ``.md``. Exits non-zero, with one line, when a measurement
cannot be taken (a server that does not come up, a load run with errors)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bench import (
    batch,
    clients,
    coldstart,
    inference_log,
    machine,
    network,
    online,
    precision,
    pyfunc,
    quality,
    report,
    scaling,
    serverless,
    training,
)
from bench.core import BenchError, Mode, prepare_model
from bench.online import OPTIMISED, OPTIMISED_ARGS
from bench.peers import harness as peers
from mnist_mlops.serve.model import DTYPE_ENV

SECTIONS = (
    "training",
    "network",
    "pyfunc",
    "quality",
    "online",
    "precision",
    "coldstart",
    "batch",
    "inference_log",
    "serverless",
    "peers",
    "scaling",
)
# Left out of the quick mode (the suite's smoke run) unless named with --only: the peers need a
# virtualenv of their own and launch a cluster runtime, the scaling section Ray and Spark clusters:
# minutes the suite cannot spend.
FULL_ONLY = ("peers", "scaling")
# The same with two backend workers: the measurement behind the --backend_workers default.
TWO_WORKERS = f"{OPTIMISED}, 2 workers"
TWO_WORKERS_ARGS = [*OPTIMISED_ARGS, "--backend_workers", "2"]
# The same serving an A/B split: two backends (two versions of one model) share the cores.
AB_SPLIT = f"{OPTIMISED}, A/B 50/50"
AB_SPLIT_ARGS = [*OPTIMISED_ARGS, "--split", "champion=50,challenger=50"]
# Each of them as a ratio to the optimised configuration itself, named so.
AGAINST_OPTIMISED = {TWO_WORKERS: "backend workers 2 / 1", AB_SPLIT: "A/B 50/50 / champion only"}


def extra_gateways(mode: Mode) -> dict[str, list[str]]:
    """The gateway configurations measured after the plain proxy. The quick mode (the suite's smoke
    run) leaves out the two-worker and A/B ones: the same code as the optimised one, other flags."""
    if mode.quick:
        return {OPTIMISED: OPTIMISED_ARGS}
    return {OPTIMISED: OPTIMISED_ARGS, TWO_WORKERS: TWO_WORKERS_ARGS, AB_SPLIT: AB_SPLIT_ARGS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds per measurement (CI smoke)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mode = Mode(quick=args.quick)
    name = "quick" if args.quick else "full"
    command = "make bench" + ("-quick" if args.quick else "") + (f" ONLY='{' '.join(args.only)}'" if args.only else "")
    if os.environ.get(DTYPE_ENV):
        command = f"{DTYPE_ENV}={os.environ[DTYPE_ENV]} {command}"
    sections = args.only or [s for s in SECTIONS if not (args.quick and s in FULL_ONLY)]
    figures = []
    try:
        model = (
            prepare_model()
            if set(sections)
            & {"pyfunc", "quality", "online", "precision", "coldstart", "batch", "serverless", "peers", "scaling"}
            else None
        )
        for section in sections:
            print(f"bench: {section} ...", file=sys.stderr, flush=True)
            if section == "training":
                figures += training.measure(mode)
            elif section == "network":
                figures += network.measure(mode)
            elif section == "pyfunc":
                figures += pyfunc.measure(mode, model) + pyfunc.measure_fast_paths(mode)
            elif section == "quality":
                figures += quality.measure(mode, model)
            elif section == "online":
                figures += clients.measure(mode, model) + online.measure(mode, model, extra_gateways(mode))
            elif section == "precision":
                figures += precision.measure(mode, model)
            elif section == "coldstart":
                figures += coldstart.measure(mode, model)
            elif section == "batch":
                figures += batch.measure(mode, model)
            elif section == "inference_log":
                figures += inference_log.measure(mode)
            elif section == "serverless":
                figures += serverless.measure(mode, model)
            elif section == "peers":
                figures += peers.measure(mode, model)
            elif section == "scaling":
                figures += scaling.measure(mode, model)
    except BenchError as exc:
        sys.stderr.write(f"bench: error: {exc}\n")
        raise SystemExit(1) from None
    derived = report.ratios(figures, OPTIMISED, AGAINST_OPTIMISED) + peers.against_in_process(figures)
    print(report.table(figures + derived))
    path = report.write(args.out, machine.describe(), name, figures, derived, command)
    print(f"written: {path} and {path.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
