"""``mnist-batch`` on a small folder of real images the test writes: pandas and Spark, tables,
IDX, the MLproject entry point, bad input, and the watch mode with a restart in the middle."""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from torchvision.datasets import MNIST

from tests.helpers import (
    PROJECT_ROOT,
    png_bytes,
    start_process,
    stop_process,
    subprocess_env,
    write_idx_images,
)

GOOD = 12
OVERSIZED = {"big.png": 25 * 1024 * 1024 + 1, "huge.png": 2**31 + 1}
BAD = 2 + len(OVERSIZED)  # the corrupt file, the blank image and the oversized files
# Folder names a URI would encode and Hadoop would read as globs: ids are the paths as the file
# system spells them.
ROOT, NESTED = "phone photos ü%20 [1] {a,b}", "nested dir ü%20 [2]"


@pytest.fixture(scope="module")
def store_uri(trained_store, tmp_path_factory) -> str:
    return trained_store.copy_to(tmp_path_factory.mktemp("batch-store"))


@pytest.fixture(scope="module")
def digits(mnist_root):
    test = MNIST(str(mnist_root), train=False)
    return test.data[:40].numpy(), test.targets[:40].numpy()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, digits) -> Path:
    """12 digits (PNG and JPEG, some one subfolder deep, one suffix in mixed case), one corrupt file,
    one blank image, two files over the model's 25 MB limit and one text file.

    The two large files are sparse (no disk): one just over the limit, and one over 2 GB, which
    Spark's ``binaryFile`` fails the whole job on if it reads it. Both engines must name them in
    error rows without reading them."""
    root = tmp_path_factory.mktemp("photos") / ROOT
    (root / NESTED).mkdir(parents=True)
    images, _ = digits
    for i in range(GOOD):
        folder = root / NESTED if i % 3 == 0 else root
        if i % 2:
            (folder / f"digit-{i:02d}.png").write_bytes(png_bytes(images[i]))
        else:
            suffix = ".Jpg" if i == 4 else ".jpg"
            (folder / f"digit-{i:02d}{suffix}").write_bytes(png_bytes(255 - images[i], fmt="JPEG", quality=95))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this file was cut short")
    (root / "blank.png").write_bytes(png_bytes(np.full((28, 28), 255, np.uint8)))
    for name, size in OVERSIZED.items():
        with open(root / name, "wb") as f:
            f.truncate(size)
    (root / "notes.txt").write_text("not an image: ignored")
    return root


def batch(uri: str, *args: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serve.batch", *args],
        cwd=cwd,
        env=subprocess_env(uri),
        capture_output=True,
        text=True,
        timeout=600,
    )


def expected_label(digits, file_id: str) -> int:
    return int(digits[1][int(Path(file_id).stem.split("-")[1])])


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


def assert_same_rows(first: Path, second: Path) -> pd.DataFrame:
    """The two outputs hold the same rows (ids, labels, errors, probabilities); the first's rows."""
    a = pd.read_parquet(first).sort_values("id").reset_index(drop=True)
    b = pd.read_parquet(second).sort_values("id").reset_index(drop=True)
    assert a["id"].tolist() == b["id"].tolist()
    pd.testing.assert_series_equal(a["label"], b["label"], check_dtype=False)
    pd.testing.assert_series_equal(a["error"], b["error"], check_dtype=False)
    for p, q in zip(a["probabilities"], b["probabilities"], strict=True):
        if p is None:
            assert q is None
        else:
            np.testing.assert_allclose(p, q, atol=1e-9)
    assert set(b["model_version"]) == {"1"}
    return a


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
            result = batch(store_uri, *args, "--input", str(table), "--output", str(output))
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


def registered_model_copy(store_uri: str, folder: Path) -> Path:
    """A local copy of the registered model's version 1, for a test to alter."""
    import mlflow

    source = mlflow.MlflowClient(store_uri, store_uri).get_model_version_download_uri("mnist-cnn", "1")
    return Path(mlflow.artifacts.download_artifacts(source, dst_path=str(folder), tracking_uri=store_uri))


ENGINE_IDS = ["in-process", "worker-processes", "spark"]


def engines(spark_master: str) -> list[list[str]]:
    """The flags of each engine, in ``ENGINE_IDS`` order."""
    return [["--workers", "1"], ["--workers", "2"], ["--engine", "spark", "--master", spark_master]]


