"""``python -m mnist_mlops.registry.evalsets --out DIR [--seed N] [--count N]``: write the
evaluation sets as image files, one folder per set, with a ``labels.csv`` (file, label, kind)
beside them; a label of -1 means the image holds no digit. Score them with ``mnist-batch``."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from mnist_mlops.common.cli import OneLineArgumentParser, add_option, whole_number
from mnist_mlops.common.names import DATA_DIR_ENV
from mnist_mlops.registry.errors import RegistryError
from mnist_mlops.registry.evalsets.sets import REPORT_SEED, SET_SIZE, SETS, Sources, build


def write(sources: Sources, out: Path, seed: int, count: int) -> dict[str, int]:
    """Each set into ``out/<set>/``; (set -> images written)."""
    written = {}
    for name in SETS:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "labels.csv", "w", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(["file", "label", "kind"])
            for index, sample in enumerate(build(name, sources, seed, count)):
                suffix = "png" if sample.data.startswith(b"\x89PNG") else "jpg"
                file = f"{index:04d}.{suffix}"
                (folder / file).write_bytes(sample.data)
                rows.writerow([file, sample.label, sample.kind])
        written[name] = count
    return written


def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(prog="python -m mnist_mlops.registry.evalsets", description=__doc__.splitlines()[0])
    add_option(parser, "out", type=Path, required=True, help="folder to write the sets into")
    add_option(
        parser, "seed", type=whole_number(0), default=REPORT_SEED, help=f"default {REPORT_SEED} (the report seed)"
    )
    add_option(parser, "count", type=whole_number(1), default=SET_SIZE, help=f"images per set (default {SET_SIZE})")
    add_option(
        parser, "data_dir", default=os.environ.get(DATA_DIR_ENV, "data"), help="MNIST root (default $MNIST_DATA_DIR)"
    )
    args = parser.parse_args(argv)
    try:
        written = write(Sources.load(Path(args.data_dir)), args.out, args.seed, args.count)
    except RegistryError as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        raise SystemExit(1) from None
    print(", ".join(f"{name}: {n}" for name, n in written.items()) + f" images under {args.out}")


if __name__ == "__main__":
    main()
