"""Constants the command line shares with the engines (kept import-light: the CLI reads them
before anything heavy is imported, so a signal during start-up is already handled)."""

from __future__ import annotations

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
