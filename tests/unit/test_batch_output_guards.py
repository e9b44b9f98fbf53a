"""``check_output``: what a job refuses to write over, before it scores anything. Replacing an
output is a delete, so it must never reach the input or a folder the user made."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mnist_mlops.serve.batch.errors import BatchError
from mnist_mlops.serve.batch.options import path_text, spark_master
from mnist_mlops.serve.batch.writers import SPARK_SUCCESS_MARK, check_output


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"png")
    return folder


@pytest.mark.parametrize("writes_folder", [False, True], ids=["file", "folder"])
@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("photos", "would replace the input"),
        (".", "would replace the input"),  # the folder holding the input
        ("photos/a.png", "in the input folder under an image's name"),
        ("photos/sub/new.JPG", "in the input folder under an image's name"),
    ],
)
def test_an_output_over_the_input_is_refused_even_with_overwrite(photos, output, message, writes_folder, monkeypatch):
    monkeypatch.chdir(photos.parent)
    with pytest.raises(BatchError, match=message):
        check_output(Path(output), overwrite=True, source=Path("photos"), writes_folder=writes_folder)
    assert (photos / "a.png").read_bytes() == b"png"


def test_one_image_as_input_and_as_output_is_refused(photos):
    with pytest.raises(BatchError, match="would replace the input"):
        check_output(photos / "a.png", overwrite=True, source=photos / "a.png")


def test_an_output_beside_or_inside_the_input_folder_is_fine_when_not_an_image(photos):
    check_output(photos / "scores.parquet", overwrite=False, source=photos)
    check_output(photos.parent / "scores", overwrite=False, source=photos, writes_folder=True)


def test_a_folder_is_not_a_file_output(tmp_path):
    (tmp_path / "scores").mkdir()
    with pytest.raises(BatchError, match="is a folder; this engine writes one file"):
        check_output(tmp_path / "scores", overwrite=True)


def test_only_a_folder_a_spark_job_completed_is_replaced(tmp_path):
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(BatchError, match="no Spark job completed"):
        check_output(mine, overwrite=True, writes_folder=True)
    with pytest.raises(BatchError, match="already exists; pass --overwrite"):
        check_output(mine, overwrite=False, writes_folder=True)
    (mine / SPARK_SUCCESS_MARK).write_text("")
    check_output(mine, overwrite=True, writes_folder=True)


@pytest.mark.parametrize(
    "master",
    [
        "local",
        "local[1]",
        "local[*]",
        "local[2,3]",
        "local-cluster[2,1,1024]",
        "spark://host:7077",
        "k8s://https://host:443",
        "yarn",
    ],
)
def test_spark_master_urls_spark_takes_are_taken(master):
    assert spark_master(master) == master


@pytest.mark.parametrize("master", ["nope://x", "local[0]", "local[]", "locals", "spark://", "", "yarn-client"])
def test_other_master_urls_are_refused_with_the_forms_spark_takes(master):
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a Spark master URL \(local, local\[N\]"):
        spark_master(master)


def test_an_empty_path_is_refused():
    with pytest.raises(argparse.ArgumentTypeError, match="empty"):
        path_text("  ")
