"""The model a job scores with: one that cannot load stops the job with one line, every engine
runs the code the model was logged with, and an environment mismatch is a warning given once."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.batch.helpers import ENGINE_IDS, GOOD, batch, engines, registered_model_copy


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
    (package,) = (path / "code").iterdir()
    shipped = package / "pyfunc.py"
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
