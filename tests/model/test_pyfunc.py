"""The pyfunc's contract in-process: inputs, outputs, errors, batching, self-containment."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from mnist_mlops.serve.loading import load_pyfunc
from mnist_mlops.train.export import model_package_files, package_name
from tests.helpers import png_bytes, subprocess_env


@pytest.fixture(scope="module")
def model(full_model):
    return full_model


def test_mixed_rows_are_answered_in_order(model, mnist_test):
    images, labels = mnist_test
    frame = pd.DataFrame(
        {
            "image": [base64.b64encode(png_bytes(images[0])).decode(), None, png_bytes(images[2])],
            "pixels": [None, images[1].ravel().tolist(), None],
        }
    )
    answer = model.predict(frame)
    assert answer["label"].tolist() == labels[:3].tolist()
    assert answer["label"].dtype == np.int64


def test_an_empty_table_gets_an_empty_answer(model):
    answer = model.predict(pd.DataFrame({"image": pd.Series([], dtype=object)}))
    assert len(answer) == 0


def test_one_bad_row_fails_the_call_naming_the_row_the_column_and_what_is_accepted(model, mnist_test):
    frame = pd.DataFrame({"image": [png_bytes(mnist_test[0][0]), b"garbage", png_bytes(mnist_test[0][1])]})
    with pytest.raises(MlflowException) as error:  # the model's own InvalidModelInput, as callers see it
        model.predict(frame)
    assert error.value.error_code == "INVALID_PARAMETER_VALUE"
    message = error.value.message
    assert (
        message.startswith("1 of 3 rows could not be scored: row 1, column 'image'")
        or "row 1: column 'image'" in message
    )
    assert "accepted formats: PNG, JPEG" in message


def test_per_row_errors_on_request_score_the_good_rows(model, mnist_test):
    images, labels = mnist_test
    frame = pd.DataFrame({"image": [png_bytes(images[0]), b"garbage", png_bytes(np.zeros((28, 28), np.uint8))]})
    answer = model.predict(frame, params={"on_error": "row"})
    assert answer["label"].tolist()[0] == labels[0]
    assert answer["label"][1] is None and "not a decodable image" in answer["error"][1]
    assert answer["error"][2].startswith("column 'image': no digit found")
    assert answer["error"][0] is None


def test_many_errors_are_summarised(model):
    with pytest.raises(MlflowException) as error:
        model.predict(pd.DataFrame({"image": [b"x"] * 9}))
    assert error.value.message.startswith("9 of 9 rows could not be scored")
    assert "(and 4 more rows)" in error.value.message


def test_an_unknown_on_error_param_is_refused(model, mnist_test):
    with pytest.raises(Exception, match="on_error"):
        model.predict(pd.DataFrame({"pixels": [mnist_test[0][0].ravel()]}), params={"on_error": "ignore"})


def test_a_large_batch_runs_through_the_network_in_vectorised_chunks(model, mnist_test):
    images, labels = mnist_test
    network = model.unwrap_python_model().network
    calls = []
    handle = network.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        answer = model.predict(pd.DataFrame({"pixels": list(images[:300].reshape(300, -1))}))
    finally:
        handle.remove()
    rows = model.unwrap_python_model().inference_batch  # ROWS_PER_THREAD per torch thread
    assert calls == [rows] * (300 // rows) + [300 % rows]
    assert (answer["label"].to_numpy() == labels[:300]).mean() > 0.98


def test_in_bfloat16_the_model_gives_the_float32_answers(full_model_path, model, mnist_test, monkeypatch):
    """``MNIST_TORCH_DTYPE=bfloat16``: the network computes in bfloat16 (about 2.5x the float32
    speed where the CPU has AMX, ``make bench``: pyfunc) and answers as in float32: same labels on
    1,000 test digits as PNG files, confidences within 0.02, the same refusals."""
    from mnist_mlops.serve.model import DTYPE_ENV

    monkeypatch.setenv(DTYPE_ENV, "bfloat16")
    reduced = mlflow.pyfunc.load_model(str(full_model_path))
    network = reduced.unwrap_python_model().network
    assert {p.dtype for p in network.parameters()} == {torch.bfloat16}
    images, _ = mnist_test
    frame = pd.DataFrame(
        {"image": [png_bytes(image) for image in images[:1000]] + [png_bytes(np.zeros((28, 28), dtype=np.uint8))]}
    )
    params = {"on_error": "row"}
    exact, reduced_answer = model.predict(frame, params=params), reduced.predict(frame, params=params)
    assert reduced_answer["label"].tolist() == exact["label"].tolist()
    assert (reduced_answer["error"].isna() == exact["error"].isna()).all()  # the blank image refused by both
    assert exact["error"].notna().sum() == 1
    difference = (reduced_answer["confidence"] - exact["confidence"]).abs().max()
    assert difference < 0.02


def test_an_unknown_number_type_stops_the_model_loading_with_the_accepted_ones(full_model_path, monkeypatch):
    from mnist_mlops.serve.model import DTYPE_ENV

    monkeypatch.setenv(DTYPE_ENV, "float16")
    with pytest.raises(Exception, match="expected one of float32, bfloat16, auto"):
        mlflow.pyfunc.load_model(str(full_model_path))


def test_the_logged_model_loads_where_the_project_cannot_be_imported(full_model_path, tmp_path, mnist_test):
    """Load and predict in a process where importing anything of this project fails."""
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"pixels": [mnist_test[0][0].ravel().tolist()]}))
    script = textwrap.dedent(
        f"""
        import importlib.abc, json, sys

        class RefuseTheProject(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("mnist_mlops", "tests"):
                    raise ModuleNotFoundError(f"blocked: {{name}}")
                return None

        sys.meta_path.insert(0, RefuseTheProject())
        import mlflow, pandas as pd
        model = mlflow.pyfunc.load_model({str(full_model_path)!r})
        python_model = model.unwrap_python_model()
        module = sys.modules[type(python_model).__module__]
        assert module.__file__.startswith({str(full_model_path)!r}), module.__file__
        answer = model.predict(pd.DataFrame(json.load(open({str(request)!r}))))
        print(json.dumps({{"label": int(answer["label"][0]), "module": type(python_model).__module__}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["label"] == int(mnist_test[1][0])
    assert answer["module"].startswith("mnist_model_") and answer["module"].endswith(".pyfunc")


def test_the_logged_requirements_pin_what_the_model_imports(full_model_path):
    requirements = (full_model_path / "requirements.txt").read_text().split()
    names = {line.split("==")[0].lower() for line in requirements}
    assert {"mlflow", "torch", "numpy", "pandas", "scipy", "pillow", "cloudpickle"} <= names
    assert all("==" in line for line in requirements)


def test_the_weights_load_without_unpickling_code(full_model_path):
    config = mlflow.models.Model.load(str(full_model_path / "MLmodel"))
    python_function = config.flavors["python_function"]
    assert "model_code_path" in python_function  # models from code: no pickled Python object


def test_the_model_package_ships_under_a_name_no_host_process_imports(full_model_path):
    (package,) = (full_model_path / "code").iterdir()
    assert package.name.startswith("mnist_model_")
    shipped = sorted(p.name for p in package.glob("*.py"))
    assert shipped == sorted(p.name for p in model_package_files())
    assert package.name == package_name(model_package_files())  # this checkout's code, by its content


def test_two_versions_with_different_code_each_run_their_own_in_one_process(full_model_path, tmp_path):
    """Any process (the registry's evaluation loads a candidate and a baseline) can hold versions
    logged with different code side by side: each keeps the code it was logged with, with no
    module eviction (the package name is the hash of its files)."""
    import mnist_mlops.serve.model.pyfunc as ours

    older = marked_copy(full_model_path, tmp_path / "older", 'SHIPPED_MARKER = "older code"')
    newer = marked_copy(full_model_path, tmp_path / "newer", 'SHIPPED_MARKER = "newer code"')

    models = [load_pyfunc(str(path)) for path in (older, newer, full_model_path)]

    markers = [type(m.unwrap_python_model()).load_context.__globals__.get("SHIPPED_MARKER") for m in models]
    assert markers == ["older code", "newer code", None]
    assert not hasattr(ours, "SHIPPED_MARKER")  # the host's own package is untouched
    frame = pd.DataFrame({"pixels": [np.zeros(784).tolist()]})
    assert all(len(m.predict(frame, params={"on_error": "row"})) == 1 for m in models)


def marked_copy(model_path: Path, destination: Path, marker: str) -> Path:
    """A copy of the model whose shipped ``pyfunc.py`` ends with ``marker``, shipped under the name
    its changed files hash to (as the export names it)."""
    shutil.copytree(model_path, destination)
    (package,) = (destination / "code").iterdir()
    (package / "pyfunc.py").write_text((package / "pyfunc.py").read_text() + f"\n{marker}\n")
    renamed = package.with_name(package_name(sorted(package.glob("*.py"))))
    package.rename(renamed)
    for entry in destination.rglob("*"):
        text = entry.read_text(errors="ignore") if entry.is_file() and entry.suffix in (".py", ".yaml", "") else ""
        if package.name in text:
            entry.write_text(text.replace(package.name, renamed.name))
    return destination


def test_an_answer_is_uncertain_below_the_requests_threshold(model, mnist_test):
    frame = pd.DataFrame({"pixels": [mnist_test[0][i].ravel() for i in range(20)]})
    default = model.predict(frame)
    assert default["uncertain"].dtype == bool
    assert (default["uncertain"] == (default["confidence"] < 0.8)).all()
    everyone = model.predict(frame, params={"uncertain_below": 1.0})
    assert everyone["uncertain"].all()
    nobody = model.predict(frame, params={"uncertain_below": 0.0})
    assert not nobody["uncertain"].any()


def test_the_28x28_image_the_network_saw_comes_back_on_request(model, mnist_test):
    image = mnist_test[0][0]
    answer = model.predict(pd.DataFrame({"image": [png_bytes(image)]}), params={"return_input": True})
    seen = np.array(answer["input"][0]).reshape(28, 28)
    assert seen.min() >= 0.0 and seen.max() <= 1.0
    np.testing.assert_allclose(seen, image / 255.0, atol=0.02)  # an MNIST digit comes through unchanged
    assert "input" not in model.predict(pd.DataFrame({"image": [png_bytes(image)]}))


@pytest.mark.parametrize(
    ("params", "message"),
    [({"uncertain_below": 1.5}, "from 0 to 1"), ({"on_error": "skip"}, "'raise' or 'row'")],
)
def test_a_bad_param_is_refused_naming_what_is_accepted(model, mnist_test, params, message):
    with pytest.raises(MlflowException, match=message):
        model.predict(pd.DataFrame({"pixels": [mnist_test[0][0].ravel()]}), params=params)


def test_a_photo_is_answered_by_its_most_confident_reading_which_comes_back_as_input(model, mnist_root):
    import torch

    from mnist_mlops.registry.evalsets.sets import TUNING_SEED, Sources, build
    from mnist_mlops.serve.model import photo
    from mnist_mlops.serve.model.decode import as_unit, decode_levels_many
    from mnist_mlops.serve.model.postprocess import probabilities_from_logits
    from mnist_mlops.serve.model.transforms import normalize

    classifier = model.unwrap_python_model()
    files = [sample.data for sample in build("faint", Sources.load(mnist_root), TUNING_SEED, 30)]
    answer = model.predict(pd.DataFrame({"image": files}), params={"on_error": "row", "return_input": True})
    disagreeing = 0
    for levels, (_, row) in zip(decode_levels_many(files), answer.iterrows(), strict=True):
        if row["error"] is not None:
            continue
        readings = np.stack(photo.fields(as_unit(levels)))
        with torch.inference_mode():
            logits = classifier.network(normalize(torch.from_numpy(readings).unsqueeze(1)))
        probabilities = probabilities_from_logits(logits, classifier.temperature)
        best = int(probabilities.max(axis=1).argmax())
        disagreeing += len(set(probabilities.argmax(axis=1))) > 1
        assert row["label"] == probabilities[best].argmax()
        np.testing.assert_allclose(row["probabilities"], probabilities[best], atol=1e-6)
        np.testing.assert_allclose(np.reshape(row["input"], (28, 28)), readings[best], atol=1e-4)
    assert disagreeing > 0  # readings that disagree: the choice among them was made
