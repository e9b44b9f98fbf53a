"""Reading a folder's files: the bytes as they are, and the files that cannot be scored named."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd

from mnist_mlops.serve.batch.sources import ImageFilesSource, TableSource, read_file
from mnist_mlops.serve.model.limits import MAX_ENCODED_BYTES


def test_a_file_is_read_whole(tmp_path):
    data = os.urandom(200_000)  # larger than one buffer of any default size
    (tmp_path / "a.png").write_bytes(data)
    assert read_file(tmp_path / "a.png") == (data, None)


def test_an_empty_file_reads_as_empty_bytes_for_the_model_to_refuse(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert read_file(tmp_path / "empty.png") == (b"", None)


def test_a_file_larger_than_the_model_accepts_is_not_read(tmp_path):
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(MAX_ENCODED_BYTES + 1)  # sparse: no disk, and a read would be 25 MB of memory
    data, error = read_file(huge)
    assert data is None
    assert error == "huge.png: the file is 25.0 MB; at most 25 MB accepted"


def test_a_folder_becomes_rows_with_the_huge_file_as_an_error_row(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.png").write_bytes(b"bee")
    (tmp_path / "a.png").write_bytes(b"ay")
    (tmp_path / "notes.txt").write_text("not an image")
    with open(tmp_path / "z.png", "wb") as f:
        f.truncate(MAX_ENCODED_BYTES + 1)
    chunks = list(ImageFilesSource(tmp_path).chunks(2))
    assert [len(chunk) for chunk in chunks] == [2, 1]
    frame = pd.concat(chunks, ignore_index=True)
    assert frame["id"].tolist() == ["a.png", "sub/b.png", "z.png"]
    assert frame["image"].tolist()[:2] == [b"ay", b"bee"]
    assert frame["image"].tolist()[2] is None
    assert "at most 25 MB accepted" in frame["read_error"].tolist()[2]


def test_a_file_that_grew_past_its_size_is_read_to_its_end(tmp_path):
    """``read_file`` reads the size ``fstat`` gave and one byte more: a file longer by then (still
    being appended to) is read on to its end, not cut at the size first seen."""
    import mnist_mlops.serve.batch.sources as sources

    data = os.urandom(300_000)
    (tmp_path / "growing.png").write_bytes(data)
    fd = os.open(tmp_path / "growing.png", os.O_RDONLY)
    try:
        assert sources._read_to_end(fd, 1_000) == data
    finally:
        os.close(fd)


def test_an_unreadable_path_is_named(tmp_path):
    (tmp_path / "folder.png").mkdir()
    data, error = read_file(tmp_path / "folder.png")
    assert data is None and error.startswith("cannot read folder.png: ")
    data, error = read_file(tmp_path / "missing.png")
    assert data is None and error == "cannot read missing.png: No such file or directory"


def test_spark_reads_a_tables_paths_with_code_that_travels_by_value(tmp_path):
    """The Spark engine's path reader is unpickled and run where ``serve`` cannot be imported, as
    in a Python worker holding the model's own ``serve`` package, or on an executor without this
    project: it still answers as the pandas engine's ``image_cell`` does."""
    from pyspark import cloudpickle

    from mnist_mlops.serve.batch.spark_engine import image_cell_reader

    (tmp_path / "a.png").write_bytes(b"\x89PNG, or so it says")
    payload = cloudpickle.dumps(image_cell_reader(str(tmp_path)))
    script = (
        "import base64, json, pickle, sys\n"
        "import pandas as pd\n"
        "sys.modules['serve'] = sys.modules['train'] = None  # any import of them fails\n"
        "cells = pickle.loads(sys.stdin.buffer.read())\n"
        "out = cells(pd.Series(['a.png', 'missing.png', 'aGVsbG8=', None])).astype(object)\n"
        "out = out.where(out.notna(), None)\n"
        "print(json.dumps([base64.b64decode(out['image'][0]).decode('latin-1'), *out['image'][1:],"
        " *out['read_error']]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], input=payload, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    images_then_errors = json.loads(result.stdout)
    assert images_then_errors == [
        "\x89PNG, or so it says",
        None,
        "aGVsbG8=",
        None,
        None,
        "cannot read missing.png: No such file or directory",
        None,
        None,
    ]


def test_a_fifo_named_like_an_image_is_an_error_row_not_a_hang(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes; the job must not wait for one."""
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "a.png").write_bytes(b"ay")
    rows = pd.concat(ImageFilesSource(tmp_path).chunks(10))
    assert list(rows["id"]) == ["a.png", "pipe.png"]
    assert rows["read_error"].iloc[1] == "cannot read pipe.png: not a regular file (a folder, FIFO or device)"


def test_a_tables_paths_stay_inside_its_folder_unless_allowed(tmp_path):
    table_folder, elsewhere = tmp_path / "table", tmp_path / "private"
    table_folder.mkdir(), elsewhere.mkdir()
    (table_folder / "in.png").write_bytes(b"inside")
    (elsewhere / "secret.png").write_bytes(b"secret")
    (table_folder / "link.png").symlink_to(elsewhere / "secret.png")
    cells = ["in.png", "../private/secret.png", str(elsewhere / "secret.png"), "link.png"]
    pd.DataFrame({"image": cells}).to_csv(table_folder / "t.csv", index=False)

    confined = pd.concat(TableSource(table_folder / "t.csv").chunks(10))
    assert list(confined["image"]) == [b"inside", None, None, None]
    assert all("outside the table's folder" in e and "--allow_paths_outside" in e for e in confined["read_error"][1:])
    allowed = pd.concat(TableSource(table_folder / "t.csv", paths_outside=True).chunks(10))
    assert list(allowed["image"]) == [b"inside", b"secret", b"secret", b"secret"]
