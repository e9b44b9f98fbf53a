"""Output writers: Parquet (default) or CSV, streamed chunk by chunk, published atomically.

The job writes ``<output>.partial`` and renames it to ``<output>`` only when it completes, so a
reader never sees half a result and a failed job leaves no output behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mnist_mlops.serve.batch.errors import BatchError
from mnist_mlops.serve.batch.options import FORMATS
from mnist_mlops.serve.batch.results import SCHEMA
from mnist_mlops.serve.batch.sources import IMAGE_SUFFIXES

# Columns whose values repeat (a job's model, a chunk's time, ten labels, the same errors): a
# dictionary only for these. On ids and figures too (pyarrow's default) it nearly doubled the
# writing's cost and made the file a fifth larger.
REPEATED_COLUMNS = ("label", "error", "model_name", "model_version", "run_id", "scored_at")


# What a Spark job leaves in a folder it wrote completely; only such a folder is replaced.
SPARK_SUCCESS_MARK = "_SUCCESS"


def check_output(path: Path, overwrite: bool, source: Path | None = None, writes_folder: bool = False) -> None:
    """Refuse, before the job starts (not after it has scored its first chunk): an existing output
    unless ``overwrite``; an output that would replace the input ``source`` or be read as one of
    its images; a folder where one file is written, or, where a folder is written
    (``writes_folder``), a folder no job wrote; an output whose folder is missing or cannot be
    written. Replacing is a delete: it must never reach a user's own files."""
    if source is not None:
        check_apart(path, source)
    if path.is_dir() and not writes_folder:
        raise BatchError(
            f"output {path} is a folder; this engine writes one file: name it, e.g. {path / 'scores.parquet'}"
        )
    if path.exists() and not overwrite:
        raise BatchError(f"output {path} already exists; pass --overwrite to replace it")
    if path.is_dir() and not (path / SPARK_SUCCESS_MARK).is_file():
        raise BatchError(
            f"output {path} is a folder no Spark job completed (it has no {SPARK_SUCCESS_MARK}): "
            "not replaced; remove it yourself or name another output"
        )
    if not path.parent.exists():
        raise BatchError(f"the folder of output {path} does not exist")
    if not path.parent.is_dir():
        raise BatchError(f"the folder of output {path} is not a folder")
    probe_writable(path.parent, path)


def check_apart(output: Path, source: Path) -> None:
    """The output must not be the input, hold it (replacing the output would delete it), or sit
    in the input folder under an image's name (it would replace an input, or be scored as one)."""
    out, src = output.resolve(), source.resolve()
    if out == src or out in src.parents:
        raise BatchError(f"output {output} would replace the input {source}; name another output")
    if src.is_dir() and src in out.parents and out.suffix.lower() in IMAGE_SUFFIXES:
        raise BatchError(f"output {output} is in the input folder under an image's name; name another output")


def probe_writable(folder: Path, output: Path) -> None:
    """Create and remove a hidden folder in ``folder``: the one sure test that the job can write
    there (permission bits say nothing of a read-only mount, of /proc, or to root)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mnist-batch-probe-", dir=folder))
    except OSError as exc:
        raise cannot_write(output, exc) from None


def cannot_write(path: Path, exc: OSError) -> BatchError:
    """The job's one line for an output that cannot be written (a full disk, a folder that is
    writable only on paper, as on a read-only mount seen by root)."""
    return BatchError(f"cannot write the output {path}: {' '.join(str(exc).split())[:200]}")


def csv_ready(table: pa.Table) -> pa.Table:
    """CSV has no list type: probabilities become JSON text."""
    text = [None if p is None else json.dumps(p) for p in table.column("probabilities").to_pylist()]
    index = table.schema.get_field_index("probabilities")
    return table.set_column(index, "probabilities", pa.array(text, pa.string()))


class ResultWriter:
    """Appends result tables to ``path`` in ``fmt``; ``commit()`` publishes, ``abort()`` discards."""

    def __init__(self, path: Path, fmt: str = "parquet") -> None:
        if fmt not in FORMATS:
            raise BatchError(f"output format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.path, self.fmt = path, fmt
        self.partial = path.with_name(path.name + ".partial")
        self._writer = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        try:
            if self._writer is None:
                if self.fmt == "parquet":
                    self._writer = pq.ParquetWriter(self.partial, SCHEMA, use_dictionary=list(REPEATED_COLUMNS))
                else:
                    self._writer = pacsv.CSVWriter(self.partial, csv_ready(table.slice(0, 0)).schema)
            self._writer.write_table(table if self.fmt == "parquet" else csv_ready(table))
        except OSError as exc:
            raise cannot_write(self.path, exc) from None
        self.rows += table.num_rows

    def commit(self) -> None:
        if self._writer is None:  # nothing scored: still publish an empty, well-formed output
            self.write(SCHEMA.empty_table())
        try:
            self._writer.close()
            os.replace(self.partial, self.path)
        except OSError as exc:
            raise cannot_write(self.path, exc) from None

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):  # the error being handled is the one to report
                self._writer.close()
        with contextlib.suppress(OSError):
            self.partial.unlink(missing_ok=True)
