"""``mnist-batch``'s engines on the same inputs: pandas (in-process and worker processes) and
Spark give the same rows for folders, single files, tables and IDX files."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import (
    PROJECT_ROOT,
    png_bytes,
    subprocess_env,
    write_idx_images,
)
from tests.integration.batch.helpers import BAD, GOOD, NESTED, assert_same_rows, batch, expected_label


def test_the_pandas_engine_scores_a_folder_with_one_row_per_file(store_uri, photo_folder, digits, tmp_path):
    output = tmp_path / "scores.parquet"
    result = batch(store_uri, "--input", str(photo_folder), "--output", str(output))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"scored {GOOD}, failed {BAD} of {GOOD + BAD} inputs" in result.stdout
    rows = pd.read_parquet(output)
    assert len(rows) == GOOD + BAD
    assert set(rows["model_version"]) == {"1"} and set(rows["model_name"]) == {"mnist-cnn"}
    assert rows["run_id"].str.len().eq(32).all()
    good = rows[rows["error"].isna()]
    assert f"{NESTED}/digit-00.jpg" in set(good["id"])
    accuracy = np.mean([row.label == expected_label(digits, row.id) for row in good.itertuples()])
    assert accuracy >= 0.8
    errors = rows.set_index("id")["error"]
    assert "not a decodable image" in errors["corrupt.png"] or "truncated" in errors["corrupt.png"]
    assert "no digit found" in errors["blank.png"]
    assert errors["big.png"] == "big.png: the file is 25.0 MB; at most 25 MB accepted"
    assert errors["huge.png"] == "huge.png: the file is 2048.0 MB; at most 25 MB accepted"
    assert rows.loc[rows["error"].notna(), "label"].isna().all()
    assert all(len(p) == 10 for p in good["probabilities"])


def test_spark_gives_the_same_rows_as_pandas(store_uri, photo_folder, tmp_path):
    pandas_out, spark_out = tmp_path / "pandas.parquet", tmp_path / "spark"
    assert batch(store_uri, "--input", str(photo_folder), "--output", str(pandas_out)).returncode == 0
    result = batch(
        store_uri,
        "--engine",
        "spark",
        "--master",
        "local[1]",
        "--input",
        str(photo_folder),
        "--output",
        str(spark_out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"scored {GOOD}, failed {BAD}" in result.stdout
    assert_same_rows(pandas_out, spark_out)
    # Spark's start-up notices, which a batch job's user cannot act on, are left out.
    for notice in ("Using Spark's default log4j profile", "NativeCodeLoader", "Setting default log level"):
        assert notice not in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("link", [False, True], ids=["file", "symlink"])
def test_one_image_file_is_an_input_with_its_name_as_id_on_both_engines(store_uri, photo_folder, tmp_path, link):
    # A name Hadoop would read as a glob ([1], {a,b}) and a space: the file must be taken literally.
    name = "my digit [1] {a,b}.png"
    image = tmp_path / name
    if link:
        (tmp_path / "target.png").write_bytes((photo_folder / "digit-01.png").read_bytes())
        image.symlink_to(tmp_path / "target.png")
    else:
        image.write_bytes((photo_folder / "digit-01.png").read_bytes())
    pandas_out, spark_out, folder_out = tmp_path / "pandas.parquet", tmp_path / "spark", tmp_path / "folder.parquet"
    result = batch(store_uri, "--input", str(image), "--output", str(pandas_out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "scored 1, failed 0 of 1 inputs" in result.stdout
    spark = ["--engine", "spark", "--master", "local[1]"]
    result = batch(store_uri, *spark, "--input", str(image), "--output", str(spark_out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scored 1, failed 0" in result.stdout
    rows = assert_same_rows(pandas_out, spark_out)
    assert rows["id"].tolist() == [name]
    # The same answer as the file gets in its folder (scored in a batch of 12 there, alone here:
    # float32 sums in another order, as in the micro-batching test).
    assert batch(store_uri, "--input", str(photo_folder), "--output", str(folder_out)).returncode == 0
    in_folder = pd.read_parquet(folder_out).set_index("id").loc["digit-01.png"]
    assert rows["label"][0] == in_folder["label"]
    np.testing.assert_allclose(rows["probabilities"][0], in_folder["probabilities"], atol=1e-6)


def test_spark_reads_tables_of_paths_base64_and_bytes_as_pandas_does(store_uri, photo_folder, digits, tmp_path):
    """One CSV column holding paths (relative to the table, in a subfolder, absolute, missing),
    base64 text and an empty cell; a Parquet table of bytes, one of them garbage. Both engines
    give the same rows: a path is read from its file, and the ids follow one rule."""
    images, _ = digits
    encoded = base64.b64encode(png_bytes(images[7])).decode()
    cells = ["digit-01.png", f"{NESTED}/digit-03.png", str(photo_folder / "digit-05.png"), "missing.png", encoded, None]
    # Names Hadoop would read as globs: the tables and outputs must be taken literally.
    tables = {"mixed.csv": tmp_path / "mixed [1].csv", "bytes.parquet": tmp_path / "bytes {a,b}.parquet"}
    for cell in cells[:3]:  # the relative paths are relative to the table's own folder
        if not Path(cell).is_absolute():
            (tmp_path / cell).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / cell).write_bytes((photo_folder / cell).read_bytes())
    pd.DataFrame({"image": cells}).to_csv(tables["mixed.csv"], index=False)
    pd.DataFrame({"image": [png_bytes(images[i]) for i in range(3)] + [b"not an image"]}).to_parquet(
        tables["bytes.parquet"]
    )
    for name, table in tables.items():
        outputs = {engine: tmp_path / f"{name}-{engine} [1]" for engine in ("pandas", "spark")}
        for engine, output in outputs.items():
            args = ["--engine", "spark", "--master", "local[1]"] if engine == "spark" else []
            # One path is absolute, outside the table's folder: allowed on purpose.
            result = batch(store_uri, *args, "--input", str(table), "--output", str(output), "--allow_paths_outside")
            assert result.returncode == 0, (name, engine, result.stderr[-3000:])
        rows = assert_same_rows(outputs["pandas"], outputs["spark"]).set_index("id")
        if name == "mixed.csv":
            assert sorted(rows.index) == sorted([*cells[:5], "5"])
            assert rows.loc[[*cells[:3], encoded], "error"].isna().all()
            assert rows.loc[[*cells[:3], encoded], "label"].notna().all()
            assert rows.loc["missing.png", "error"] == "cannot read missing.png: No such file or directory"
            assert rows.loc["5", "error"]
        else:
            assert rows.index.tolist() == ["0", "1", "2", "3"] and rows["error"].notna().tolist() == [False] * 3 + [
                True
            ]


def test_worker_processes_give_the_rows_of_in_process_scoring_in_input_order(store_uri, photo_folder, tmp_path):
    outputs = {}
    for workers in ("1", "3"):
        outputs[workers] = tmp_path / f"workers-{workers}.parquet"
        # Chunks of 4 rows: every worker scores several, and they finish out of order.
        args = ["--input", str(photo_folder), "--output", str(outputs[workers]), "--chunk_rows", "4"]
        result = batch(store_uri, *args, "--workers", workers)
        assert result.returncode == 0, result.stderr[-2000:]
    one, three = (pd.read_parquet(outputs[w]) for w in ("1", "3"))
    assert one["id"].tolist() == sorted(one["id"]), "rows in the folder's order"
    pd.testing.assert_frame_equal(one.drop(columns="scored_at"), three.drop(columns="scored_at"))


def test_tables_with_bytes_paths_or_pixels_and_idx_files_are_scored(store_uri, photo_folder, digits, tmp_path):
    images, _ = digits
    pd.DataFrame({"id": [f"b{i}" for i in range(5)], "image": [png_bytes(images[i]) for i in range(5)]}).to_parquet(
        tmp_path / "bytes.parquet"
    )
    pd.DataFrame({"image": ["digit-01.png", f"{NESTED}/digit-03.png", "missing.png"]}).to_csv(
        photo_folder / "paths.csv", index=False
    )
    pd.DataFrame({"pixels": [images[i].ravel().tolist() for i in range(5)]}).to_parquet(tmp_path / "pixels.parquet")
    write_idx_images(tmp_path / "t10k-images-idx3-ubyte", images[:7])
    cases = {
        "bytes.parquet": (tmp_path / "bytes.parquet", 5, 0),
        "paths.csv": (photo_folder / "paths.csv", 2, 1),
        "pixels.parquet": (tmp_path / "pixels.parquet", 5, 0),
        "idx": (tmp_path / "t10k-images-idx3-ubyte", 7, 0),
    }
    for name, (source, scored, failed) in cases.items():
        output = tmp_path / f"out-{name}.parquet"
        result = batch(store_uri, "--input", str(source), "--output", str(output))
        assert result.returncode == 0, (name, result.stderr[-2000:])
        rows = pd.read_parquet(output)
        assert (rows["error"].isna().sum(), rows["error"].notna().sum()) == (scored, failed), name
    rows = pd.read_parquet(tmp_path / "out-paths.csv.parquet")
    assert "cannot read missing.png" in rows.set_index("id")["error"]["missing.png"]
    assert pd.read_parquet(tmp_path / "out-idx.parquet")["id"].tolist() == [str(i) for i in range(7)]


def test_csv_output_on_request_or_when_the_output_is_named_csv(store_uri, photo_folder, tmp_path):
    for output, extra in ((tmp_path / "scores.txt", ("--format", "csv")), (tmp_path / "scores.CSV", ())):
        assert batch(store_uri, "--input", str(photo_folder), "--output", str(output), *extra).returncode == 0
        rows = pd.read_csv(output)
        assert len(rows) == GOOD + BAD and rows["probabilities"].dropna().str.startswith("[").all()
    named_csv = tmp_path / "named.csv"
    forced = ("--output", str(named_csv), "--format", "parquet")  # an explicit --format wins over the name
    assert batch(store_uri, "--input", str(photo_folder), *forced).returncode == 0
    assert len(pd.read_parquet(named_csv)) == GOOD + BAD


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_file_deleted_after_spark_listed_the_folder_is_an_error_row_not_a_failed_job(
    store_uri, digits, tmp_path, fmt
):
    """A file that vanishes between Spark's listing and its read (someone tidies the folder while
    the job starts) is named in an error row, as the pandas engine names a file it cannot read;
    before, the whole job failed. The real CLI in its own process; the one thing added is the
    deletion, right after ``read_input`` has listed the folder, so the race happens every time."""
    folder = tmp_path / "photos [1]"  # read back through Hadoop, which globs: taken literally
    (folder / "sub dir").mkdir(parents=True)
    images, _ = digits
    for i in range(4):
        (folder / ("sub dir" if i % 2 else "") / f"digit-{i:02d}.png").write_bytes(png_bytes(images[i]))
    victim = folder / "sub dir" / "digit-01.png"
    output = tmp_path / "scores {a,b}"
    args = ["--engine", "spark", "--master", "local[1]", "--input", str(folder), "--output", str(output)]
    script = textwrap.dedent(
        f"""
        import os
        from mnist_mlops.serve.batch import cli, spark_engine

        listed_by_spark = spark_engine.read_input

        def read_input_then_delete(spark, input_path, *rest):
            answer = listed_by_spark(spark, input_path, *rest)
            os.remove({str(victim)!r})
            return answer

        spark_engine.read_input = read_input_then_delete
        cli.main({[*args, "--format", fmt]!r})
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        env=subprocess_env(store_uri),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scored 3, failed 1 of 4 inputs" in result.stdout
    if fmt == "csv":
        rows = pd.concat(pd.read_csv(part) for part in output.glob("part-*.csv"))
    else:
        rows = pd.read_parquet(output)
    rows = rows.sort_values("id").reset_index(drop=True)
    assert rows["id"].tolist() == ["digit-00.png", "digit-02.png", "sub dir/digit-01.png", "sub dir/digit-03.png"]
    errors = rows.set_index("id")["error"]
    assert errors["sub dir/digit-01.png"] == "cannot read digit-01.png: No such file or directory"
    assert errors.drop("sub dir/digit-01.png").isna().all()
    assert set(rows["model_version"].astype(str)) == {"1"}


