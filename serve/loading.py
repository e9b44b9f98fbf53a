"""Loading a logged model in our own processes (batch jobs, backends), and its environment check.

A model runs the code it was logged with: its package ships in its ``code_paths`` under a name no
host process imports (``mnist_mlops.train.export``), so plain ``mlflow.pyfunc.load_model`` is all
it takes, in any process, for any number of versions side by side.
"""

from __future__ import annotations


def load_pyfunc(model_uri: str, check_environment: bool = True):
    """``mlflow.pyfunc.load_model`` of ``model_uri``.

    ``check_environment=False`` skips MLflow's warnings about the model's environment (its pip
    requirements against the installed packages, its Python version): for processes whose parent
    has given them once for all (``warn_about_environment``). The requirements check reads the
    metadata of every installed distribution, about half a second per process.
    """
    import mlflow

    return mlflow.pyfunc.load_model(model_uri, suppress_warnings=not check_environment)


def warn_about_environment(local_path: str) -> bool:
    """Log the warnings ``mlflow.pyfunc.load_model`` gives about the model at ``local_path``
    (a dependency it pins that is missing or at another version here, a Python version it was not
    logged with), without loading it. False, and nothing logged, when this MLflow lacks the
    functions that load_model calls for them, or the model cannot be read: each loader must then
    check for itself (and names what is wrong with the model when it fails to load it)."""
    try:
        from mlflow.models import Model
        from mlflow.pyfunc import (
            FLAVOR_NAME,
            PY_VERSION,
            _get_pip_requirements_from_model_path,
            _warn_potentially_incompatible_py_version_if_necessary,
        )
        from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches
    except ImportError:
        return False
    try:
        flavor = Model.load(local_path).flavors.get(FLAVOR_NAME) or {}
        requirements = _get_pip_requirements_from_model_path(local_path)
    except Exception:  # no MLmodel, an unreadable requirements file: the loader's error will say
        return False
    warn_dependency_requirement_mismatches(requirements)
    _warn_potentially_incompatible_py_version_if_necessary(model_py_version=flavor.get(PY_VERSION))
    return True
