"""Constants the command line shares with the engines (kept import-light: the CLI reads them
before anything heavy is imported, so a signal during start-up is already handled)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

FORMATS = ("parquet", "csv")
AUTO = "auto"  # the format the output's name says: CSV for *.csv, else Parquet
FORMAT_CHOICES = (AUTO, *FORMATS)
DEFAULT_CHUNK_ROWS = 512


def output_format(choice: str, output: Path) -> str:
    """The format to write: ``choice``, or with ``auto`` the one ``output``'s name says (an output
    named ``scores.csv`` holding Parquet bytes would surprise whoever opens it)."""
    if choice != AUTO:
        return choice
    return "csv" if output.suffix.lower() == ".csv" else "parquet"


# The master URLs Spark itself takes (SparkContext's and spark-submit's rules): checked here, so a
# typo is one line before a JVM starts, not the JVM's stack trace and pyspark's after it.
_LOCAL = re.compile(r"local(\[\s*([1-9][0-9]*|\*)\s*(,\s*[1-9][0-9]*\s*)?\])?")
_LOCAL_CLUSTER = re.compile(r"local-cluster\[\s*[1-9][0-9]*\s*,\s*[1-9][0-9]*\s*,\s*[1-9][0-9]*\s*\]")
_CLUSTER = re.compile(r"(spark://\S+|k8s://\S+|yarn)")
MASTER_FORMS = "local, local[N], local[*], local[N,F], spark://HOST:PORT, k8s://URL or yarn"


def spark_master(text: str) -> str:
    """A Spark master URL, as Spark accepts it (``local[0]`` included in what it refuses)."""
    if any(form.fullmatch(text) for form in (_LOCAL, _LOCAL_CLUSTER, _CLUSTER)):
        return text
    raise argparse.ArgumentTypeError(f"expected a Spark master URL ({MASTER_FORMS}), got {text!r}")


def path_text(text: str) -> str:
    """A non-empty path (an empty one would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty one")
    return text