@pytest.mark.parametrize(
    "engine", [["--workers", "1"], ["--engine", "spark", "--master", "local[1]"]], ids=["pandas", "spark"]
)
def test_a_table_cannot_make_the_job_read_outside_its_folder_nor_hang_it_on_a_fifo(store_uri, digits, tmp_path, engine):
    """Whoever writes a table chooses the paths the job opens: they stay in the table's folder
    (``--allow_paths_outside`` to widen), and a FIFO named like an image is an error row, where
    before the job waited on it for ever."""
    images, _ = digits
    table_folder, elsewhere = tmp_path / "table", tmp_path / "private"
    table_folder.mkdir(), elsewhere.mkdir()
    (table_folder / "mine.png").write_bytes(png_bytes(images[0]))
    (elsewhere / "theirs.png").write_bytes(png_bytes(images[1]))
    os.mkfifo(table_folder / "pipe.png")
    cells = ["mine.png", "../private/theirs.png", str(elsewhere / "theirs.png"), "pipe.png"]
    pd.DataFrame({"image": cells}).to_parquet(table_folder / "t.parquet")

    confined = tmp_path / "confined"
    result = batch(store_uri, *engine, "--input", str(table_folder / "t.parquet"), "--output", str(confined))
    assert result.returncode == 0, result.stderr[-2000:]
    errors = pd.read_parquet(confined).set_index("id")["error"]
    assert pd.isna(errors["mine.png"])
    for outside in cells[1:3]:
        assert "outside the table's folder" in errors[outside] and "--allow_paths_outside" in errors[outside]
    assert errors["pipe.png"] == "cannot read pipe.png: not a regular file (a folder, FIFO or device)"

    allowed = tmp_path / "allowed"
    result = batch(
        store_uri,
        *engine,
        "--input",
        str(table_folder / "t.parquet"),
        "--output",
        str(allowed),
        "--allow_paths_outside",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = pd.read_parquet(allowed).set_index("id")
    assert (
        rows.loc[cells[1:3], "error"].isna().all()
        and (rows.loc[cells[1:3], "label"] == expected_label(digits, "digit-01")).all()
    )
    # The same folder as the input: the FIFO listed with the images is an error row there too.
    folder_scores = tmp_path / "folder"
    result = batch(store_uri, *engine, "--input", str(table_folder), "--output", str(folder_scores))
    assert result.returncode == 0, result.stderr[-2000:]
    errors = pd.read_parquet(folder_scores).set_index("id")["error"]
    assert pd.isna(errors["mine.png"])
    assert errors["pipe.png"] == "cannot read pipe.png: not a regular file (a folder, FIFO or device)"
