"""The serving image of the Kubernetes path is MLflow's own (``mlflow models build-docker``). No
container runtime runs here, so the Dockerfile MLflow generates for a registered version of our
model (``generate-dockerfile``, no daemon needed) is checked for what the image would hold: the
model's Python, MLflow's pinned version, the model's own requirements (nothing of this project),
the model's code, and the serving example the pods' readiness probe posts."""

from __future__ import annotations

import re
import subprocess

import mlflow
import yaml

from tests.helpers import VENV_BIN, subprocess_env


def requirement_names(text: str) -> set[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return {re.split(r"[=<>~!; \[]", line, maxsplit=1)[0].lower() for line in lines}


def test_mlflows_dockerfile_for_our_model_builds_the_environment_we_expect(trained_store, tmp_path):
    out = tmp_path / "image"
    done = subprocess.run(
        [str(VENV_BIN / "mlflow"), "models", "generate-dockerfile", "-m", "models:/mnist-cnn/1", "-d", str(out)],
        env=subprocess_env(trained_store.uri),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dockerfile = (out / "Dockerfile").read_text()
    model = out / "model_dir"  # a registry URI's model is copied in as the folder itself
    flavor = yaml.safe_load((model / "MLmodel").read_text())["flavors"]["python_function"]
    assert f"FROM python:{flavor['python_version']}-slim" in dockerfile
    assert f"pip install mlflow=={mlflow.__version__}" in dockerfile
    assert "COPY model_dir /opt/ml/model" in dockerfile
    # The environment is the model's own requirements, installed into the image's Python.
    assert "_install_pyfunc_deps('/opt/ml/model', install_mlflow=False, env_manager='local')" in dockerfile
    assert "C._serve(" in dockerfile.splitlines()[-1]
    required = requirement_names((model / "requirements.txt").read_text())
    assert {"mlflow", "torch", "numpy", "pandas", "pillow"} <= required
    assert not any("mnist" in name for name in required), required  # the model needs nothing of ours
    assert "torchvision" not in required  # inference does not: only training uses it
    # The model's code travels inside it: the pipeline from photo to label.
    (package,) = (model / "code").iterdir()
    assert {"decode.py", "preprocess.py", "network.py", "pyfunc.py"} <= {p.name for p in package.iterdir()}
    assert flavor["code"] == "code" and (model / "entrypoint.py").is_file()
    assert (model / "artifacts" / "weights.pt").is_file()
    assert (model / "serving_input_example.json").is_file()  # what deploy/k8s's readiness probe posts
