"""The pyfunc's contract in-process: inputs, outputs, errors, batching, self-containment."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import textwrap

import mlflow
import numpy as np
import pandas as pd
import pytest

from serve.model.errors import InvalidModelInput
from tests.helpers import PROJECT_ROOT, png_bytes, subprocess_env


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
    with pytest.raises(InvalidModelInput) as error:
        model.predict(frame)
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
    with pytest.raises(InvalidModelInput) as error:
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


def test_the_logged_model_loads_where_the_project_cannot_be_imported(full_model_path, tmp_path, mnist_test):
    """Load and predict in a process whose imports of train/serve/registry from the checkout fail."""
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"pixels": [mnist_test[0][0].ravel().tolist()]}))
    script = textwrap.dedent(
        f"""
        import importlib.abc, json, os, sys
        ROOT = {str(PROJECT_ROOT)!r}
        PROJECT_PACKAGES = [os.path.join(ROOT, p) for p in ("train", "serve", "registry", "tests")]

        class RefuseTheProject(importlib.abc.MetaPathFinder):
            # Imports of train/serve/registry must come from the model's code_paths, never the checkout.
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("train", "serve", "registry", "tests"):
                    from importlib.machinery import PathFinder
                    search = path if path else [p for p in sys.path if p and p != {str(PROJECT_ROOT)!r}]
                    spec = PathFinder.find_spec(name, search)
                    if spec is None or any((spec.origin or "").startswith(p) for p in PROJECT_PACKAGES):
                        raise ModuleNotFoundError(f"blocked: {{name}} from the checkout")
                    return spec
                return None

        sys.meta_path.insert(0, RefuseTheProject())
        sys.path = [p for p in sys.path if p and p != {str(PROJECT_ROOT)!r}]
        import mlflow, pandas as pd
        model = mlflow.pyfunc.load_model({str(full_model_path)!r})
        import serve.model.pyfunc as shipped
        assert shipped.__file__.startswith({str(full_model_path)!r}), shipped.__file__
        answer = model.predict(pd.DataFrame(json.load(open({str(request)!r}))))
        print(json.dumps({{"label": int(answer["label"][0]), "module": shipped.__file__}}))
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


def test_the_logged_requirements_pin_what_the_model_imports(full_model_path):
    requirements = (full_model_path / "requirements.txt").read_text().split()
    names = {line.split("==")[0].lower() for line in requirements}
    assert {"mlflow", "torch", "numpy", "pandas", "scipy", "pillow", "cloudpickle"} <= names
    assert all("==" in line for line in requirements)


def test_the_weights_load_without_unpickling_code(full_model_path):
    config = mlflow.models.Model.load(str(full_model_path / "MLmodel"))
    python_function = config.flavors["python_function"]
    assert "model_code_path" in python_function  # models from code: no pickled Python object


def test_our_own_loaders_run_the_models_shipped_code_not_this_checkouts(full_model_path, tmp_path):
    """A version logged with older code must run that code, even in a process (every CLI of ours)
    that has imported this project's ``serve`` and ``train`` packages already."""
    import serve.model.pyfunc as ours
    from serve.model_loading import load_pyfunc

    copy = tmp_path / "model"
    shutil.copytree(full_model_path, copy)
    shipped = copy / "code" / "serve" / "model" / "pyfunc.py"
    shipped.write_text(shipped.read_text() + '\nSHIPPED_MARKER = "the model\'s own copy"\n')

    model = load_pyfunc(str(copy))

    python_model = model.unwrap_python_model()
    assert type(python_model).load_context.__globals__.get("SHIPPED_MARKER") == "the model's own copy"
    assert sys.modules["serve.model.pyfunc"] is ours  # the caller's modules are put back
    assert not hasattr(ours, "SHIPPED_MARKER")
    answer = model.predict(pd.DataFrame({"pixels": [np.zeros(784).tolist()]}), params={"on_error": "row"})
    assert len(answer) == 1