@pytest.fixture(scope="module")
def model_without_weights(store_uri, tmp_path_factory) -> Path:
    """The registered model with its weights file gone, as a half-copied artifact store leaves it."""
    path = registered_model_copy(store_uri, tmp_path_factory.mktemp("broken-model"))
    (path / "artifacts" / "weights.pt").unlink()
    return path


@pytest.fixture(scope="module")
def model_without_mlmodel(store_uri, tmp_path_factory) -> Path:
    """The registered model with its ``MLmodel`` file gone: not an MLflow model at all."""
    path = registered_model_copy(store_uri, tmp_path_factory.mktemp("no-mlmodel"))
    (path / "MLmodel").unlink()
    return path


@pytest.mark.parametrize("engine", engines("local[2]"), ids=ENGINE_IDS)
@pytest.mark.parametrize(("broken", "missing"), [("weights", "weights.pt"), ("mlmodel", "MLmodel")])
def test_a_model_that_cannot_load_stops_the_job_with_one_line(
    request, store_uri, photo_folder, tmp_path, engine, broken, missing
):
    model = request.getfixturevalue(f"model_without_{broken}")
    output = tmp_path / "scores.parquet"
    args = ["--model", str(model), "--input", str(photo_folder), "--output", str(output)]
    result = batch(store_uri, *args, *engine)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("mnist-batch:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert f"cannot load the model {model}" in lines[0] and missing in lines[0]
    assert "Traceback" not in result.stderr
    assert not output.exists() and not list(tmp_path.glob("*.partial"))


@pytest.fixture(scope="module")
def model_with_marked_code(store_uri, tmp_path_factory) -> Path:
    """The registered model whose shipped copy of ``serve/model/pyfunc.py`` answers every scored
    row with a confidence of 0.25: a version logged with code other than this checkout's."""
    path = registered_model_copy(store_uri, tmp_path_factory.mktemp("marked-model"))
    shipped = path / "code" / "serve" / "model" / "pyfunc.py"
    shipped.write_text(
        shipped.read_text()
        + textwrap.dedent(
            """

            _predict_as_logged = DigitClassifier.predict


            def _predict_marked(self, context, model_input, params=None):
                answer = _predict_as_logged(self, context, model_input, params)
                return answer.assign(confidence=answer["confidence"].where(answer["confidence"].isna(), 0.25))


            DigitClassifier.predict = _predict_marked
            """
        )
    )
    return path


@pytest.mark.parametrize("engine", engines("local[1]"), ids=ENGINE_IDS)
def test_every_engine_scores_with_the_models_shipped_code_not_this_checkouts(
    store_uri, photo_folder, model_with_marked_code, tmp_path, engine
):
    output = tmp_path / "scores"
    args = ["--model", str(model_with_marked_code), "--input", str(photo_folder), "--output", str(output)]
    result = batch(store_uri, *args, *engine)
    assert result.returncode == 0, result.stderr[-3000:]
    scored = pd.read_parquet(output).dropna(subset=["label"])
    assert len(scored) == GOOD
    assert set(scored["confidence"]) == {0.25}


@pytest.fixture(scope="module")
def model_from_another_environment(store_uri, tmp_path_factory) -> Path:
    """The registered model as if logged where torch 1.0.0 and Python 3.9.1 ran."""
    path = registered_model_copy(store_uri, tmp_path_factory.mktemp("other-environment"))
    requirements = path / "requirements.txt"
    pinned = [line for line in requirements.read_text().splitlines() if not line.startswith("torch==")]
    requirements.write_text("\n".join([*pinned, "torch==1.0.0"]) + "\n")
    mlmodel = path / "MLmodel"
    mlmodel.write_text(re.sub(r"python_version: \S+", "python_version: 3.9.1", mlmodel.read_text()))
    return path


@pytest.mark.parametrize("engine", engines("local[1]")[:2], ids=ENGINE_IDS[:2])
def test_a_job_warns_once_about_the_models_environment_and_scores(
    store_uri, photo_folder, model_from_another_environment, tmp_path, engine
):
    output = tmp_path / "scores.parquet"
    args = ["--model", str(model_from_another_environment), "--input", str(photo_folder), "--output", str(output)]
    # Chunks of 4 rows: both workers start, and each loads the model.
    result = batch(store_uri, *args, "--chunk_rows", "4", *engine)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("mismatches between the model's dependencies") == 1, result.stderr[-3000:]
    assert "torch (current: " in result.stderr and "required: torch==1.0.0" in result.stderr
    assert result.stderr.count("`Python 3.9.1`, differs from the version of Python") == 1, result.stderr[-3000:]
    assert pd.read_parquet(output)["error"].isna().sum() == GOOD


def test_a_job_stopped_by_sigterm_leaves_no_output_and_no_worker_behind(store_uri, digits, tmp_path):
    images, _ = digits
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3000):
        (folder / f"digit-{i:05d}.png").write_bytes(png_bytes(images[i % len(images)]))
    output = tmp_path / "scores.parquet"
    args = [sys.executable, "-m", "serve.batch", "--input", str(folder), "--output", str(output)]
    job = subprocess.Popen(
        [*args, "--workers", "2", "--chunk_rows", "8"],
        env=subprocess_env(store_uri),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(lambda: len(_processes_in_group(job.pid)) >= 4)  # the job, the forkserver, two workers
    time.sleep(1.0)  # scoring
    job.send_signal(signal.SIGTERM)  # to the job alone, as `kill` sends it
    assert job.wait(timeout=60) == 130
    assert "interrupted" in job.stderr.read()
    assert not output.exists() and not list(tmp_path.glob("*.partial"))
    wait_for(lambda: not _processes_in_group(job.pid), timeout=30)


def _processes_in_group(group: int) -> list[int]:
    """Live processes of a process group (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                found.append(int(entry.name))
    return found


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


@pytest.mark.parametrize(
    ("engine", "where", "message"),
    [
        ("--engine=pandas", "a-file", "is not a folder"),
        ("--engine=pandas", "/proc", "cannot write the output /proc/scores"),
        ("--engine=spark", "/proc", "cannot write the output /proc/scores"),
        ("--watch", "/proc", "cannot write the output /proc/scores"),
    ],
    ids=["pandas-under-a-file", "pandas-in-proc", "spark-in-proc", "watch-in-proc"],
)
def test_an_output_that_cannot_be_written_stops_the_job_with_one_line(
    store_uri, photo_folder, tmp_path, engine, where, message
):
    """Under a file, or in /proc: a place whose permission bits may say yes (to root) where
    writing fails. Found before any scoring, for every engine: nothing is left behind."""
    if where == "a-file":
        (tmp_path / where).write_text("a file")
    output = (tmp_path / where if where == "a-file" else Path(where)) / "scores"
    source = [engine, str(photo_folder)] if engine == "--watch" else [engine, "--input", str(photo_folder)]
    result = batch(store_uri, *source, "--output", str(output))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert (tmp_path / where).is_file() if where == "a-file" else not output.exists()


def test_the_mlproject_entry_point_scores_a_folder(store_uri, photo_folder, tmp_path):
    output = tmp_path / "scores.parquet"
    result = subprocess.run(
        [
            "mlflow",
            "run",
            str(PROJECT_ROOT),
            "-e",
            "batch_score",
            "--env-manager",
            "local",
            "-P",
            f"input={photo_folder}",
            "-P",
            f"output={output}",
        ],
        cwd=tmp_path,
        env=subprocess_env(store_uri),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_parquet(output)
    assert len(rows) == GOOD + BAD
    # The run `mlflow run` made holds what the job did: the version the alias resolved to, the
    # counts and the throughput, beside the entry point's own parameters.
    client = MlflowClient(tracking_uri=store_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, "tags.`mlflow.project.entryPoint` = 'batch_score'")
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "models:/mnist-cnn@champion"
    assert run.data.params["model_version"] == "1" and run.data.params["model_run_id"] == rows["run_id"][0]
    metrics = run.data.metrics
    assert (metrics["scored"], metrics["failed"]) == (GOOD, BAD)
    assert metrics["images_per_second"] > 0 and metrics["seconds"] >= metrics["startup_seconds"] > 0


def test_a_job_handed_a_run_the_store_does_not_know_warns_and_still_publishes(store_uri, photo_folder, tmp_path):
    """``MLFLOW_RUN_ID`` left over from another store, say: the scores are written and the exit
    status is 0; one warning names the run. A plain job (no such variable) creates no run."""
    output = tmp_path / "scores.parquet"
    client = MlflowClient(tracking_uri=store_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs_before = len(client.search_runs(experiments))
    result = subprocess.run(
        [sys.executable, "-m", "serve.batch", "--input", str(photo_folder), "--output", str(output)],
        cwd=PROJECT_ROOT,
        env=subprocess_env(store_uri, MLFLOW_RUN_ID="0123456789abcdef0123456789abcdef"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(pd.read_parquet(output)) == GOOD + BAD
    warnings = [line for line in result.stderr.splitlines() if "could not log" in line]
    assert len(warnings) == 1 and "0123456789abcdef0123456789abcdef" in warnings[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert batch(store_uri, "--input", str(photo_folder), "--output", str(tmp_path / "plain.parquet")).returncode == 0
    assert len(client.search_runs(experiments)) == runs_before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "/no/such/folder"], "input /no/such/folder does not exist"),
        (["--input", "README.md"], "expected a folder of images, an image file (.bmp, .gif"),
        (["--model", "models:/mnist-cnn@nobody"], "cannot resolve models:/mnist-cnn@nobody"),
        (["--model", "models:/no-such-model/1"], "cannot resolve models:/no-such-model/1"),
        (["--chunk_rows", "0"], "expected a whole number >= 1"),
        (["--engine", "spark", "--master", "nope://x"], "expected a Spark master URL (local, local[N]"),
        (["--output", ""], "argument --output: expected a path, got an empty one"),
        (["--master", "spark://host:7077"], "--master applies only to --engine spark"),
    ],
)
def test_bad_jobs_stop_with_one_line_and_write_nothing(store_uri, photo_folder, tmp_path, args, message):
    output = tmp_path / "scores.parquet"
    arguments = ["--input", str(photo_folder), "--output", str(output), *args]
    result = batch(store_uri, *arguments)
    assert result.returncode in (1, 2)
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not output.exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("engine", [[], ["--engine", "spark"]], ids=["pandas", "spark"])
def test_overwrite_never_deletes_the_input_or_a_users_folder(store_uri, photo_folder, tmp_path, engine):
    """--overwrite replaces a job's output; an output naming the input, the folder holding it, one
    of its images, or (Spark) a folder no job wrote is refused before anything is scored."""
    before = sorted(p.name for p in photo_folder.rglob("*"))
    mine = tmp_path / "my folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    outputs = {
        photo_folder: "would replace the input",
        photo_folder.parent: "would replace the input",
        photo_folder / "digit-01.png": "in the input folder under an image's name",
        mine: "no Spark job completed" if engine else "is a folder; this engine writes one file",
    }
    for output, message in outputs.items():
        result = batch(store_uri, *engine, "--input", str(photo_folder), "--output", str(output), "--overwrite")
        lines = [line for line in result.stderr.splitlines() if "error" in line]
        assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert sorted(p.name for p in photo_folder.rglob("*")) == before
    assert (photo_folder / "digit-01.png").read_bytes()[:4] == b"\x89PNG"
    assert (mine / "notes.txt").read_text() == "mine"


def test_an_existing_output_is_refused_unless_overwrite(store_uri, photo_folder, tmp_path):
    output = tmp_path / "scores.parquet"
    output.write_text("precious")
    result = batch(store_uri, "--input", str(photo_folder), "--output", str(output))
    assert result.returncode == 1 and "already exists; pass --overwrite" in result.stderr
    assert output.read_text() == "precious"
    assert batch(store_uri, "--input", str(photo_folder), "--output", str(output), "--overwrite").returncode == 0
    assert len(pd.read_parquet(output)) == GOOD + BAD


def test_a_job_where_nothing_can_be_scored_exits_non_zero_with_the_summary(store_uri, tmp_path):
    inbox = tmp_path / "bad"
    inbox.mkdir()
    (inbox / "a.png").write_bytes(b"nope")
    result = batch(store_uri, "--input", str(inbox), "--output", str(tmp_path / "out.parquet"))
    assert result.returncode == 1
    assert "scored 0, failed 1" in result.stdout
    assert "nothing could be scored" in result.stderr


def write_slowly(path: Path, data: bytes, pieces: int = 4, pause: float = 0.4) -> None:
    """A file still being written: appended in pieces, as a slow upload does."""
    with open(path, "wb") as f:
        for i in range(pieces):
            f.write(data[i * len(data) // pieces : (i + 1) * len(data) // pieces])
            f.flush()
            time.sleep(pause)


def scored_ids(folder: Path) -> list[str]:
    parts = sorted(folder.glob("part-*.parquet"))
    return [i for part in parts for i in pd.read_parquet(part)["id"]]


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_watch_mode_scores_each_arriving_file_once_across_a_restart(store_uri, digits, tmp_path):
    images, labels = digits
    inbox, output = tmp_path / "inbox", tmp_path / "scored"
    inbox.mkdir()
    args = [
        sys.executable,
        "-m",
        "serve.batch",
        "--watch",
        str(inbox),
        "--output",
        str(output),
        "--poll_seconds",
        "0.2",
        "--settle_seconds",
        "1.0",
    ]
    env = subprocess_env(store_uri)
    watcher = start_process(args, env, tmp_path / "watch-1.log")
    try:
        for i in range(5):
            (inbox / f"digit-{i:02d}.png").write_bytes(png_bytes(images[i]))
        write_slowly(inbox / "digit-05.png", png_bytes(images[5]))  # never read half-written
        (inbox / "digit-06.png.part").write_bytes(b"an upload in progress")
        wait_for(lambda: len(scored_ids(output)) >= 6)
    finally:
        assert stop_process(watcher) == 0, (tmp_path / "watch-1.log").read_text()[-2000:]
    first = scored_ids(output)
    assert sorted(first) == [f"digit-{i:02d}.png" for i in range(6)]

    # While it is down, more files arrive; the restart scores those and only those.
    for i in range(6, 10):
        (inbox / f"digit-{i:02d}.png").write_bytes(png_bytes(images[i]))
    (inbox / "digit-06.png.part").rename(inbox / "digit-10.png")
    (inbox / "digit-10.png").write_bytes(png_bytes(images[10]))
    watcher = start_process(args, env, tmp_path / "watch-2.log")
    try:
        wait_for(lambda: len(scored_ids(output)) >= 11)
        time.sleep(1.5)  # a further poll must not score anything again
    finally:
        assert stop_process(watcher) == 0
    ids = scored_ids(output)
    assert sorted(ids) == [f"digit-{i:02d}.png" for i in range(11)], "each file scored exactly once"
    rows = pd.concat(pd.read_parquet(p) for p in sorted(output.glob("part-*.parquet")))
    assert rows["error"].isna().all(), rows["error"].dropna().tolist()
    assert (rows["label"].to_numpy() == [labels[int(i[6:8])] for i in rows["id"]]).mean() >= 0.8
    assert not list(output.glob(".part-*"))


def test_watch_mode_stops_cleanly_on_sigint_and_resumes_without_loss(store_uri, digits, tmp_path):
    images, _ = digits
    inbox, output = tmp_path / "inbox", tmp_path / "scored"
    inbox.mkdir()
    args = [
        sys.executable,
        "-m",
        "serve.batch",
        "--watch",
        str(inbox),
        "--output",
        str(output),
        "--poll_seconds",
        "0.1",
        "--settle_seconds",
        "0.2",
        "--chunk_rows",
        "2",
    ]
    watcher = start_process(args, subprocess_env(store_uri), tmp_path / "watch-1.log")
    wait_for(lambda: "watching" in (tmp_path / "watch-1.log").read_text())
    # Files keep arriving while it works; SIGINT lands in the middle of the stream.
    for i in range(30):
        (inbox / f"digit-{i:02d}.png").write_bytes(png_bytes(images[i]))
        time.sleep(0.05)
        if i == 15:
            wait_for(lambda: len(scored_ids(output)) >= 2)
            log = (tmp_path / "watch-1.log").read_text
            assert stop_process(watcher, sig=signal.SIGINT) == 0, log()[-2000:]
    interrupted = scored_ids(output)
    assert 2 <= len(interrupted) < 30 and len(interrupted) == len(set(interrupted))
    assert not list(output.glob(".part-*"))
    watcher = start_process(args, subprocess_env(store_uri), tmp_path / "watch-2.log")
    wait_for(lambda: len(scored_ids(output)) >= 30)
    assert stop_process(watcher) == 0, (tmp_path / "watch-2.log").read_text()[-2000:]
    assert sorted(scored_ids(output)) == [f"digit-{i:02d}.png" for i in range(30)]


def test_watch_mode_stopped_while_starting_exits_cleanly(store_uri, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = start_process(
        [sys.executable, "-m", "serve.batch", "--watch", str(inbox), "--output", str(tmp_path / "scored")],
        subprocess_env(store_uri),
        tmp_path / "watch.log",
    )
    time.sleep(0.5)  # still importing
    assert stop_process(watcher) == 0, (tmp_path / "watch.log").read_text()[-2000:]


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
        from serve.batch import cli, spark_engine

        listed_by_spark = spark_engine.read_input

        def read_input_then_delete(spark, input_path):
            answer = listed_by_spark(spark, input_path)
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
